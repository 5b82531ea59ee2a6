"""Keysight B2200A/B2201A switch-matrix emulator: the SCPI subset the unmodified QCoDeS
``KeysightB2201`` driver sends, served on a loopback socket, wired to a ``MockBench``.

Wiring (``wiring`` mapping)::

    {"ports":  {"smu.smua": 1, "smu.smub": 2},   # bench terminal -> matrix input port (its HI)
     "ground": [12],                             # input ports tied to ground (the SMUs' LO)
     "rows":   [1, 2, ...],                      # matrix output line of array row i
     "cols":   [17, 18, ...]}                    # matrix output line of array column j

The emulator keeps the relays the instrument has been told to close (input port ->
output line) and installs a router on the bench: a terminal reaches, on its HI, every
array line whose output is closed to the terminal's port; every array line closed to a
ground port is held at 0 V (LO) whenever any terminal is on; a line closed to no wired
port floats. Bias mode (``:BIAS``) and ground mode (``:AGND``) connect every enabled
output that no other input uses to the bias / ground input port, as on the instrument
(the bias-port V/2 scheme works through them).

Faults: ``stuck_closed(port, line)`` / ``stuck_open(port, line)`` weld or break one relay
(it ignores open/close commands; the instrument still *reports* the commanded state,
as a real one does: only an electrical check finds a stuck relay); ``release(port, line)``
heals it; ``faults`` is the server's ``FaultInjector``. With a ``probe`` (an object with a
``contact_ok`` attribute, e.g. ``VeloxEmulator``), nothing is routed while the needles do
not touch the pads: every terminal reads an open circuit.

SCPI served: the common commands of ``memhil.mock_hw.scpi`` (``*IDN?``, ``*RST``,
``*CLS``, ``*ESR?``, ``*STB?``, ``*OPC?``, ...), ``:SYST:ERR?``,
``*TST?`` (0: passed), each with or without the manual's ``:ROUTe`` prefix:
``:CLOS <list>``, ``:OPEN <list>``, ``:OPEN:CARD <c|ALL>``, ``:CLOS:CARD? <c>``,
``:CLOS? <list>`` (1/0 per channel), ``:CONN:RULE[?]``, ``:CONN:SEQ[?]``,
``:BIAS[?]``, ``:BIAS:PORT[?]``, ``:BIAS:CHAN:ENAB|DIS <list>`` / ``:CARD <c>``, the
same under ``:AGND``, ``:AGND:UNUSED[?]``, ``:COUP[?]``, ``:COUP:PORT[?]``,
``:COUP:PORT:DET``. Channel lists are ``(@cIIOO,...)`` with card digit ``c`` (0 = the
auto-configured card, 1..4 accepted), input ``II`` 01..14 and output ``OO`` 01..48;
``cIIOO:cIIOO`` ranges close the rectangle of inputs x outputs. Errors go to the error
queue (``-113,"Undefined header"``, ``-100,"Command error"``, ``-222,"Data out of range"``) and set the standard
event status register bits (32 command error, 16 execution error) read by ``*ESR?``,
which the driver's status poll turns into a warning.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from memhil.mock_hw.bench import Line, MockBench
from memhil.mock_hw.scpi import CommonCommands, ScpiError, ScpiStatus, is_common
from memhil.mock_hw.server import LineServer, ServedEmulator

log = logging.getLogger(__name__)

N_INPUTS = 14
N_OUTPUTS = 48
_CHANNEL = re.compile(r"^(\d)(\d{2})(\d{2})$")

#: Errors the matrix keeps in its queue (the oldest is dropped beyond).
ERROR_QUEUE_SIZE = 30


def _command_error(what: str = "Command error") -> ScpiError:
    return ScpiError(-100, what)


def _range_error(what: str = "Data out of range") -> ScpiError:
    return ScpiError(-222, what)


class B220xEmulator(ServedEmulator):
    """A B2201A-like 14 x 48 relay matrix between bench terminals and array lines."""

    idn = "Agilent Technologies,B2201A,MY00000001,A.01.10"

    def __init__(
        self,
        bench: MockBench,
        wiring: Mapping[str, Any],
        name: str = "matrix",
        *,
        probe: Any | None = None,
    ):
        self.bench = bench
        self.name = name
        self.probe = probe
        self.ports: dict[str, int] = {str(k): int(v) for k, v in wiring.get("ports", {}).items()}
        self.ground_ports: set[int] = {int(p) for p in wiring.get("ground", ())}
        rows = [int(x) for x in wiring.get("rows", ())]
        cols = [int(x) for x in wiring.get("cols", ())]
        for p in [*self.ports.values(), *self.ground_ports]:
            if not 1 <= p <= N_INPUTS:
                raise ValueError(f"input port {p} is not 1..{N_INPUTS}")
        if len(set(self.ports.values()) & self.ground_ports):
            raise ValueError("a port cannot be both a terminal's HI and ground")
        lines = rows + cols
        if len(set(lines)) != len(lines) or any(not 1 <= x <= N_OUTPUTS for x in lines):
            raise ValueError(f"array lines must be distinct outputs 1..{N_OUTPUTS}, got {lines}")
        chip = bench.chip
        if len(rows) > chip.rows or len(cols) > chip.cols:
            raise ValueError(
                f"wiring has {len(rows)} rows / {len(cols)} cols, the chip "
                f"{chip.rows} x {chip.cols}"
            )
        self._line_of_output: dict[int, Line] = {o: ("row", i) for i, o in enumerate(rows)}
        self._line_of_output.update({o: ("col", j) for j, o in enumerate(cols)})
        self.lock = threading.RLock()
        self._stuck_closed: set[tuple[int, int]] = set()
        self._stuck_open: set[tuple[int, int]] = set()
        self._reset_state()
        self.status = ScpiStatus(ERROR_QUEUE_SIZE)  # :SYST:ERR? and *ESR?
        self.common = CommonCommands(self.idn, reset=self._reset_state, status=self.status)
        self.server: LineServer | None = None
        bench.set_router(self.route)

    # -- instrument state ---------------------------------------------------------------
    def _reset_state(self) -> None:
        """*RST state: all relays open, free rule, break-before-make, modes off."""
        self.closed: set[tuple[int, int]] = set()
        self.rule = "FREE"
        self.sequence = "BBM"
        self.bias_port, self.bias_mode = 10, False
        self.gnd_port, self.gnd_mode = 12, False
        self.bias_enabled: set[int] = set(range(1, N_OUTPUTS + 1))
        self.gnd_enabled: set[int] = set(range(1, N_OUTPUTS + 1))
        self.unused_inputs: list[int] = []
        self.couple_ports: list[int] = []
        self.couple_mode = False

    # -- faults -------------------------------------------------------------------------
    def stuck_closed(self, port: int, line: int) -> None:
        """Weld relay (port, line) shut: it conducts whatever the instrument is told."""
        with self.lock:
            self._stuck_open.discard((port, line))
            self._stuck_closed.add((port, line))

    def stuck_open(self, port: int, line: int) -> None:
        """Break relay (port, line): it never conducts."""
        with self.lock:
            self._stuck_closed.discard((port, line))
            self._stuck_open.add((port, line))

    def release(self, port: int, line: int) -> None:
        with self.lock:
            self._stuck_closed.discard((port, line))
            self._stuck_open.discard((port, line))

    @property
    def faults(self):
        if self.server is None:
            raise RuntimeError("start() the emulator before arming server faults")
        return self.server.faults

    # -- physics ------------------------------------------------------------------------
    def physical_connections(self) -> set[tuple[int, int]]:
        """The relays that conduct now: the commanded ones, bias/ground-mode connections
        of unused outputs, then stuck relays."""
        with self.lock:
            conn = set(self.closed)
            used = {o for _, o in conn}
            for mode, port, enabled in (
                (self.bias_mode, self.bias_port, self.bias_enabled),
                (self.gnd_mode, self.gnd_port, self.gnd_enabled),
            ):
                if mode and port > 0:
                    auto = {o for o in enabled if o not in used}
                    conn |= {(port, o) for o in auto}
                    used |= auto
            return (conn - self._stuck_open) | self._stuck_closed

    def route(self, key: str) -> tuple[list[Line], list[Line]]:
        """The bench router: (HI lines, LO lines) terminal ``key`` reaches."""
        if self.probe is not None and not self.probe.contact_ok:
            return [], []
        port = self.ports.get(key)
        hi: list[Line] = []
        lo: list[Line] = []
        for p, o in sorted(self.physical_connections()):
            line = self._line_of_output.get(o)
            if line is None:
                continue
            if port is not None and p == port:
                hi.append(line)
            elif p in self.ground_ports:
                lo.append(line)
        return hi, lo

    # -- SCPI ---------------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        reply: str | None = None
        for cmd in (c.strip() for c in line.split(";")):
            if not cmd:
                continue
            try:
                with self.lock:
                    reply = self._dispatch(cmd)
            except ScpiError as e:
                log.info("%s: %r -> %d,%r", self.name, cmd, e.code, e.message)
                with self.lock:
                    self.status.push_error(e)
        return reply

    def _dispatch(self, cmd: str) -> str | None:
        head, _, arg = cmd.partition(" ")
        head = head.upper()
        arg = arg.strip()
        if is_common(head):
            return self.common(head, [arg] if arg else [])
        if not head.startswith(":"):
            head = ":" + head
        head = _long_to_short(head)
        if head == ":SYST:ERR?":
            return self._next_error()
        if head == ":CLOS":
            self._close(self._channels(arg))
            return None
        if head == ":OPEN":
            for ch in self._channels(arg):
                self.closed.discard(ch)
            return None
        if head == ":CLOS?":
            return ",".join("1" if ch in self.closed else "0" for ch in self._channels(arg))
        if head == ":OPEN:CARD":
            self._card(arg)
            self.closed.clear()
            return None
        if head == ":CLOS:CARD?":
            self._card(arg)
            chans = sorted(self.closed)
            return "(@" + ",".join(f"0{i:02d}{o:02d}" for i, o in chans) + ")"
        if head in (":CONN:RULE", ":CONN:SEQ"):
            value = self._card_value(arg).upper()
            if head == ":CONN:RULE":
                if value not in ("FREE", "SROU"):
                    raise _range_error("Illegal parameter value")
                self.rule = value
            else:
                if value not in ("NSEQ", "BBM", "MBBR", "MBB"):
                    raise _range_error("Illegal parameter value")
                self.sequence = "MBBR" if value == "MBB" else value
            return None
        if head == ":CONN:RULE?":
            self._card(arg)
            return self.rule
        if head == ":CONN:SEQ?":
            self._card(arg)
            return self.sequence
        for prefix, attr in ((":BIAS", "bias"), (":AGND", "gnd")):
            r = self._mode_commands(head, arg, prefix, attr)
            if r is not _NOT_MINE:
                return r
        if head == ":AGND:UNUSED":
            self.unused_inputs = self._port_list(self._card_value(arg))
            return None
        if head == ":AGND:UNUSED?":
            self._card(arg)
            return "'" + ",".join(str(p) for p in self.unused_inputs) + "'"
        if head == ":COUP":
            self.couple_mode = self._bool(self._card_value(arg))
            return None
        if head == ":COUP?":
            self._card(arg)
            return "1" if self.couple_mode else "0"
        if head == ":COUP:PORT":
            ports = self._port_list(self._card_value(arg))
            if any(p not in (1, 3, 5, 7, 9, 11, 13) for p in ports):
                raise _range_error("Illegal parameter value")
            self.couple_ports = ports
            return None
        if head == ":COUP:PORT?":
            self._card(arg)
            return "'" + ",".join(str(p) for p in self.couple_ports) + "'"
        if head == ":COUP:PORT:DET":
            return None
        raise ScpiError(-113, "Undefined header")

    def _mode_commands(self, head: str, arg: str, prefix: str, attr: str) -> Any:
        if head == prefix:
            setattr(self, f"{attr}_mode", self._bool(self._card_value(arg)))
            return None
        if head == prefix + "?":
            self._card(arg)
            return "1" if getattr(self, f"{attr}_mode") else "0"
        if head == prefix + ":PORT":
            port = int(_number(self._card_value(arg)))
            if port != -1 and not 1 <= port <= N_INPUTS:
                raise _range_error()
            setattr(self, f"{attr}_port", port)
            return None
        if head == prefix + ":PORT?":
            self._card(arg)
            return str(getattr(self, f"{attr}_port"))
        enabled: set[int] = getattr(self, f"{attr}_enabled")
        if head in (prefix + ":CHAN:ENAB", prefix + ":CHAN:DIS"):
            outs = {o for _, o in self._channels(arg)}
            if head.endswith("ENAB"):
                enabled |= outs
            else:
                enabled -= outs
            return None
        if head in (prefix + ":CHAN:ENAB:CARD", prefix + ":CHAN:DIS:CARD"):
            self._card(arg)
            if head.endswith("ENAB:CARD"):
                enabled |= set(range(1, N_OUTPUTS + 1))
            else:
                enabled.clear()
            return None
        if head in (prefix + ":CHAN:ENAB?", prefix + ":CHAN:DIS?"):
            want = head.endswith("ENAB?")
            return ",".join("1" if (o in enabled) == want else "0" for _, o in self._channels(arg))
        return _NOT_MINE

    def _close(self, chans: list[tuple[int, int]]) -> None:
        for i, _o in chans:
            for mode, port in ((self.bias_mode, self.bias_port), (self.gnd_mode, self.gnd_port)):
                if mode and i == port:
                    raise _range_error("Bias/GND port cannot be connected in this mode")
        if self.rule == "SROU":
            ins = [i for i, _ in chans]
            outs = [o for _, o in chans]
            if len(set(ins)) != len(ins) or len(set(outs)) != len(outs):
                raise _range_error("Single route: one output per input")
            self.closed = {(i, o) for i, o in self.closed if i not in ins and o not in outs}
        self.closed |= set(chans)

    def _next_error(self) -> str:
        error = self.status.pop()
        if error is None:
            return '+0,"No error"'
        return f'{error[0]},"{error[1]}"'

    # -- parsing --------------------------------------------------------------------------
    @staticmethod
    def _card(arg: str) -> int:
        """A card number 0..4; ``ALL`` (every card: the one card here) is 0."""
        if arg.strip().upper() == "ALL":
            return 0
        try:
            card = int(arg.strip())
        except ValueError:
            raise _command_error("Missing or invalid card number") from None
        if not 0 <= card <= 4:
            raise _range_error("Card number out of range")
        return card

    def _card_value(self, arg: str) -> str:
        card, sep, value = arg.partition(",")
        if not sep:
            raise _command_error("Missing parameter")
        self._card(card)
        return value.strip()

    @staticmethod
    def _bool(value: str) -> bool:
        v = value.strip().upper()
        if v in ("1", "ON"):
            return True
        if v in ("0", "OFF"):
            return False
        raise _range_error("Illegal parameter value")

    @staticmethod
    def _port_list(value: str) -> list[int]:
        body = value.strip().strip("'\"").strip()
        if not body:
            return []
        try:
            ports = [int(x) for x in body.split(",") if x.strip()]
        except ValueError:
            raise _range_error("Illegal parameter value") from None
        if any(not 1 <= p <= N_INPUTS for p in ports):
            raise _range_error()
        return ports

    @staticmethod
    def _channels(arg: str) -> list[tuple[int, int]]:
        """``(@cIIOO,cIIOO:cIIOO,...)`` -> [(input, output), ...]."""
        m = re.fullmatch(r"\(@([0-9,:\s]*)\)", arg.strip())
        if not m:
            raise _command_error("Invalid channel list")
        out: list[tuple[int, int]] = []
        for item in (x.strip() for x in m.group(1).split(",")):
            if not item:
                continue
            ends = [_parse_channel(x.strip()) for x in item.split(":")]
            if len(ends) == 1:
                out.append(ends[0])
            elif len(ends) == 2:
                (i0, o0), (i1, o1) = ends
                out.extend(
                    (i, o)
                    for i in range(min(i0, i1), max(i0, i1) + 1)
                    for o in range(min(o0, o1), max(o0, o1) + 1)
                )
            else:
                raise _command_error("Invalid channel range")
        return out


_NOT_MINE = object()

_LONG = {
    "CLOSE": "CLOS",
    "ROUTE": "",
    "ROUT": "",
    "CONNECTION": "CONN",
    "SEQUENCE": "SEQ",
    "SYSTEM": "SYST",
    "ERROR": "ERR",
    "CHANNEL": "CHAN",
    "ENABLE": "ENAB",
    "DISABLE": "DIS",
    "COUPLE": "COUP",
    "DETECTION": "DET",
}


def _long_to_short(head: str) -> str:
    q = head.endswith("?")
    parts = [p for p in head.rstrip("?").split(":") if p]
    parts = [_LONG.get(p, p) for p in parts]
    return ":" + ":".join(p for p in parts if p) + ("?" if q else "")


def _number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise _range_error("Illegal parameter value") from None


def _parse_channel(s: str) -> tuple[int, int]:
    m = _CHANNEL.match(s)
    if not m:
        raise _command_error("Invalid channel")
    card, i, o = (int(g) for g in m.groups())
    if not 0 <= card <= 4 or not 1 <= i <= N_INPUTS or not 1 <= o <= N_OUTPUTS:
        raise _range_error("Channel out of range")
    return i, o
