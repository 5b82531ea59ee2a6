"""Keithley 2450 (SCPI) emulator over the mock lab's chip: the subset the QCoDeS driver
(``qcodes.instrument_drivers.Keithley.Keithley2450``) sends, answered from device physics.

Served by ``LineServer(emu.handle, terminator="\\n")``. Headers are matched in long or
short form and in any case (``:SOURce:SWEep:voltage:LINear`` = ``:SOUR:SWE:VOLT:LIN``);
several commands on a line are separated by ``;``. An unknown header or a bad parameter
is queued as a SCPI error (``:SYSTem:ERRor?``) and gets no reply, as on the instrument.

Implemented SCPI subset:

* common (``memhil.mock_hw.scpi``): ``*IDN?``, ``*LANG?`` (SCPI), ``*LANG``, ``*RST``,
  ``*CLS``, ``*ESR?``, ``*STB?``, ``*OPC?``, ``*OPC``, ``*WAI``, ``*TRG``; ``:ABORt``,
  ``:STATus:CLEar``, ``:SYSTem:CLEar``, ``:SYSTem:ERRor[:NEXT]?``, ``:SYSTem:LFRequency?``
* ``:SOUR:FUNC VOLT|CURR`` / ``?``; ``:SOUR:<f>[:LEV] <v>`` / ``?``; ``:SOUR:VOLT:ILIM``,
  ``:SOUR:CURR:VLIM`` (``?``, ``:TRIPped?``); ``:SOUR:<f>:RANGe[:AUTO]``, ``:DELay[:AUTO]``,
  ``:DELay:USERn``, ``:READ:BACK``
* ``:SOUR:SWE:<f>:LIN start,stop,points,delay,count,rangeType,failAbort,dual,'buffer'``
  then ``:INITiate`` (the sweep runs at once on the virtual clock) and ``*WAI``
* ``:SENS:FUNC "CURR:DC"|"VOLT:DC"|"RES"`` / ``?``; ``:SENS:<f>:NPLCycles``, ``:RANGe``,
  ``:RANGe:AUTO``, ``:RSENse``, ``:AZERo``, ``:AZERo:ONCE``, ``:DELay:USERn``;
  ``:SENS:COUNt``
* ``:OUTPut[:STATe] 0|1|ON|OFF`` / ``?``; ``:ROUTe:TERMinals FRONt|REAR`` / ``?``
* ``:MEASure[:<f>]? ['buffer']``, ``:READ? ['buffer']``, ``:FETCh? ['buffer'[, elements]]``
* ``:TRACe:MAKE``, ``:DELete``, ``:CLEar``, ``:POINts`` / ``?``, ``:ACTual?``, ``:TRIGger``,
  ``:DATA? start, end[, 'buffer'[, elements]]`` with elements READing, SOURce, RELative,
  SEConds, FRACtional, STATus, SOURSTATus, UNIT, SOURUNIT, TSTamp, DATE, TIME,
  FORMatted, SOURFORMatted; ``:TRACe:DATA?`` without a range (every reading),
  ``:TRACe:STATistics:AVERage?|MAXimum?|MINimum?|STDDev?|PK2Pk? ['buffer']``,
  ``:TRACe:FEED[:CONTrol]`` (the 2400's buffer feed, as PyMeasure sends it: accepted
  without effect, an assumption)
* ``:READ?``/``:MEASure? 'buffer', <elements>`` (the requested elements of the reading)
* ``:TRIGger:LOAD "SimpleLoop", count[, delay[, 'buffer']]`` / ``"Empty"`` then ``:INIT``
* ``*TST?``, ``*ESE``, ``*SRE`` (``memhil.mock_hw.scpi``), ``:STATus:PRESet``,
  ``:STATus:MEASurement|OPERation|QUEStionable:ENABle``, ``:SYSTem:ERRor:COUNt?``,
  ``:SYSTem:BEEPer``, ``:FORMat:DATA ASCii`` (binary formats are refused, not emulated),
  ``:OUTPut:<f>:SMODe HIMP|NORM|ZERO|GUAR``, ``:SENS:<f>:AVERage[:STATe]|:TCONtrol|:COUNt``
  (stored; readings are single samples); ``*LANG`` takes effect at ``power_cycle()``;
  ``*RST`` restores the default buffers' capacity.

Ranges (``memhil.mock_hw.smu_ranges.K2450``): range requests snap to the 2450's ranges; a
level beyond a fixed source range is refused with -222 (our assumption of the error
number); a reading beyond a fixed measure range is 9.9e37; current readings carry the
noise floor; with ``accuracy`` every reading is off by its range's datasheet accuracy
(``memhil.mock_hw.smu_accuracy``).

Physics and compliance are those of the 2600 emulator (``memhil.mock_hw.smu_physics``):
each reading holds the drive for the source delay and then for the integration time
``NPLC / line frequency`` on the virtual clock, the source is lowered to stay within its
limit, the reading is clamped at the limit and ``:TRIPped?`` reports it. A reading taken
in compliance carries ``SOURCE_STATUS_LIMIT`` in its SOURSTATus element (an emulator
convention: check the bit against the 2450 reference manual before relying on it on a
bench). A dual sweep runs start -> stop and back (2 x points readings,
the stop level measured twice); ``failAbort ON`` ends the sweep at the first reading in
compliance. After a sweep the output stays on at the last sweep level.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.scpi import CommonCommands, ScpiError, ScpiStatus
from memhil.mock_hw.server import TRANSCRIPT_LINES
from memhil.mock_hw.smu_accuracy import K2450_ACCURACY, ReadingErrors
from memhil.mock_hw.smu_physics import integrate, settle
from memhil.mock_hw.smu_ranges import K2450

log = logging.getLogger(__name__)

#: Event type of an error in the 2450's event log and ``:SYST:ERR?`` reply (2450 reference
#: manual, ``:SYSTem:EVENtlog`` event types: 1 error, 2 warning, 4 information).
EVENT_ERROR = 1


def _event_time(t: float) -> str:
    """The 2450's event time stamp, ``YYYY/MM/DD HH:MM:SS.mmm`` (UTC here)."""
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(t))
    return f"{stamp}.{int((t % 1) * 1000):03d}"


#: SOURSTATus bit of a reading whose source was limited (emulator convention, see above).
SOURCE_STATUS_LIMIT = 0x08

_LONG_FORMS = (
    "SOURce",
    "SENSe",
    "VOLTage",
    "CURRent",
    "RESistance",
    "FUNCtion",
    "RANGe",
    "AUTO",
    "ILIMit",
    "VLIMit",
    "TRIPped",
    "LEVel",
    "IMMediate",
    "AMPLitude",
    "DELay",
    "USER",
    "READ",
    "BACK",
    "SWEep",
    "LINear",
    "OUTPut",
    "STATe",
    "ROUTe",
    "TERMinals",
    "SYSTem",
    "LFRequency",
    "TRACe",
    "DATA",
    "POINts",
    "ACTual",
    "CLEar",
    "MAKE",
    "DELete",
    "TRIGger",
    "MEASure",
    "FETCh",
    "INITiate",
    "ABORt",
    "NPLCycles",
    "RSENse",
    "AZERo",
    "ONCE",
    "COUNt",
    "STATus",
    "ERRor",
    "NEXT",
    "FRONt",
    "REAR",
    "LIMit",
    "STATistics",
    "AVERage",
    "MAXimum",
    "MINimum",
    "STDDev",
    "PK2Pk",
    "PRESet",
    "ENABle",
    "MEASurement",
    "OPERation",
    "QUEStionable",
    "FORMat",
    "FEED",
    "CONTrol",
    "LOAD",
    "SMODe",
    "TCONtrol",
    "BEEPer",
    "COUNt",
)
_SHORT = {long.upper(): "".join(c for c in long if c.isupper()) for long in _LONG_FORMS}
_SHORTS = set(_SHORT.values())

_ELEMENT_LONG = {
    "READING": "READ",
    "SOURCE": "SOUR",
    "RELATIVE": "REL",
    "SECONDS": "SEC",
    "FRACTIONAL": "FRAC",
    "STATUS": "STAT",
    "SOURSTATUS": "SOURSTAT",
    "TSTAMP": "TST",
    "FORMATTED": "FORM",
    "SOURFORMATTED": "SOURFORM",
}


def _short(node: str) -> str:
    """A header node in short form: ``SOURce``/``sour``/``SOURCE`` -> ``SOUR``."""
    up = node.upper()
    m = re.fullmatch(r"([A-Z]+?)(\d*)", up)
    base, suffix = (m.group(1), m.group(2)) if m else (up, "")
    if base in _SHORT:
        return _SHORT[base] + suffix
    if base in _SHORTS:
        return base + suffix
    for long, short in _SHORT.items():
        if base.startswith(short) and long.startswith(base):
            return short + suffix
    return up


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out, cur, quote = [], [], None
    for c in text:
        if quote:
            cur.append(c)
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def _num(s: str) -> float:
    t = s.strip().upper()
    if t in ("ON",):
        return 1.0
    if t in ("OFF",):
        return 0.0
    try:
        return float(t)
    except ValueError:
        raise ScpiError(-104, f"Data type error: {s!r} is not a number") from None


def _fmt(x: float) -> str:
    return f"{x:.7E}"


@dataclass
class _Reading:
    reading: float
    source: float
    t: float
    status: int
    source_status: int
    unit: str
    source_unit: str


@dataclass
class _Buffer:
    size: int = 100000
    style: str = "STAN"
    readings: list[_Reading] = field(default_factory=list)

    def append(self, r: _Reading) -> None:
        if len(self.readings) >= self.size:
            self.readings.pop(0)  # fill mode CONTinuous
        self.readings.append(r)


@dataclass
class _Settings:
    source_func: str = "VOLT"  # VOLT | CURR
    sense_func: str = "CURR:DC"  # CURR:DC | VOLT:DC | RES
    level: dict = field(default_factory=lambda: {"VOLT": 0.0, "CURR": 0.0})
    limit: dict = field(default_factory=lambda: {"VOLT": 1.05e-4, "CURR": 2.1})  # ILIM, VLIM
    src_range: dict = field(default_factory=lambda: {"VOLT": 0.02, "CURR": 1e-8})
    src_autorange: dict = field(default_factory=lambda: {"VOLT": 1, "CURR": 1})
    src_delay: dict = field(default_factory=lambda: {"VOLT": 0.0, "CURR": 0.0})
    src_autodelay: dict = field(default_factory=lambda: {"VOLT": 1, "CURR": 1})
    src_user_delay: dict = field(default_factory=dict)
    readback: dict = field(default_factory=lambda: {"VOLT": 1, "CURR": 1})
    nplc: dict = field(default_factory=lambda: {"CURR": 1.0, "VOLT": 1.0, "RES": 1.0})
    sens_range: dict = field(default_factory=lambda: {"CURR": 1e-4, "VOLT": 0.02, "RES": 2e5})
    sens_autorange: dict = field(default_factory=lambda: {"CURR": 1, "VOLT": 1, "RES": 1})
    rsense: dict = field(default_factory=lambda: {"CURR": 0, "VOLT": 0, "RES": 0})
    azero: dict = field(default_factory=lambda: {"CURR": 1, "VOLT": 1, "RES": 1})
    sens_user_delay: dict = field(default_factory=dict)
    count: int = 1
    output: int = 0
    off_mode: dict = field(default_factory=lambda: {"VOLT": "NORM", "CURR": "NORM"})
    # :SENS:<f>:AVERage filter: [state, type, count] (stored; readings are single samples)
    average: dict = field(
        default_factory=lambda: {f: [0, "REP", 10] for f in ("CURR", "VOLT", "RES")}
    )
    terminals: str | None = "FRON"  # None after a refused ROUT:TERM


class Keithley2450Emulator:
    """A Keithley 2450 SMU (SCPI mode) on a mock bench; terminal key ``"<name>.smu"``."""

    def __init__(
        self,
        bench: MockBench,
        name: str = "smu2450",
        *,
        linefreq: float = 60.0,
        language: str = "SCPI",
        serial: str = "04424242",
        seed: int = 0,
        accuracy: bool = False,
    ):
        self.bench = bench
        self.name = name
        self.key = f"{name}.smu"
        # the unit's reading errors (datasheet accuracy per range; exact without accuracy)
        self.reading_errors = ReadingErrors(K2450_ACCURACY, self.key, seed, accuracy)
        self.terminal = bench.terminal(self.key)
        self.clock = bench.chip.clock
        self.linefreq = float(linefreq)
        self.language = language
        self.pending_language: str | None = None  # *LANG, active after power_cycle()
        self.serial = serial
        self._lock = threading.RLock()
        self._noise = np.random.default_rng(zlib.crc32(name.encode()))  # reproducible
        self.status = ScpiStatus()  # :SYSTem:ERRor? and *ESR?
        self.common = CommonCommands(
            f"KEITHLEY INSTRUMENTS,MODEL 2450,{serial},1.7.12b",
            reset=self.reset,
            status=self.status,
            extra={
                "*LANG?": lambda args: self.language,
                "*LANG": self._set_language,
            },
        )
        #: :STATus:<reg>:ENABle registers, stored and read back (no service request is raised)
        self.registers: dict[str, int] = {"MEAS": 0, "OPER": 0, "QUES": 0}
        self.transcript: deque[str] = deque(maxlen=TRANSCRIPT_LINES)  # the last lines
        self.s = _Settings()
        self.buffers: dict[str, _Buffer] = {"defbuffer1": _Buffer(), "defbuffer2": _Buffer()}
        self.sweep: dict[str, Any] | None = None
        self.tripped = False
        self._t0 = self.clock.now()

    # -- wire -------------------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        with self._lock:
            self.transcript.append(line)
            replies = []
            for cmd in _split_outside_quotes(line.strip(), ";"):
                cmd = cmd.strip()
                if not cmd:
                    continue
                try:
                    r = self._command(cmd)
                except ScpiError as exc:
                    log.warning("%s: %s (%d) in %r", self.name, exc, exc.code, cmd)
                    self.status.push_error(exc)
                    continue
                except (ValueError, ArithmeticError, IndexError, RuntimeError) as exc:
                    log.warning("%s: execution error %s in %r", self.name, exc, cmd)
                    self.status.push(-200, f"Execution error: {exc}")
                    continue
                if r is not None:
                    replies.append(r)
            return ";".join(replies) if replies else None

    def _command(self, cmd: str) -> str | None:
        head, _, rest = cmd.partition(" ")
        query = head.endswith("?")
        head = head.rstrip("?")
        args = [a.strip() for a in _split_outside_quotes(rest, ",")] if rest.strip() else []
        if head.lstrip(":").startswith("*"):  # ":*CLS" (PyMeasure's reset) is *CLS
            return self.common(head.lstrip(":") + ("?" if query else ""), args)
        if self.language != "SCPI":
            raise ScpiError(-113, f"Undefined header {cmd!r} (instrument is in {self.language})")
        nodes = [_short(n) for n in head.lstrip(":").split(":") if n]
        # optional nodes
        nodes = [n for n in nodes if n not in ("LEV", "IMM", "AMPL")]
        key = ":".join(nodes)
        return self._dispatch(nodes, key, query, args, cmd)

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue, oldest first: (code, message)."""
        return self.status.errors

    def _set_register(self, name: str, args: Sequence[str]) -> None:
        value = int(_num(args[0])) if args else -1
        if not 0 <= value <= 65535:
            raise ScpiError(-222, f"Data out of range: {args[0] if args else ''}")
        self.registers[name] = value

    def _set_language(self, args: Sequence[str]) -> None:
        """``*LANG SCPI|TSP|SCPI2400``: the command set after the next power cycle (2450
        manual, ``*LANG``: the change takes effect when the instrument restarts);
        ``*LANG?`` reports the active one until then."""
        lang = _unquote(args[0]).upper() if args else ""
        if lang not in ("SCPI", "TSP", "SCPI2400"):
            raise ScpiError(-224, f"Illegal parameter value {args[0] if args else ''!r}")
        self.pending_language = lang

    def power_cycle(self) -> None:
        """Switch the instrument off and on: the ``*LANG`` chosen since takes effect, and
        every setting, buffer and output is at its power-on state."""
        with self._lock:
            self.language = self.pending_language or self.language
            self.pending_language = None
            self.reset()
            self.status.clear()

    # -- dispatch ---------------------------------------------------------------------------
    def _dispatch(self, n: list[str], key: str, q: bool, args: list[str], cmd: str) -> str | None:
        s = self.s
        if key in ("ABOR", "STAT:CLE", "SYST:CLE"):
            if key == "SYST:CLE":
                self.status.errors.clear()
            return None
        if key in ("SYST:ERR", "SYST:ERR:NEXT") and q:
            error = self.status.pop_with_time()
            if error is None:
                return '0,"No error;0;0 0"'
            code, msg, when = error
            return f'{code},"{msg};{EVENT_ERROR};{_event_time(when)}"'
        if key == "SYST:LFR" and q:
            return f"{self.linefreq:g}"
        if key == "SYST:ERR:COUN" and q:
            return str(len(self.status.errors))
        if key == "SYST:BEEP" and not q:
            return None
        if key == "STAT:PRES" and not q:  # enable registers to their preset (0)
            for reg in ("MEAS", "OPER", "QUES"):
                self.registers[reg] = 0
            return None
        if len(n) == 3 and n[0] == "STAT" and n[2] == "ENAB" and n[1] in ("MEAS", "OPER", "QUES"):
            if q:
                return str(self.registers[n[1]])
            self._set_register(n[1], args)
            return None
        if key == "FORM:DATA" or key == "FORM":
            if q:
                return "ASC"
            if _short(_unquote(args[0])) not in ("ASC", "ASCII"):  # binary: not emulated
                raise ScpiError(-224, f"Illegal parameter value {args[0]} (the mock sends ASCII)")
            return None
        if key == "TRIG:LOAD" and not q:
            self._trigger_load(args)
            return None
        if len(n) == 3 and n[0] == "OUTP" and n[1] in ("VOLT", "CURR") and n[2] == "SMOD":
            if q:
                return s.off_mode[n[1]]
            mode = _short(_unquote(args[0]))
            mode = {"HIMPEDANCE": "HIMP", "NORMAL": "NORM", "GUARD": "GUAR"}.get(mode, mode)
            if mode not in ("HIMP", "NORM", "ZERO", "GUAR"):
                raise ScpiError(-224, f"Illegal parameter value {args[0]!r}")
            s.off_mode[n[1]] = mode
            return None
        if key in ("OUTP", "OUTP:STAT"):
            if q:
                return str(s.output)
            s.output = 1 if _num(args[0]) else 0
            self._settle()
            return None
        if key == "ROUT:TERM":
            if q:
                return s.terminals
            t = args[0].upper()
            s.terminals = "FRON" if t.startswith("FRON") else "REAR" if t == "REAR" else None
            if s.terminals is None:
                raise ScpiError(-224, f"Illegal parameter value {args[0]!r}")
            return None
        if n and n[0] == "SOUR":
            return self._source(n[1:], q, args, cmd)
        if n and n[0] == "SENS":
            return self._sense(n[1:], q, args, cmd)
        if n and n[0] in ("MEAS", "READ"):
            if not q:
                raise ScpiError(-113, f"Undefined header {cmd!r}")
            if len(n) > 1:  # :MEASure:CURRent? selects the function first
                s.sense_func = {"CURR": "CURR:DC", "VOLT": "VOLT:DC", "RES": "RES"}[n[1]]
            buf = self._buffer(args[0] if args else "'defbuffer1'")
            last = None
            for _ in range(max(1, s.count)):
                last = self._measure_into(buf)
            assert last is not None  # the loop runs at least once
            if len(args) > 1:  # :READ? "buffer", <elements>: those elements of the reading
                return self._elements(last, buf, args[1:])
            return _fmt(last.reading)
        if n and n[0] == "FETC" and q:
            buf = self._buffer(args[0] if args else "'defbuffer1'")
            if not buf.readings:
                raise ScpiError(-230, "Data corrupt or stale: buffer is empty")
            elements = args[1:] or ["READ"]
            return self._elements(buf.readings[-1], buf, elements)
        if key == "INIT":
            if self.sweep is not None and self.sweep.get("kind") == "simple":
                self._run_simple_loop()
            else:
                self._run_sweep()
            return None
        if n and n[0] == "TRAC":
            return self._trace(n[1:], q, args, cmd)
        raise ScpiError(-113, f"Undefined header {cmd!r}")

    def _source(self, n: list[str], q: bool, args: list[str], cmd: str) -> str | None:
        s = self.s
        if n == ["FUNC"]:
            if q:
                return s.source_func
            f = _short(_unquote(args[0]))
            if f not in ("VOLT", "CURR"):
                raise ScpiError(-224, f"Illegal parameter value {args[0]!r}")
            s.source_func = f
            self._settle()
            return None
        if n and n[0] == "SWE":
            if len(n) == 3 and n[2] == "LIN" and n[1] in ("VOLT", "CURR") and not q:
                if len(args) < 3:
                    raise ScpiError(-109, "Missing parameter")
                vals = args + [None] * (9 - len(args))
                self.sweep = {
                    "func": n[1],
                    "start": _num(args[0]),
                    "stop": _num(args[1]),
                    "points": int(_num(args[2])),
                    "delay": -1.0 if vals[3] is None else _num(vals[3]),
                    "count": 1 if vals[4] is None else int(_num(vals[4])),
                    "range": (vals[5] or "BEST").upper(),
                    "fail_abort": (vals[6] or "OFF").upper() in ("ON", "1"),
                    "dual": (vals[7] or "OFF").upper() in ("ON", "1"),
                    "buffer": _unquote(vals[8] or "defbuffer1"),
                }
                if self.sweep["points"] < 2:
                    raise ScpiError(-222, "Data out of range: a sweep needs >= 2 points")
                self._buffer(self.sweep["buffer"])
                return None
            raise ScpiError(-113, f"Undefined header {cmd!r}")
        if not n or n[0] not in ("VOLT", "CURR"):
            raise ScpiError(-113, f"Undefined header {cmd!r}")
        f, rest = n[0], n[1:]
        lim_name = "ILIM" if f == "VOLT" else "VLIM"
        ranges = K2450.source_v if f == "VOLT" else K2450.source_i
        if not rest:
            if q:
                return _fmt(s.level[f])
            x = _num(args[0])
            vmax = 210.0 if f == "VOLT" else 1.05
            if abs(x) > vmax:
                raise ScpiError(-222, f"Data out of range: {x:g}")
            # a fixed source range refuses a level beyond its full scale (2450 manual:
            # ranges have 105 % over-range); -222 is our assumption of its error number
            if not s.src_autorange[f] and not K2450.source_fits(s.src_range[f], x):
                raise ScpiError(
                    -222, f"Data out of range: {x:g} beyond the {s.src_range[f]:g} range"
                )
            s.level[f] = x
            self._settle()
            return None
        if rest == [lim_name]:
            if q:
                return _fmt(s.limit[f])
            x = _num(args[0])
            lo = K2450.limit_i_min if f == "VOLT" else K2450.limit_v_min
            if not (lo <= x <= (1.05 if f == "VOLT" else 210.0)):
                raise ScpiError(-222, f"Data out of range: {x:g}")
            s.limit[f] = x
            self._settle()
            return None
        if rest == [lim_name, "TRIP"] and q:
            self._settle()
            return "1" if (self.tripped and s.source_func == f) else "0"
        if rest == ["RANG"]:
            if q:
                if s.src_autorange[f]:  # the level chooses the range
                    return _fmt(K2450.snap(ranges, s.level[f]) or ranges[-1])
                return _fmt(s.src_range[f])
            r = K2450.snap(ranges, _num(args[0]))
            if r is None:
                raise ScpiError(-222, f"Data out of range: {args[0]}")
            s.src_range[f], s.src_autorange[f] = r, 0
            return None
        if rest == ["RANG", "AUTO"]:
            if q:
                return str(s.src_autorange[f])
            s.src_autorange[f] = int(_num(args[0]))
            return None
        if rest == ["DEL"]:
            if q:
                return _fmt(s.src_delay[f])
            s.src_delay[f], s.src_autodelay[f] = max(0.0, _num(args[0])), 0
            return None
        if rest == ["DEL", "AUTO"]:
            if q:
                return str(s.src_autodelay[f])
            s.src_autodelay[f] = int(_num(args[0]))
            return None
        if len(rest) == 2 and rest[0] == "DEL" and rest[1].startswith("USER"):
            k = (f, rest[1])
            if q:
                return _fmt(s.src_user_delay.get(k, 0.0))
            s.src_user_delay[k] = _num(args[0])
            return None
        if rest == ["READ", "BACK"]:
            if q:
                return str(s.readback[f])
            s.readback[f] = int(_num(args[0]))
            return None
        raise ScpiError(-113, f"Undefined header {cmd!r}")

    def _sense(self, n: list[str], q: bool, args: list[str], cmd: str) -> str | None:
        s = self.s
        if n == ["FUNC"]:
            if q:
                return f'"{s.sense_func}"'
            f: str | None
            f = _unquote(args[0]).upper()
            f = {
                "CURR": "CURR:DC",
                "CURRENT": "CURR:DC",
                "CURR:DC": "CURR:DC",
                "VOLT": "VOLT:DC",
                "VOLTAGE": "VOLT:DC",
                "VOLT:DC": "VOLT:DC",
                "RES": "RES",
                "RESISTANCE": "RES",
            }.get(f)
            if f is None:
                raise ScpiError(-224, f"Illegal parameter value {args[0]!r}")
            s.sense_func = f
            return None
        if n == ["COUN"]:
            if q:
                return str(s.count)
            s.count = int(_num(args[0]))
            return None
        if n == ["AZER", "ONCE"]:
            return None
        if not n or n[0] not in ("CURR", "VOLT", "RES"):
            raise ScpiError(-113, f"Undefined header {cmd!r}")
        f, rest = n[0], n[1:]
        if rest and rest[0] == "AVER":
            avg = s.average[f]
            sub = rest[1:]
            if sub in ([], ["STAT"]):
                if q:
                    return str(avg[0])
                avg[0] = 1 if _unquote(args[0]).upper() in ("1", "ON") else 0
            elif sub == ["TCON"]:
                if q:
                    return avg[1]
                tcon = _short(_unquote(args[0]))[:3]
                if tcon not in ("REP", "MOV"):
                    raise ScpiError(-224, f"Illegal parameter value {args[0]!r}")
                avg[1] = tcon
            elif sub == ["COUN"]:
                if q:
                    return str(avg[2])
                count = int(_num(args[0]))
                if not 1 <= count <= 100:
                    raise ScpiError(-222, f"Data out of range: {count} (1..100)")
                avg[2] = count
            else:
                raise ScpiError(-113, f"Undefined header {cmd!r}")
            return None
        if rest == ["NPLC"]:
            if q:
                return f"{s.nplc[f]:g}"
            x = _num(args[0])
            if not 0.01 <= x <= 10:
                raise ScpiError(-222, f"Data out of range: NPLC {x:g} (0.01..10)")
            s.nplc[f] = x
            return None
        table = {
            ("RANG",): (s.sens_range, float),
            ("RANG", "AUTO"): (s.sens_autorange, int),
            ("RSEN",): (s.rsense, int),
            ("AZER",): (s.azero, int),
        }
        if tuple(rest) in table:
            store, kind = table[tuple(rest)]
            if q:
                return _fmt(store[f]) if kind is float else str(store[f])
            value = kind(_num(args[0]))
            if rest == ["RANG"] and f != "RES":  # snaps to the range that holds it
                snapped = K2450.snap(K2450.measure_i if f == "CURR" else K2450.measure_v, value)
                if snapped is None:
                    raise ScpiError(-222, f"Data out of range: {args[0]}")
                value = snapped
            store[f] = value
            if rest == ["RANG"]:
                s.sens_autorange[f] = 0
            return None
        if len(rest) == 2 and rest[0] == "DEL" and rest[1].startswith("USER"):
            k = (f, rest[1])
            if q:
                return _fmt(s.sens_user_delay.get(k, 0.0))
            s.sens_user_delay[k] = _num(args[0])
            return None
        raise ScpiError(-113, f"Undefined header {cmd!r}")

    def _trace(self, n: list[str], q: bool, args: list[str], cmd: str) -> str | None:
        if n == ["MAKE"] and not q:
            name = _unquote(args[0])
            if name in self.buffers:
                raise ScpiError(-222, f"buffer {name!r} exists")
            self.buffers[name] = _Buffer(
                size=int(_num(args[1])) if len(args) > 1 else 10000,
                style=(args[2].upper() if len(args) > 2 and args[2] else "STAN"),
            )
            return None
        if n == ["DEL"] and not q:
            name = _unquote(args[0])
            if name in ("defbuffer1", "defbuffer2") or name not in self.buffers:
                raise ScpiError(-222, f"cannot delete buffer {name!r}")
            del self.buffers[name]
            return None
        if n == ["CLE"] and not q:
            self._buffer(args[0] if args else "'defbuffer1'").readings.clear()
            return None
        if n == ["POIN"]:
            if q:
                return str(self._buffer(args[0] if args else "'defbuffer1'").size)
            buf = self._buffer(args[1] if len(args) > 1 else "'defbuffer1'")
            buf.size = int(_num(args[0]))
            del buf.readings[: -buf.size or None]
            return None
        if n == ["ACT"] and q:
            return str(len(self._buffer(args[0] if args else "'defbuffer1'").readings))
        if n == ["TRIG"] and not q:
            buf = self._buffer(args[0] if args else "'defbuffer1'")
            for _ in range(max(1, self.s.count)):
                self._measure_into(buf)
            return None
        if n and n[0] == "FEED" and not q:
            # the 2400's buffer feed (PyMeasure's KeithleyBuffer sends it to a 2450): the
            # 2450's buffers always take the readings, so it is accepted and has no effect
            # (an assumption: a 2450 in SCPI mode may answer -113 here)
            return None
        if n and n[0] == "STAT" and q:
            buf = self._buffer(args[0] if args else "'defbuffer1'")
            values = np.array([r.reading for r in buf.readings])
            if values.size == 0:
                raise ScpiError(-230, "Data corrupt or stale: buffer is empty")
            which = n[1] if len(n) > 1 else ""
            stats: dict[str, Callable[[], float]] = {
                "AVER": lambda: float(values.mean()),
                "MAX": lambda: float(values.max()),
                "MIN": lambda: float(values.min()),
                "STDD": lambda: float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "PK2P": lambda: float(values.max() - values.min()),
            }
            if which not in stats:
                raise ScpiError(-113, f"Undefined header {cmd!r}")
            return _fmt(stats[which]())
        if n == ["DATA"] and q:
            buf = self._buffer(args[2] if len(args) > 2 else "'defbuffer1'")
            if not args:  # every reading of the default buffer
                if not buf.readings:
                    raise ScpiError(-230, "Data corrupt or stale: buffer is empty")
                args = ["1", str(len(buf.readings))]
            if len(args) < 2:
                raise ScpiError(-109, "Missing parameter")
            a, b = int(_num(args[0])), int(_num(args[1]))
            if not (1 <= a <= b <= len(buf.readings)):
                raise ScpiError(
                    -222, f"Data out of range: {a}..{b} of {len(buf.readings)} readings"
                )
            elements = args[3:] or ["READ"]
            return ",".join(self._elements(r, buf, elements) for r in buf.readings[a - 1 : b])
        raise ScpiError(-113, f"Undefined header {cmd!r}")

    def _buffer(self, arg: str) -> _Buffer:
        name = _unquote(arg)
        if name not in self.buffers:
            raise ScpiError(-222, f"buffer {name!r} does not exist")
        return self.buffers[name]

    def _elements(self, r: _Reading, buf: _Buffer, elements: list[str]) -> str:
        t0 = buf.readings[0].t if buf.readings else r.t
        return ",".join(self._element(r, t0, e) for e in elements)

    @staticmethod
    def _element(r: _Reading, t0: float, name: str) -> str:
        e = name.strip().upper()
        e = _ELEMENT_LONG.get(e, e)
        t = r.t
        if e == "READ":
            return _fmt(r.reading)
        if e == "SOUR":
            return _fmt(r.source)
        if e == "REL":
            return _fmt(t - t0)
        if e == "SEC":
            return str(math.floor(t))
        if e == "FRAC":
            return _fmt(t - math.floor(t))
        if e == "STAT":
            return str(r.status)
        if e == "SOURSTAT":
            return str(r.source_status)
        if e == "UNIT":
            return r.unit
        if e == "SOURUNIT":
            return r.source_unit
        if e == "TST":
            return f"virtual {t:.9f}"
        if e == "DATE":
            return "01/01/2000"
        if e == "TIME":
            return f"{t:.9f}"
        if e == "FORM":
            return f"{r.reading:+.6E} {r.unit}"
        if e == "SOURFORM":
            return f"{r.source:+.6E} {r.source_unit}"
        raise ScpiError(-224, f"Illegal parameter value {name!r}")

    # -- physics ----------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.s = _Settings()
            for b in self.buffers.values():
                b.readings.clear()
                b.size = _Buffer().size  # *RST restores the default buffers' capacity
            for name in [k for k in self.buffers if k not in ("defbuffer1", "defbuffer2")]:
                del self.buffers[name]
            self.sweep = None
            self.tripped = False
            self.terminal.output_on = False
            self.terminal.voltage_v = 0.0

    def _settle(self) -> tuple[float, float]:
        """Solve the operating point now (no time passes); returns (V, I)."""
        s = self.s
        f = s.source_func
        v, i, cond = settle(
            self.bench,
            self.terminal,
            output_on=s.output == 1,
            voltage_mode=f == "VOLT",
            level=s.level[f],
            limit=s.limit[f],
        )
        self.tripped = cond != 0
        return v, i

    def _measure_into(self, buf: _Buffer, delay_s: float = 0.0) -> _Reading:
        """One reading: hold the drive for ``delay_s`` and the integration time, read."""
        s = self.s
        func = s.sense_func.split(":")[0]
        t_int = s.nplc[func] / self.linefreq
        v, i = integrate(self.bench, self._settle, t_int, delay_s)
        if not self.tripped:  # the noise floor (a reading clamped at the limit is exact)
            i += float(self._noise.normal(0.0, K2450.noise_floor_a))
        fixed = {f: None if s.sens_autorange[f] else s.sens_range[f] for f in ("CURR", "VOLT")}
        v = self.reading_errors.apply("v", fixed["VOLT"], v)
        i = self.reading_errors.apply("i", fixed["CURR"], i)
        value = {"CURR": i, "VOLT": v, "RES": (v / i) if i != 0 else K2450.overflow}[func]
        if func in ("CURR", "VOLT") and not s.sens_autorange[func]:
            table = K2450.measure_i if func == "CURR" else K2450.measure_v
            value = K2450.reading(table, s.sens_range[func], value)
        unit = {"CURR": "Amp DC", "VOLT": "Volt DC", "RES": "Ohm"}[func]
        src_is_v = s.source_func == "VOLT"
        r = _Reading(
            reading=value,
            source=v if src_is_v else i,
            t=self.clock.now() - self._t0,
            status=0,
            source_status=SOURCE_STATUS_LIMIT if self.tripped else 0,
            unit=unit,
            source_unit="Volt DC" if src_is_v else "Amp DC",
        )
        buf.append(r)
        return r

    def _trigger_load(self, args: list[str]) -> None:
        """``:TRIG:LOAD "SimpleLoop", count[, delay[, "buffer"]]`` or ``"Empty"``: the
        trigger-model templates a script runs with ``:INIT`` (2450 manual, trigger model
        templates; the other templates are not emulated)."""
        name = _unquote(args[0]).upper() if args else ""
        if name == "EMPTY":
            self.sweep = None
            return None
        if name != "SIMPLELOOP" or len(args) < 2:
            raise ScpiError(-224, f"Illegal parameter value {args[0] if args else ''!r}")
        count = int(_num(args[1]))
        if count < 1:
            raise ScpiError(-222, f"Data out of range: count {count}")
        self.sweep = {
            "kind": "simple",
            "count": count,
            "delay": _num(args[2]) if len(args) > 2 else 0.0,
            "buffer": args[3] if len(args) > 3 else "'defbuffer1'",
        }
        return None

    def _run_simple_loop(self) -> None:
        sw = self.sweep
        assert sw is not None
        buf = self._buffer(sw["buffer"])
        for _ in range(sw["count"]):
            self._measure_into(buf, sw["delay"])

    def _run_sweep(self) -> None:
        sw = self.sweep
        if sw is None:
            raise ScpiError(-221, "Settings conflict: no sweep configured")
        s = self.s
        if sw["func"] != s.source_func:
            raise ScpiError(
                -221, f"Settings conflict: sweep of {sw['func']} while sourcing {s.source_func}"
            )
        buf = self._buffer(sw["buffer"])
        levels = list(np.linspace(sw["start"], sw["stop"], sw["points"]))
        if sw["dual"]:
            levels = levels + levels[::-1]
        delay = sw["delay"] if sw["delay"] >= 0 else 0.0  # -1: auto delay (none here)
        s.output = 1
        for _ in range(sw["count"]):
            for level in levels:
                s.level[sw["func"]] = float(level)
                r = self._measure_into(buf, delay)
                if sw["fail_abort"] and r.source_status & SOURCE_STATUS_LIMIT:
                    return


__all__ = ["SOURCE_STATUS_LIMIT", "Keithley2450Emulator", "ScpiError"]
