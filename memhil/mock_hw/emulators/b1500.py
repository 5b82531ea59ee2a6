"""Keysight B1500A (FLEX) emulator over the mock lab's chip: the commands the unmodified
QCoDeS ``KeysightB1500`` driver and memhil's B1500 adapter send, answered from device
physics (Keysight B1500A Programming Guide, edition 2019, ch. 4 "Command Reference").

FLEX replies end in CR LF (the driver's ``\\r\\n`` terminator); every write of the QCoDeS
driver is followed by ``ERRX?``, answered ``+0,"No Error."`` or the oldest queued error.
Channel numbers are slot numbers (one channel per SMU module); the mainframe holds the
modules of ``modules`` (default: B1517A HRSMU in slots 1-2, B1511B MPSMU in slot 3).

Commands served::

    *IDN? *RST *CLS *OPC? UNT? [0]          identity, reset, module list
    ERRX? [mode]  ERR?                      error queue (oldest first)
    CN [ch,...]  CL [ch,...]  DZ [ch,...]   output relay on (0 V) / off / 0 V
    *LRN? 0                                 output switches: "CN1,2" or "CL"
    DV ch,rng,v[,icomp[,pol[,irng]]]        force voltage with current compliance
    DI ch,rng,i[,vcomp[,pol[,vrng]]]        force current with voltage compliance
    TV ch[,rng]  TI ch[,rng]                high-speed spot: "NAI+1.234567E-06"
    AAD ch,type  AIT type,mode[,n]  AV n[,mode]  AZ 0|1  FL 0|1[,ch...]  CMM ch,mode
    RI ch,rng  RV ch,rng  FMT f[,m]  TSR [ch]  WT ...  WM ...   accepted (timing, ADC)
    MM mode,ch[,...]                        1 spot, 2 staircase sweep, 3 pulsed spot,
                                            4 pulsed sweep (the first channel measures)
    WV ch,mode,rng,start,stop,n[,icomp]     staircase sweep source (linear, mode 1)
    PT hold,width[,period]                  SMU pulse timing (s)
    PV ch,rng,base,pulse[,icomp]            pulsed spot source
    PWV ch,mode,rng,base,start,stop,n[,icomp]  pulsed sweep source
    XE                                      run the MM measurement: comma-separated
                                            "<status><chan><type><value>" points

The SMU pulse floors of the B1517A/B1511B are enforced (Programming Guide, "PT"; B1500A
data sheet, "SMU pulse"): width 500 us to 2 s, period 5 ms to 5 s and at least
width + 2 ms (width <= 100 ms) or width + 10 ms; out of range -> error 150 queued, no
output. Readings hold the drive for the integration time (the high-resolution ADC in
NPLC mode: ``n / 50 Hz``; the high-speed ADC: 1 ms) on the virtual clock; compliance is
the shared SMU physics (``memhil.mock_hw.smu_physics``) and is reported by status ``C``.
A staircase sweep holds each step for the integration time; ``XE`` of a pulsed sweep
returns one point per pulse. After a sweep the output stays at the last step (post
condition "stop"); after a pulse at the base level.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from memhil.mock_hw.bench import MockBench, SourceTerminal
from memhil.mock_hw.scpi import CommonCommands, ScpiError, ScpiStatus
from memhil.mock_hw.server import ServedEmulator
from memhil.mock_hw.smu_physics import CONDITION_CURRENT_LIMIT, CONDITION_VOLTAGE_LIMIT, settle

log = logging.getLogger(__name__)

#: SMU pulse timing of the B1517A/B1511B (B1500A data sheet, "SMU pulse setting").
PULSE_WIDTH_MIN_S = 500e-6
PULSE_WIDTH_MAX_S = 2.0
PULSE_PERIOD_MIN_S = 5e-3
PULSE_PERIOD_MAX_S = 5.0

LINE_FREQUENCY_HZ = 50.0
HIGH_SPEED_ADC_S = 1e-3  # an emulator convention for the high-speed ADC's reading time

NO_ERROR = '+0,"No Error."'
ERR_UNDEFINED = 100  # undefined GPIB command
ERR_PARAMETER = 150  # command parameter not valid / out of range
ERR_NOT_ENABLED = 120  # channel not enabled / not installed

_MODULES_DEFAULT = ("B1517A", "B1517A", "B1511B")


@dataclass
class _Channel:
    """One SMU channel's source, measure and pulse settings."""

    terminal: SourceTerminal
    model: str
    enabled: bool = False
    voltage_mode: bool = True
    level: float = 0.0
    compliance: float = 100e-6
    high_resolution_adc: bool = False
    # pulse source (PV / PWV)
    base: float = 0.0
    pulse: float = 0.0
    pulse_compliance: float | None = None
    pulse_count: int = 1
    sweep: tuple[float, float, int] | None = None  # WV start, stop, points
    sweep_compliance: float | None = None


class B1500Emulator(ServedEmulator):
    """A B1500A mainframe whose SMU channels are terminals ``{name}.smu<k>`` on ``bench``
    (k counts the SMU modules from 1, as the QCoDeS driver names them)."""

    def __init__(
        self,
        bench: MockBench,
        name: str = "b1500",
        *,
        modules: tuple[str, ...] = _MODULES_DEFAULT,
        idn: str = "Keysight Technologies,B1500A,MOCK0001,A.06.03.2019.0930",
    ):
        if not 1 <= len(modules) <= 10:
            raise ValueError(f"a B1500A has 1..10 slots, got {len(modules)} modules")
        self.bench = bench
        self.name = name
        self.modules = tuple(modules)
        self.lock = threading.RLock()
        self.status = ScpiStatus()
        self.common = CommonCommands(idn, reset=self.reset, status=self.status)
        self.channels: dict[int, _Channel] = {
            slot: _Channel(bench.terminal(f"{name}.smu{slot}"), model)
            for slot, model in enumerate(self.modules, start=1)
        }
        self.nplc = 1
        self.mode: tuple[int, list[int]] = (1, [])
        self.pulse_timing = (0.0, PULSE_WIDTH_MIN_S, PULSE_PERIOD_MIN_S)  # hold, width, period
        self.transcript: list[str] = []

    # -- life cycle ---------------------------------------------------------------------
    def reset(self) -> None:
        """``*RST``: every channel off at 0 V, default settings."""
        with self.lock:
            for ch in self.channels.values():
                ch.enabled, ch.level, ch.voltage_mode = False, 0.0, True
                ch.sweep = None
                self._apply(ch)
            self.nplc, self.mode = 1, (1, [])

    def commands(self) -> list[str]:
        """What the clients sent, oldest first (for wire-level tests)."""
        return list(self.transcript)

    # -- wire ---------------------------------------------------------------------------
    def handle(self, line: str) -> bytes | None:
        """Answer one line (several commands separated by ';'); replies end in CR LF."""
        replies = []
        with self.lock:
            for command in line.split(";"):
                command = command.strip()
                if not command:
                    continue
                self.transcript.append(command)
                del self.transcript[:-10_000]
                try:
                    reply = self._dispatch(command)
                except ScpiError as err:
                    log.info("%s: %s -> error %d %s", self.name, command, err.code, err.message)
                    self.status.push_error(err)
                    continue
                if reply is not None:
                    replies.append(reply)
        return (";".join(replies) + "\r\n").encode() if replies else None

    def _dispatch(self, command: str) -> str | None:
        head, _, rest = command.partition(" ")
        head = head.upper()
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        if head == "*LRN?":
            return self._cmd_LRN_q(args)
        if head.startswith("*"):
            return self.common(head, args)
        handler = getattr(self, "_cmd_" + head.replace("?", "_q"), None)
        if handler is None:
            raise ScpiError(ERR_UNDEFINED, f"Undefined GPIB command {head}")
        return handler(args)

    # -- argument helpers -----------------------------------------------------------------
    def _channel(self, arg: str) -> _Channel:
        try:
            ch = self.channels[int(arg)]
        except (ValueError, KeyError):
            raise ScpiError(ERR_NOT_ENABLED, f"Channel {arg} not installed") from None
        return ch

    def _channels(self, args: list[str]) -> list[_Channel]:
        return [self._channel(a) for a in args] if args else list(self.channels.values())

    @staticmethod
    def _float(args: list[str], k: int, default: float | None = None) -> float:
        if k >= len(args) or args[k] == "":
            if default is None:
                raise ScpiError(ERR_PARAMETER, f"Missing parameter {k + 1}")
            return default
        try:
            return float(args[k])
        except ValueError:
            raise ScpiError(ERR_PARAMETER, f"Invalid parameter {args[k]!r}") from None

    def _integration_s(self, ch: _Channel) -> float:
        return self.nplc / LINE_FREQUENCY_HZ if ch.high_resolution_adc else HIGH_SPEED_ADC_S

    # -- physics --------------------------------------------------------------------------
    def _apply(self, ch: _Channel, level: float | None = None, limit: float | None = None):
        """Settle ``ch`` at ``level`` (default: its DC level) and return (V, I, condition)."""
        return settle(
            self.bench,
            ch.terminal,
            output_on=ch.enabled,
            voltage_mode=ch.voltage_mode,
            level=ch.level if level is None else level,
            limit=ch.compliance if limit is None else limit,
        )

    def _read(self, ch: _Channel, duration_s: float, level=None, limit=None):
        """Hold ``ch`` at ``level`` for ``duration_s`` and return the operating point at the
        end (re-solved before and after, so the held drive is the compliant one)."""
        with self.bench.lock:
            self._apply(ch, level, limit)
            self.bench.hold(duration_s)
            return self._apply(ch, level, limit)

    @staticmethod
    def _point(slot: int, voltage_mode: bool, v: float, i: float, cond: int) -> str:
        """One FMT 1 data point of the measured quantity: status, channel letter, type."""
        limited = cond & (CONDITION_CURRENT_LIMIT | CONDITION_VOLTAGE_LIMIT)
        status = "C" if limited else "N"
        letter = chr(ord("A") + slot - 1)
        kind, value = ("I", i) if voltage_mode else ("V", v)
        return f"{status}{letter}{kind}{value:+.6E}"

    # -- commands -------------------------------------------------------------------------
    def _cmd_UNT_q(self, args: list[str]) -> str:
        slots = [f"{m},0" for m in self.modules] + ["0,0"] * (10 - len(self.modules))
        return ";".join(slots)

    def _cmd_ERRX_q(self, args: list[str]) -> str:
        err = self.status.pop()
        return NO_ERROR if err is None else f'+{err[0]},"{err[1]}"'

    def _cmd_ERR_q(self, args: list[str]) -> str:
        codes = [self.status.pop() for _ in range(4)]
        return ",".join(str(c[0]) if c else "0" for c in codes)

    def _cmd_CN(self, args: list[str]) -> None:
        for ch in self._channels(args):
            ch.enabled, ch.level, ch.voltage_mode = True, 0.0, True
            self._apply(ch)

    def _cmd_CL(self, args: list[str]) -> None:
        for ch in self._channels(args):
            ch.enabled, ch.level = False, 0.0
            self._apply(ch)

    def _cmd_DZ(self, args: list[str]) -> None:
        for ch in self._channels(args):
            ch.level = 0.0
            self._apply(ch)

    def _cmd_LRN_q(self, args: list[str]) -> str:
        # *LRN? 0: the output switch state; other types are not emulated
        if args and args[0] != "0":
            raise ScpiError(ERR_PARAMETER, f"*LRN? type {args[0]} not emulated")
        on = [str(s) for s, ch in self.channels.items() if ch.enabled]
        return "CN" + ",".join(on) if on else "CL"

    def _force(self, args: list[str], voltage_mode: bool) -> None:
        ch = self._channel(args[0] if args else "")
        level = self._float(args, 2)
        limit = self._float(args, 3, ch.compliance if ch.voltage_mode == voltage_mode else None)
        if not ch.enabled:
            raise ScpiError(ERR_NOT_ENABLED, f"Channel {args[0]} output switch is off")
        ch.voltage_mode, ch.level, ch.compliance = voltage_mode, level, abs(limit)
        self._apply(ch)

    def _cmd_DV(self, args: list[str]) -> None:
        self._force(args, True)

    def _cmd_DI(self, args: list[str]) -> None:
        self._force(args, False)

    def _spot(self, args: list[str], want_voltage: bool) -> str:
        ch = self._channel(args[0] if args else "")
        slot = int(args[0])
        v, i, cond = self._read(ch, self._integration_s(ch))
        limited = cond & (CONDITION_CURRENT_LIMIT | CONDITION_VOLTAGE_LIMIT)
        letter = chr(ord("A") + slot - 1)
        kind, value = ("V", v) if want_voltage else ("I", i)
        return f"{'C' if limited else 'N'}{letter}{kind}{value:+.6E}"

    def _cmd_TV(self, args: list[str]) -> str:
        return self._spot(args, True)

    def _cmd_TI(self, args: list[str]) -> str:
        return self._spot(args, False)

    def _cmd_AAD(self, args: list[str]) -> None:
        ch = self._channel(args[0] if args else "")
        ch.high_resolution_adc = self._float(args, 1, 0.0) == 1

    def _cmd_AIT(self, args: list[str]) -> None:
        adc, mode = int(self._float(args, 0)), int(self._float(args, 1))
        n = int(self._float(args, 2, 1.0))
        if adc == 1 and mode == 2:  # high-resolution ADC, NPLC mode
            if not 1 <= n <= 100:
                raise ScpiError(ERR_PARAMETER, f"AIT: NPLC {n} outside 1..100")
            self.nplc = n

    def _accepted(self, args: list[str]) -> None:
        """A setting the emulator accepts without modelling it (ranges, filters, timing)."""

    _cmd_AV = _cmd_AZ = _cmd_FL = _cmd_CMM = _cmd_RI = _cmd_RV = _accepted
    _cmd_FMT = _cmd_TSR = _cmd_WT = _cmd_WM = _accepted

    def _cmd_MM(self, args: list[str]) -> None:
        mode = int(self._float(args, 0))
        if mode not in (1, 2, 3, 4):
            raise ScpiError(ERR_PARAMETER, f"MM mode {mode} not emulated (1, 2, 3, 4)")
        chans = [int(a) for a in args[1:]]
        for c in chans:
            self._channel(str(c))
        self.mode = (mode, chans)

    def _cmd_WV(self, args: list[str]) -> None:
        ch = self._channel(args[0] if args else "")
        if int(self._float(args, 1)) != 1:
            raise ScpiError(ERR_PARAMETER, "WV: only linear single sweeps (mode 1) emulated")
        start, stop, n = self._float(args, 3), self._float(args, 4), int(self._float(args, 5))
        if not 1 <= n <= 10001:
            raise ScpiError(ERR_PARAMETER, f"WV: {n} steps outside 1..10001")
        ch.sweep = (start, stop, n)
        ch.sweep_compliance = abs(self._float(args, 6, ch.compliance))

    def _cmd_PT(self, args: list[str]) -> None:
        hold, width = self._float(args, 0), self._float(args, 1)
        period = self._float(args, 2, 0.0)
        if not PULSE_WIDTH_MIN_S <= width <= PULSE_WIDTH_MAX_S:
            raise ScpiError(
                ERR_PARAMETER,
                f"PT: pulse width {width:g} s outside {PULSE_WIDTH_MIN_S:g}..{PULSE_WIDTH_MAX_S:g}",
            )
        floor = max(PULSE_PERIOD_MIN_S, width + (2e-3 if width <= 0.1 else 10e-3))
        if period == 0.0:  # 0: automatic period, the shortest allowed
            period = floor
        if not floor <= period <= PULSE_PERIOD_MAX_S:
            raise ScpiError(ERR_PARAMETER, f"PT: pulse period {period:g} s outside {floor:g}..5 s")
        self.pulse_timing = (hold, width, period)

    def _pulse_source(self, ch: _Channel, args: list[str], base_at: int) -> None:
        if not ch.enabled:
            raise ScpiError(ERR_NOT_ENABLED, f"Channel {args[0]} output switch is off")
        ch.base = self._float(args, base_at)
        comp_at = base_at + (2 if base_at == 2 else 4)
        ch.pulse_compliance = abs(self._float(args, comp_at, ch.compliance))

    def _cmd_PV(self, args: list[str]) -> None:
        ch = self._channel(args[0] if args else "")
        ch.pulse, ch.pulse_count = self._float(args, 3), 1
        self._pulse_source(ch, args, 2)

    def _cmd_PWV(self, args: list[str]) -> None:
        ch = self._channel(args[0] if args else "")
        start, stop, n = self._float(args, 4), self._float(args, 5), int(self._float(args, 6))
        if start != stop:
            raise ScpiError(ERR_PARAMETER, "PWV: only constant-amplitude trains emulated")
        if not 1 <= n <= 10001:
            raise ScpiError(ERR_PARAMETER, f"PWV: {n} steps outside 1..10001")
        ch.pulse, ch.pulse_count = start, n
        self._pulse_source(ch, args, 3)

    def _cmd_XE(self, args: list[str]) -> str | None:
        mode, chans = self.mode
        if not chans:
            raise ScpiError(ERR_PARAMETER, "XE: no measurement channel (MM)")
        slot = chans[0]
        ch = self.channels[slot]
        points: list[str] = []
        if mode == 1:
            v, i, cond = self._read(ch, self._integration_s(ch))
            points.append(self._point(slot, ch.voltage_mode, v, i, cond))
        elif mode == 2:
            if ch.sweep is None:
                raise ScpiError(ERR_PARAMETER, "XE: no staircase sweep source (WV)")
            start, stop, n = ch.sweep
            ch.voltage_mode = True
            ch.compliance = ch.sweep_compliance or ch.compliance
            for k in range(n):
                level = start + (stop - start) * k / max(n - 1, 1)
                ch.level = level
                v, i, cond = self._read(ch, self._integration_s(ch))
                # FMT 1 sweep data: the measured current, then the sourced voltage
                points.append(self._point(slot, True, v, i, cond))
                points.append(f"N{chr(ord('A') + slot - 1)}V{level:+.6E}")
        else:
            hold, width, period = self.pulse_timing
            comp = ch.pulse_compliance or ch.compliance
            ch.voltage_mode = True
            ch.level = ch.base
            with self.bench.lock:
                if hold > 0:
                    self._read(ch, hold)
                for _ in range(ch.pulse_count):
                    v, i, cond = self._read(ch, width, level=ch.pulse, limit=comp)
                    points.append(self._point(slot, True, v, i, cond))
                    self._read(ch, period - width)
        return ",".join(points)


__all__ = ["B1500Emulator", "PULSE_PERIOD_MIN_S", "PULSE_WIDTH_MIN_S"]
