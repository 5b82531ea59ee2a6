"""Keithley 2600B (TSP) emulator over the mock lab's chip: the subset the QCoDeS driver
(``qcodes.instrument_drivers.Keithley.Keithley2636B``) sends, answered from device physics.

Served by ``LineServer(emu.handle, terminator="\\n")``; the driver connects unmodified
through pyvisa-py. Every line is a TSP chunk run by the Lua-subset interpreter of
``memhil.mock_hw.tsp``, so the driver's queries (``print(...)``), settings
(``smua.source.levelv=0.5``) and Lua programs (``loadandrunscript`` ... ``endscript``: the
fast sweep, the time trace, memhil's pulse scripts) all go through one path. This module
is the instrument: what it exposes to scripts, its buffers and its wire.

Implemented TSP subset (anything else is a TSP error: queued in ``errorqueue``, no reply,
as on the instrument):

* IEEE-488 common commands (``memhil.mock_hw.scpi``): ``*IDN?``, ``*RST``, ``*CLS``,
  ``*OPC?``, ``*OPC``, ``*WAI``, ``*TRG``, ``*ESR?``, ``*STB?``
* chunks: ``loadandrunscript`` [name] ... ``endscript``; ``loadscript`` name ... ``endscript``
  then ``name()`` / ``name.run()``; ``abort`` (nothing runs between commands here: a
  no-op). A script being loaded belongs to its connection (see ``session_closed``).
* globals: ``print``, ``printbuffer``, ``printnumber``, ``delay``, ``waitcomplete``,
  ``reset``, ``tostring``, ``tonumber``, ``math.abs/min/max/floor/ceil/sqrt``,
  ``timer.reset()``/``timer.measure.t()`` (virtual time), ``beeper.beep``, ``opc``
* ``localnode.model/linefreq/serialno/revision/description/autolinefreq/prompts/showerrors``
* ``format.data`` (ASCII / REAL32=SREAL / REAL64=REAL), ``format.byteorder``
  (NORMAL=BIGENDIAN=NETWORK / SWAPPED=LITTLEENDIAN), ``format.asciiprecision``
* ``errorqueue.count/next()/clear()``, ``status.measurement.instrument.smuX.condition``
  (bit 0 = voltage limit, bit 1 = current limit, as the QCoDeS driver parses it),
  ``status.reset()``, ``display.clear/settext/screen/sendkey``
* per channel ``smuX``: ``reset()``, ``abort()``, ``sense``, constants (``OUTPUT_DCVOLTS`` ...);
  ``source.func/levelv/leveli/limitv/limiti/output/rangev/rangei/autorangev/autorangei/
  delay/offmode/compliance``; ``measure.nplc/count/interval/rangev/rangei/autorangev/
  autorangei/autozero/delay`` and ``measure.i/v/r/p/iv([buffer])``; ``nvbuffer1/2``:
  ``clear()``, ``n``, ``appendmode``, ``collectsourcevalues``, ``collecttimestamps``,
  ``readings``, ``statuses``, ``timestamps``, ``sourcevalues`` (1-based indexing);
  ``smuX.makebuffer(n)`` (a dynamic buffer); ``smuX.contact.check()/r()/threshold``
  (a terminal that reaches a chip line through the matrix and the probes is in contact);
  ``smuX.measure.filter.enable/type/count`` (stored; readings are single samples)
* ``smuX.trigger.*`` and ``trigger.timer[N]``: the trigger model of sweep scripts
  (``memhil.mock_hw.emulators.k2600_trigger``)
* ``*TST?``, ``*ESE``, ``*SRE``; Lua ``string``/``table``/``math``/``type``
  (``memhil.mock_hw.tsp``)

Ranges (``memhil.mock_hw.smu_ranges``): ``rangev``/``rangei`` snap to the model's ranges
and turn that autorange off; a level beyond a fixed source range raises error 5005 when
the output turns on (or the level is set with it on) and is not applied; readings beyond
a fixed measure range are 9.91e37; ``limiti``/``limitv`` have the model's minimum;
current readings carry the noise floor (not in compliance); with ``accuracy`` every
reading is off by its range's datasheet accuracy (``memhil.mock_hw.smu_accuracy``).

Physics (``memhil.mock_hw.smu_physics``). The source level goes to the channel's bench
terminal (``"<name>.<smuX>"``). A measurement with the output on holds the present drive
for the integration time ``nplc / localnode.linefreq`` on the virtual clock (the cell
switches), then reads the current. Compliance: in voltage mode the terminal voltage is
lowered so that the chip never sees more than ``limiti``, the reading is clamped at the
limit and the current-limit bit is set; in current mode the voltage is solved for the
programmed current and clamped at ``limitv`` (voltage-limit bit). The operating point is
re-solved whenever the level, limit or output changes and before and after every
integration, so the drive held on the chip is always the compliant one.
``measure.count > 1`` takes readings ``measure.interval`` apart on the virtual clock (the
time trace); ``delay(t)`` holds the drive for ``t``. Nothing here sleeps in wall time.

Readings stored in a buffer carry a status word: bit 0x40 marks a reading taken in
compliance (the 2600B ``bufferVar.statuses`` compliance bit, as recalled from the
reference manual; check against the manual before relying on it on a bench).
Binary ``printbuffer`` output is ``#0`` + IEEE-754 values + newline; REAL32 values are
rounded towards zero so that a clamped reading never exceeds the limit after rounding.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memhil.mock_hw.bench import SHORT_PATH_OHM, MockBench
from memhil.mock_hw.emulators.k2600_trigger import TIMERS, Timer, TriggerModel, timers_obj
from memhil.mock_hw.scpi import CommonCommands, ScpiError, ScpiStatus
from memhil.mock_hw.server import TRANSCRIPT_LINES, current_session
from memhil.mock_hw.smu_accuracy import ReadingErrors, accuracy_table
from memhil.mock_hw.smu_physics import (
    CONDITION_CURRENT_LIMIT,
    CONDITION_VOLTAGE_LIMIT,
    integrate,
    settle,
)
from memhil.mock_hw.smu_ranges import k2600_table
from memhil.mock_hw.tsp import (
    Fn,
    Interpreter,
    Obj,
    Prop,
    Script,
    TspError,
    fmt_number,
    num,
    standard_library,
    tostring,
)
from memhil.mock_hw.tsp.errors import VALUE_TOO_BIG_FOR_RANGE, beyond, not_a_choice

log = logging.getLogger(__name__)

#: ``errorqueue.next()`` severity of the emulator's errors: RECOVERABLE (20), the level the
#: 2600-series manuals give an error "caused by improper use of the instrument or by
#: conditions that can be corrected" (2600 reference manual, "Error and Status Messages",
#: error levels 0 NO_SEVERITY, 10 INFORMATIONAL, 20 RECOVERABLE, 30 SERIOUS, 40 FATAL):
#: every error the emulator queues is one (a syntax error, a bad value, a range conflict).
SEVERITY_RECOVERABLE = 20.0

#: bufferVar.statuses bit for a reading taken in compliance (see the module docstring).
BUFFER_STATUS_COMPLIANCE = 0x40
#: what the 2600 returns for an overflowed / undefined reading (e.g. R at 0 A).
OVERFLOW = 9.91e37


@dataclass
class _Buffer:
    """A dedicated reading buffer (``smuX.nvbuffer1``)."""

    readings: list[float] = field(default_factory=list)
    statuses: list[float] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    sourcevalues: list[float] = field(default_factory=list)
    appendmode: int = 0
    collectsourcevalues: int = 0
    collecttimestamps: int = 1
    basetimestamp: float = 0.0
    capacity: int = 60000

    def clear(self, now: float) -> None:
        for lst in (self.readings, self.statuses, self.timestamps, self.sourcevalues):
            lst.clear()
        self.basetimestamp = now

    def append(self, reading: float, status: int, t: float, source: float) -> None:
        if len(self.readings) >= self.capacity:
            # -1003: the emulator's own number (the 2600 error list read for tsp.errors
            # names no "buffer full" error)
            raise TspError("TSP Runtime error: reading buffer full", -1003)
        self.readings.append(reading)
        self.statuses.append(float(status))
        self.timestamps.append(t - self.basetimestamp)
        self.sourcevalues.append(source)


class _Field:
    """``bufferVar.readings`` etc.: a 1-based, read-only view that printbuffer accepts."""

    def __init__(self, buf: _Buffer, name: str):
        self.buf, self.name = buf, name

    @property
    def values(self) -> list[float]:
        if self.name == "sourcevalues" and not self.buf.collectsourcevalues:
            raise TspError(
                "TSP Runtime error: source values were not collected (collectsourcevalues = 0)"
            )
        if self.name == "timestamps" and not self.buf.collecttimestamps:
            raise TspError("TSP Runtime error: timestamps were not collected")
        return getattr(self.buf, self.name)

    def __len__(self) -> int:
        return len(getattr(self.buf, self.name))

    def tsp_get(self, key: Any) -> Any:
        vals = self.values
        if isinstance(key, (int, float)) and not isinstance(key, bool) and key == int(key):
            k = int(key)
            if 1 <= k <= len(vals):
                return vals[k - 1]
            return None
        raise TspError(f"TSP Runtime error: invalid buffer index {key!r}")

    def tsp_set(self, key: Any, value: Any) -> None:
        raise TspError("TSP Runtime error: buffer readings are read-only")


@dataclass
class _ChannelState:
    func: int = 1  # 0 = OUTPUT_DCAMPS, 1 = OUTPUT_DCVOLTS
    levelv: float = 0.0
    leveli: float = 0.0
    limitv: float = 20.0
    limiti: float = 0.1
    output: int = 0
    offmode: int = 0
    rangev: float = 0.2
    rangei: float = 1e-6
    autorangev: int = 1
    autorangei: int = 1
    source_delay: float = 0.0
    nplc: float = 1.0
    count: int = 1
    interval: float = 0.0
    m_rangev: float = 0.2
    m_rangei: float = 1e-6
    m_autorangev: int = 1
    m_autorangei: int = 1
    autozero: int = 2
    m_delay: float = 0.0
    sense: int = 0
    filter_enable: int = 0  # smuX.measure.filter: stored (readings are single samples)
    filter_type: int = 1  # FILTER_REPEAT_AVG
    filter_count: int = 1
    contact_threshold: float = 50.0  # smuX.contact.threshold (ohm)
    condition: int = 0  # status.measurement.instrument.smuX.condition
    v_actual: float = 0.0  # the voltage the terminal holds now (after compliance)
    i_actual: float = 0.0


class _Smu:
    """One SMU channel: its settings, its bench terminal and its physics."""

    def __init__(self, emu: Keithley2600Emulator, channel: str):
        self.emu = emu
        self.channel = channel
        self.key = f"{emu.name}.{channel}"
        self.terminal = emu.bench.terminal(self.key)
        self.s = _ChannelState()
        self.buffers = {"nvbuffer1": _Buffer(), "nvbuffer2": _Buffer()}
        self.table = k2600_table(emu.model)
        self._noise = np.random.default_rng(zlib.crc32(self.key.encode()))  # reproducible
        self.reading_errors = ReadingErrors(
            accuracy_table(self.table), self.key, emu.seed, emu.accuracy
        )
        self.trigger = TriggerModel(self, emu.timers)
        self.obj = self._build()

    # -- settings ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.s = _ChannelState()
        self.trigger.reset()
        now = self.emu.clock.now()
        self.buffers = {k: b for k, b in self.buffers.items() if k.startswith("nvbuffer")}
        for b in self.buffers.values():
            b.clear(now)
            b.appendmode, b.collectsourcevalues, b.collecttimestamps = 0, 0, 1
        self.terminal.output_on = False
        self.terminal.voltage_v = 0.0

    def _setter(
        self,
        attr: str,
        kind: type = float,
        lo: float | None = None,
        hi: float | None = None,
        choices: Sequence[float] | None = None,
        resolve: bool = False,
    ) -> Callable[[Any], None]:
        def set_(value: Any) -> None:
            x = num(value)
            if choices is not None and x not in choices:
                raise not_a_choice(x, tuple(choices), f"{self.channel}.{attr}")
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                raise beyond(x, lo, hi, f"{self.channel}.{attr}")
            if resolve:
                self._check_source(dataclasses.replace(self.s, **{attr: kind(x)}))
            setattr(self.s, attr, kind(x))
            if resolve:
                self.operating_point()

        return set_

    def _prop(self, attr: str, **kw: Any) -> Prop:
        return Prop(lambda: float(getattr(self.s, attr)), self._setter(attr, **kw))

    def _range_prop(
        self, attr: str, auto: str, ranges: tuple[float, ...], level: str | None = None
    ) -> Prop:
        """A range attribute: a value selects the smallest range that holds it and turns
        that function's autorange off (2600B manual, "Range considerations"); with source
        autorange on, the level chooses the range that is read back."""

        def get() -> float:
            if level is not None and getattr(self.s, auto):
                return self.table.snap(ranges, getattr(self.s, level)) or ranges[-1]
            return float(getattr(self.s, attr))

        def set_(value: Any) -> None:
            x = num(value)
            r = self.table.snap(ranges, x)
            if r is None:
                raise beyond(abs(x), None, ranges[-1], f"{self.channel}.{attr}")
            setattr(self.s, attr, r)
            setattr(self.s, auto, 0)

        return Prop(get, set_)

    def _autorange_prop(self, auto: str, range_prop: Prop, attr: str, choices: tuple) -> Prop:
        """An autorange switch: turning it off keeps the range it had chosen."""

        def set_(value: Any) -> None:
            x = int(num(value))
            if x not in choices:
                raise not_a_choice(x, choices, f"{self.channel}.{auto}")
            if x == 0 and getattr(self.s, auto):
                setattr(self.s, attr, range_prop.get())
            setattr(self.s, auto, x)

        return Prop(lambda: float(getattr(self.s, auto)), set_)

    def _check_source(self, proposed: _ChannelState) -> None:
        """Refuse an output level beyond a fixed source range: the 2600B raises its error
        when the output turns on with such a level, or when it is set with the output on,
        and sources nothing (manual, "Range considerations": no error while the output is
        off). Error 5005 "Value too big for range" (the 2600 error list: ``tsp.errors``)."""
        if proposed.output != 1:
            return
        t = self.table
        if proposed.func == 1:
            auto, rng, lvl, unit = proposed.autorangev, proposed.rangev, proposed.levelv, "V"
        else:
            auto, rng, lvl, unit = proposed.autorangei, proposed.rangei, proposed.leveli, "A"
        if not auto and not t.source_fits(rng, lvl):
            raise TspError(
                f"Value too big for range ({lvl:g} {unit} on the {rng:g} {unit} range of "
                f"{self.channel})",
                VALUE_TOO_BIG_FOR_RANGE,
            )

    def _read(self, kind: str, value: float) -> float:
        """``value`` (the physics) as the instrument reads it: the noise floor added to a
        current not clamped at a limit, the overflow value beyond the measure range (the
        source range when sourcing and measuring the same quantity)."""
        s, t = self.s, self.table
        if kind == "i":
            if s.condition == 0:
                value += float(self._noise.normal(0.0, t.noise_floor_a))
            fixed = (
                (not s.autorangei, s.rangei) if s.func == 0 else (not s.m_autorangei, s.m_rangei)
            )
            rng = fixed[1] if fixed[0] else None
            return t.reading(t.measure_i, rng, self.reading_errors.apply("i", rng, value))
        fixed = (not s.autorangev, s.rangev) if s.func == 1 else (not s.m_autorangev, s.m_rangev)
        rng = fixed[1] if fixed[0] else None
        return t.reading(t.measure_v, rng, self.reading_errors.apply("v", rng, value))

    def _build(self) -> Obj:
        t = self.table
        vmax, imax = t.source_v[-1], t.source_i[-1]
        src_rv = self._range_prop("rangev", "autorangev", t.source_v, "levelv")
        src_ri = self._range_prop("rangei", "autorangei", t.source_i, "leveli")
        m_rv = self._range_prop("m_rangev", "m_autorangev", t.measure_v)
        m_ri = self._range_prop("m_rangei", "m_autorangei", t.measure_i)
        buffers = {name: self._buffer_obj(name, b) for name, b in self.buffers.items()}
        source = Obj(
            f"{self.channel}.source",
            {
                "func": self._prop("func", kind=int, choices=(0, 1), resolve=True),
                "levelv": self._prop("levelv", lo=-vmax, hi=vmax, resolve=True),
                "leveli": self._prop("leveli", lo=-imax, hi=imax, resolve=True),
                "limitv": self._prop("limitv", lo=t.limit_v_min, hi=vmax, resolve=True),
                "limiti": self._prop("limiti", lo=t.limit_i_min, hi=imax, resolve=True),
                "output": self._prop("output", kind=int, choices=(0, 1, 2), resolve=True),
                "offmode": self._prop("offmode", kind=int, choices=(0, 1, 2, 3)),
                "rangev": src_rv,
                "rangei": src_ri,
                "autorangev": self._autorange_prop("autorangev", src_rv, "rangev", (0, 1)),
                "autorangei": self._autorange_prop("autorangei", src_ri, "rangei", (0, 1)),
                "delay": self._prop("source_delay", lo=-1.0),
                "compliance": Prop(self._compliance),
                "settling": Prop(lambda: 0.0, lambda v: None),
                "highc": Prop(lambda: 0.0, lambda v: None),
                "sink": Prop(lambda: 0.0, lambda v: None),
            },
        )
        measure = Obj(
            f"{self.channel}.measure",
            {
                "nplc": self._prop("nplc", lo=0.001, hi=25.0),
                "count": self._prop("count", kind=int, lo=1, hi=60000),
                "interval": self._prop("interval", lo=0.0, hi=1.0e6),
                "rangev": m_rv,
                "rangei": m_ri,
                "autorangev": self._autorange_prop("m_autorangev", m_rv, "m_rangev", (0, 1)),
                "autorangei": self._autorange_prop("m_autorangei", m_ri, "m_rangei", (0, 1, 2)),
                "autozero": self._prop("autozero", kind=int, choices=(0, 1, 2)),
                "delay": self._prop("m_delay", lo=-1.0),
                "filter": Obj(
                    f"{self.channel}.measure.filter",
                    {
                        "enable": self._prop("filter_enable", kind=int, choices=(0, 1)),
                        "type": self._prop("filter_type", kind=int, choices=(0, 1, 2)),
                        "count": self._prop("filter_count", kind=int, lo=1, hi=100),
                    },
                ),
                "i": Fn(lambda buf=None: self.measure("i", buf), "measure.i"),
                "v": Fn(lambda buf=None: self.measure("v", buf), "measure.v"),
                "r": Fn(lambda buf=None: self.measure("r", buf), "measure.r"),
                "p": Fn(lambda buf=None: self.measure("p", buf), "measure.p"),
                "iv": Fn(lambda ib=None, vb=None: self.measure("iv", ib, vb), "measure.iv"),
            },
        )
        return Obj(
            self.channel,
            {
                "source": source,
                "measure": measure,
                **buffers,
                "sense": self._prop("sense", kind=int, choices=(0, 1, 3)),
                "makebuffer": Fn(self._make_buffer, "makebuffer"),
                "contact": Obj(
                    f"{self.channel}.contact",
                    {
                        "check": Fn(self._contact_check, "contact.check"),
                        "r": Fn(self._contact_r, "contact.r"),
                        "threshold": self._prop("contact_threshold", lo=1.0, hi=1e6),
                        "speed": Prop(lambda: 0.0, lambda v: None),
                    },
                ),
                "reset": Fn(self.reset, "reset"),
                "abort": Fn(self.trigger.abort, "abort"),
                "OUTPUT_DCAMPS": 0.0,
                "OUTPUT_DCVOLTS": 1.0,
                "OUTPUT_OFF": 0.0,
                "OUTPUT_ON": 1.0,
                "OUTPUT_HIGH_Z": 2.0,
                "SENSE_LOCAL": 0.0,
                "SENSE_REMOTE": 1.0,
                "SENSE_CALA": 3.0,
                "AUTORANGE_OFF": 0.0,
                "AUTORANGE_ON": 1.0,
                "AUTORANGE_FOLLOW_LIMIT": 2.0,
                "AUTOZERO_OFF": 0.0,
                "AUTOZERO_ONCE": 1.0,
                "AUTOZERO_AUTO": 2.0,
                "FILTER_MOVING_AVG": 0.0,
                "FILTER_REPEAT_AVG": 1.0,
                "FILTER_MEDIAN": 2.0,
                "ENABLE": 1.0,
                "DISABLE": 0.0,
                "OUTPUT_NORMAL": 0.0,
                "OUTPUT_ZERO": 2.0,
                "ASYNC": 2.0,
                "SOURCE_IDLE": 0.0,
                "SOURCE_HOLD": 1.0,
                "LIMIT_AUTO": 0.0,
                "trigger": self.trigger.obj(),
            },
        )

    def _buffer_obj(self, name: str, b: _Buffer) -> Obj:
        def flag(attr: str) -> Prop:
            return Prop(lambda: float(getattr(b, attr)), lambda v: setattr(b, attr, int(num(v))))

        return Obj(
            f"{self.channel}.{name}",
            {
                "clear": Fn(lambda: b.clear(self.emu.clock.now()), "clear"),
                "n": Prop(lambda: float(len(b.readings))),
                "capacity": Prop(lambda: float(b.capacity)),
                "appendmode": flag("appendmode"),
                "collectsourcevalues": flag("collectsourcevalues"),
                "collecttimestamps": flag("collecttimestamps"),
                "basetimestamp": Prop(lambda: b.basetimestamp),
                "readings": _Field(b, "readings"),
                "statuses": _Field(b, "statuses"),
                "timestamps": _Field(b, "timestamps"),
                "sourcevalues": _Field(b, "sourcevalues"),
            },
        )

    def _make_buffer(self, size: Any) -> Obj:
        """``smuX.makebuffer(n)``: a dynamically allocated reading buffer of ``n`` readings."""
        n = int(num(size))
        if not 1 <= n <= 60000:
            raise beyond(n, 1, 60000, "makebuffer size")
        name = f"buffer{len(self.buffers) - 1}"
        buf = self.buffers[name] = _Buffer(capacity=n)
        buf.clear(self.emu.clock.now())
        return self._buffer_obj(name, buf)

    def _contact_r(self) -> tuple[float, float]:
        """``smuX.contact.r()``: (HI, LO) contact resistance (ohm); a terminal that reaches
        no chip line (no route, needles lifted) reads the overflow value. The resistance
        of a closed path is the short-path assumption of the bench (``SHORT_PATH_OHM``)."""
        hi, _ = self.emu.bench.router(self.key)
        r = SHORT_PATH_OHM if hi else self.table.overflow
        return r, r

    def _contact_check(self) -> bool:
        """``smuX.contact.check()``: true when both contact resistances are below
        ``smuX.contact.threshold``."""
        r_hi, r_lo = self._contact_r()
        return max(r_hi, r_lo) < self.s.contact_threshold

    def _compliance(self) -> bool:
        self.operating_point()
        return self.s.condition != 0

    # -- physics ------------------------------------------------------------------------------
    def operating_point(self) -> tuple[float, float]:
        """Solve the present operating point (no time passes): set the terminal to the
        compliant voltage, update the condition register; returns (V, I) as reported."""
        s = self.s
        voltage_mode = s.func == 1
        v, i, cond = settle(
            self.emu.bench,
            self.terminal,
            output_on=s.output == 1,
            voltage_mode=voltage_mode,
            level=s.levelv if voltage_mode else s.leveli,
            limit=s.limiti if voltage_mode else s.limitv,
        )
        s.condition, s.v_actual, s.i_actual = cond, v, i
        return v, i

    def measure(self, kind: str, buf: Any = None, buf2: Any = None, clear: bool = True) -> Any:
        """``smuX.measure.<kind>([buffer])``: ``count`` readings ``interval`` apart, each
        integrating for nplc / linefreq with the drive held on the chip. ``clear``: a
        buffer not in append mode is cleared first (the trigger model clears it once, at
        ``initiate()``)."""
        emu, s = self.emu, self.s
        bufs = [b if isinstance(b, _Buffer) else self.resolve_buffer(b) for b in (buf, buf2)]
        for b in bufs:
            if clear and b is not None and not b.appendmode:
                b.clear(emu.clock.now())
        t_int = s.nplc / emu.linefreq
        n = int(s.count)  # without a buffer the last of the readings is returned
        result: Any = None
        t_start = emu.clock.now()
        for k in range(n):
            v_true, i_true = integrate(emu.bench, self.operating_point, t_int)
            status = BUFFER_STATUS_COMPLIANCE if s.condition else 0
            v, i = self._read("v", v_true), self._read("i", i_true)
            values = {"i": i, "v": v, "p": v * i, "r": (v / i) if i != 0 else OVERFLOW}
            source = v_true if s.func == 1 else i_true
            t = emu.clock.now()
            if kind == "iv":
                for b, x in zip(bufs, (i, v)):
                    if b is not None:
                        b.append(x, status, t, source)
                result = (i, v)
            else:
                if bufs[0] is not None:
                    bufs[0].append(values[kind], status, t, source)
                result = values[kind]
            if k < n - 1:
                # reading k + 1 starts at t_start + (k + 1) * interval: anchored to the
                # start, so the rounding of each hold's duration does not accumulate
                wait = t_start + (k + 1) * s.interval - emu.clock.now()
                if wait > 0:
                    emu.bench.hold(wait)
        return result

    def resolve_buffer(self, b: Any) -> _Buffer | None:
        if b is None:
            return None
        if isinstance(b, Obj):
            for name, buf in self.buffers.items():  # nvbuffer1/2 and makebuffer's
                if b._name == f"{self.channel}.{name}":
                    return buf
        raise TspError("TSP Runtime error: bad argument (reading buffer expected)")


#: Lines a script being loaded may hold: past it the script is abandoned with a TSP error
#: (a client that never sends ``endscript`` cannot grow the emulator without bound).
SCRIPT_LINES_MAX = 100_000


@dataclass
class _Loading:
    """A script a connection is loading (``loadscript``/``loadandrunscript`` so far)."""

    name: str | None
    run: bool
    lines: list[str] = field(default_factory=list)


class Keithley2600Emulator:
    """A Keithley 2600B SMU on a mock bench; ``handle`` answers one received line.

    ``name`` prefixes the bench terminal keys (``"<name>.smua"``); ``linefreq`` is the
    power-line frequency used for NPLC integration times.
    """

    def __init__(
        self,
        bench: MockBench,
        name: str = "smu",
        model: str = "2636B",
        channels: Sequence[str] = ("smua", "smub"),
        *,
        linefreq: float = 60.0,
        serial: str = "4242424",
        seed: int = 0,
        accuracy: bool = False,
    ):
        self.bench = bench
        self.name = name
        self.model = model
        self.serial = serial
        self.seed = int(seed)  # with the channel key: the unit's reading errors
        self.accuracy = bool(accuracy)  # readings off by the datasheet accuracy
        self.linefreq = float(linefreq)
        self.clock = bench.chip.clock
        self._lock = threading.RLock()
        self.status = ScpiStatus()  # the error queue (errorqueue.*) and *ESR?
        self.common = CommonCommands(
            f"Keithley Instruments Inc., Model {model}, {serial}, 4.0.5",
            reset=self.reset,
            status=self.status,
        )
        self.format_data = 1  # ASCII
        self.format_byteorder = 0  # NORMAL (big endian)
        self.ascii_precision = 0
        self._loading: dict[int | None, _Loading] = {}  # connection -> script being loaded
        self._out: list[bytes] = []
        self.timers = [Timer() for _ in range(TIMERS)]  # trigger.timer[1..8]
        self.smus = {ch: _Smu(self, ch) for ch in channels}
        self.globals: dict[str, Any] = {}
        self._interp = Interpreter(self.globals)
        self._timer_t0 = 0.0
        # the last lines received (for tests / debugging), bounded like any command log
        self.transcript: deque[str] = deque(maxlen=TRANSCRIPT_LINES)
        self._install_globals()

    # -- wire ---------------------------------------------------------------------------------
    def handle(self, line: str) -> str | bytes | None:
        """Run one received line; returns what the instrument prints (None: nothing)."""
        with self._lock:
            self.transcript.append(line)
            text = line.strip()
            session = current_session()
            loading = self._loading.get(session)
            if loading is not None:
                if text == "endscript":
                    del self._loading[session]
                    return self._end_script(loading)
                if len(loading.lines) >= SCRIPT_LINES_MAX:
                    del self._loading[session]
                    self._error(
                        -286,
                        f"TSP Runtime error: script longer than "
                        f"{SCRIPT_LINES_MAX} lines abandoned (no endscript)",
                    )
                    return None
                loading.lines.append(line)
                return None
            head = text.split(None, 1)
            if head and head[0] in ("loadandrunscript", "loadscript"):
                self._loading[session] = _Loading(
                    name=head[1].strip() if len(head) > 1 else None,
                    run=head[0] == "loadandrunscript",
                )
                return None
            if text == "abort":  # stops a running script: none runs between commands here
                return None
            if text.startswith("*"):
                header, _, arg = text.partition(" ")
                if header.upper() in ("*OPC?", "*OPC", "*WAI"):
                    self.wait_complete()  # operation complete: the sweeps have ended
                try:
                    return self.common(header, [arg.strip()] if arg.strip() else [])
                except ScpiError as exc:
                    self._error(exc.code, exc.message)
                    return None
            return self._run(text)

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue, oldest first: (code, message)."""
        return self.status.errors

    @property
    def loading_script(self) -> bool:
        """Whether any connection is in the middle of loading a script."""
        with self._lock:
            return bool(self._loading)

    def session_closed(self, session: int) -> None:
        """A connection ended: a script it was loading is discarded, neither compiled nor
        run; outputs, levels and loaded scripts stay as they are. The 2600B reference
        manual describes script loading per command interface and says nothing about a
        LAN connection that closes mid-load; we assume the half-received chunk dies with
        its connection (it cannot be completed by anyone else) and that the source state
        is untouched (the instrument does not switch its outputs off on a disconnect),
        so recovery must still put the outputs in their safe state itself."""
        with self._lock:
            if self._loading.pop(session, None) is not None:
                log.warning("%s: connection closed while loading a script: discarded", self.name)

    def _end_script(self, loading: _Loading) -> bytes | None:
        src = "\n".join(loading.lines)
        name, run = loading.name, loading.run
        if name:
            try:
                self.globals[name] = Script(name, src, self._interp)
            except TspError as exc:
                self._error(exc.code, str(exc))
                return None
        if not run:
            return None
        return self._run(src)

    def _run(self, src: str) -> bytes | None:
        self._out = []
        try:
            self._interp.run(src)
        except TspError as exc:
            self._error(exc.code, str(exc))
        except (ArithmeticError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            self._error(-286, f"TSP Runtime error: {exc}")
        out, self._out = self._out, []
        return b"".join(out) if out else None

    def _error(self, code: int, message: str) -> None:
        log.warning("%s: %s (code %d)", self.name, message, code)
        self.status.push(code, message)

    def queue_error(self, code: int, message: str) -> None:
        """Queue an error raised outside a command (a background sweep's point). Not under
        this emulator's lock: the point may run in another instrument's thread holding the
        bench lock, while this emulator's thread holds its own lock and waits for the
        bench's (the queue's append is atomic)."""
        self._error(code, message)

    def _emit(self, data: bytes) -> None:
        self._out.append(data)

    # -- instrument-wide actions ---------------------------------------------------------------
    def wait_complete(self) -> None:
        """``waitcomplete()``: every channel's running sweep runs to its end now."""
        with self._lock:
            for smu in self.smus.values():
                smu.trigger.wait()

    def reset(self) -> None:
        with self._lock:
            for smu in self.smus.values():
                smu.reset()
            self.timers[:] = [Timer() for _ in self.timers]  # reset() resets the timers too
            self.format_data, self.format_byteorder, self.ascii_precision = 1, 0, 0

    # -- globals -----------------------------------------------------------------------------
    def _install_globals(self) -> None:
        g = self.globals

        def setter(attr: str, choices: Sequence[float]) -> Callable[[Any], None]:
            def set_(v: Any) -> None:
                x = int(num(v))
                if x not in choices:
                    raise not_a_choice(x, tuple(choices), attr)
                setattr(self, attr, x)

            return set_

        def set_linefreq(v: Any) -> None:
            x = num(v)
            if x not in (50.0, 60.0):
                raise not_a_choice(x, (50, 60), "localnode.linefreq")
            self.linefreq = x

        fmt = Obj(
            "format",
            {
                "data": Prop(lambda: float(self.format_data), setter("format_data", (1, 2, 3))),
                "byteorder": Prop(
                    lambda: float(self.format_byteorder), setter("format_byteorder", (0, 1))
                ),
                "asciiprecision": Prop(
                    lambda: float(self.ascii_precision), setter("ascii_precision", tuple(range(17)))
                ),
                "ASCII": 1.0,
                "SREAL": 2.0,
                "REAL32": 2.0,
                "REAL": 3.0,
                "REAL64": 3.0,
                "NORMAL": 0.0,
                "BIGENDIAN": 0.0,
                "NETWORK": 0.0,
                "SWAPPED": 1.0,
                "LITTLEENDIAN": 1.0,
            },
        )
        localnode = Obj(
            "localnode",
            {
                "model": self.model,
                "serialno": self.serial,
                "revision": "4.0.5",
                "description": f"Keithley Instruments SMU {self.model} - {self.serial} (memhil mock)",
                "linefreq": Prop(lambda: self.linefreq, set_linefreq),
                "autolinefreq": Prop(lambda: False, lambda v: None),
                "prompts": Prop(lambda: 0.0, lambda v: None),
                "prompts4882": Prop(lambda: 0.0, lambda v: None),
                "showerrors": Prop(lambda: 0.0, lambda v: None),
            },
        )

        def err_next():
            error = self.status.pop()
            if error is None:
                return (0.0, "Queue Is Empty", 0.0, 0.0)
            code, msg = error
            return (float(code), msg, SEVERITY_RECOVERABLE, 0.0)

        errorqueue = Obj(
            "errorqueue",
            {
                "count": Prop(lambda: float(len(self.status.errors))),
                "next": Fn(err_next, "errorqueue.next"),
                "clear": Fn(lambda: self.status.errors.clear(), "errorqueue.clear"),
            },
        )

        def condition(smu: _Smu) -> Callable[[], float]:
            return lambda: float(smu.s.condition)

        instrument = Obj(
            "status.measurement.instrument",
            {
                ch: Obj(
                    f"status.measurement.instrument.{ch}",
                    {
                        "condition": Prop(condition(smu)),
                        "event": Prop(condition(smu)),
                        "enable": Prop(lambda: 0.0, lambda v: None),
                    },
                )
                for ch, smu in self.smus.items()
            },
        )

        def sweeping(weights: dict[str, float]) -> Callable[[], float]:
            return lambda: float(
                sum(w for ch, w in weights.items() if self.smus[ch].trigger.sweeping)
            )

        # status.operation.sweeping: SMUA bit B1 (2), SMUB B2 (4); the SWEEPING bit B3 (8)
        # of status.operation and of status.operation.instrument.smuX (2600B reference
        # manual, "status.operation.sweeping.*", "status.operation.instrument.smuX.*")
        sweep_bits = {ch: 2.0 ** (1 + k) for k, ch in enumerate(self.smus)}
        operation = Obj(
            "status.operation",
            {
                "condition": Prop(lambda: 8.0 if sweeping(sweep_bits)() else 0.0),
                "SWEEPING": 8.0,
                "SWE": 8.0,
                "sweeping": Obj(
                    "status.operation.sweeping",
                    {
                        "condition": Prop(sweeping(sweep_bits)),
                        "event": Prop(sweeping(sweep_bits)),
                        "enable": Prop(lambda: 6.0, lambda v: None),
                        **{ch.upper(): w for ch, w in sweep_bits.items()},
                    },
                ),
                "instrument": Obj(
                    "status.operation.instrument",
                    {
                        ch: Obj(
                            f"status.operation.instrument.{ch}",
                            {
                                "condition": Prop(sweeping({ch: 8.0})),
                                "SWEEPING": 8.0,
                                "SWE": 8.0,
                            },
                        )
                        for ch in self.smus
                    },
                ),
            },
        )
        status = Obj(
            "status",
            {
                "operation": operation,
                "measurement": Obj(
                    "status.measurement",
                    {
                        "instrument": instrument,
                        "condition": Prop(
                            lambda: float(any(s.s.condition for s in self.smus.values()))
                        ),
                    },
                ),
                "condition": Prop(lambda: 0.0),
                "reset": Fn(lambda: None, "status.reset"),
            },
        )
        display = Obj(
            "display",
            {
                "clear": Fn(lambda: None, "display.clear"),
                "settext": Fn(lambda text="": None, "display.settext"),
                "sendkey": Fn(lambda key=0: None, "display.sendkey"),
                "screen": Prop(lambda: 2.0, lambda v: None),
                "SMUA": 0.0,
                "SMUB": 1.0,
                "SMUA_SMUB": 2.0,
                "USER": 3.0,
            },
        )
        timer = Obj(
            "timer",
            {
                "reset": Fn(lambda: setattr(self, "_timer_t0", self.clock.now()), "timer.reset"),
                "measure": Obj(
                    "timer.measure",
                    {"t": Fn(lambda: self.clock.now() - self._timer_t0, "timer.measure.t")},
                ),
            },
        )
        g.update(self.smus_objs())
        g.update(
            {
                "format": fmt,
                "trigger": timers_obj(self.timers),
                "localnode": localnode,
                "errorqueue": errorqueue,
                "status": status,
                "display": display,
                "timer": timer,
                "beeper": Obj(
                    "beeper",
                    {
                        "beep": Fn(lambda *a: None, "beeper.beep"),
                        "enable": Prop(lambda: 0.0, lambda v: None),
                    },
                ),
                "print": Fn(self._print, "print"),
                "printbuffer": Fn(self._printbuffer, "printbuffer"),
                "printnumber": Fn(self._printnumber, "printnumber"),
                "delay": Fn(self._delay, "delay"),
                "waitcomplete": Fn(lambda *a: self.wait_complete(), "waitcomplete"),
                "opc": Fn(lambda: self.wait_complete(), "opc"),
                "reset": Fn(lambda *a: self.reset(), "reset"),
            }
        )
        g.update(standard_library())

    def smus_objs(self) -> dict[str, Obj]:
        return {ch: smu.obj for ch, smu in self.smus.items()}

    def _print(self, *args: Any) -> None:
        self._emit(("\t".join(tostring(a, self.ascii_precision) for a in args) + "\n").encode())

    def _delay(self, seconds: Any = 0.0) -> None:
        t = num(seconds)
        if t < 0:
            raise beyond(t, 0.0, None, "delay()")
        with self.bench.lock:
            for smu in self.smus.values():
                smu.operating_point()
            self.bench.hold(t)
            for smu in self.smus.values():
                smu.operating_point()

    def _pack(self, values: Sequence[float]) -> bytes:
        arr = np.asarray(values, dtype=np.float64)
        order = "<" if self.format_byteorder == 1 else ">"
        if self.format_data == 2:
            f32 = arr.astype(np.float32)
            # round towards zero: a reading clamped at a limit never exceeds it after rounding
            over = np.abs(f32.astype(np.float64)) > np.abs(arr)
            f32[over] = np.nextafter(f32[over], np.float32(0.0))
            return f32.astype(order + "f4").tobytes()
        return arr.astype(order + "f8").tobytes()

    def _printnumber(self, *values: Any) -> None:
        nums = [num(v) for v in values]
        if self.format_data == 1:
            self._emit(
                (", ".join(fmt_number(x, self.ascii_precision) for x in nums) + "\n").encode()
            )
        else:
            self._emit(b"#0" + self._pack(nums) + b"\n")

    def _printbuffer(self, start: Any, end: Any, *fields: Any) -> None:
        a, b = int(num(start)), int(num(end))
        if not fields:
            raise TspError("TSP Runtime error: printbuffer needs a buffer")
        cols = []
        for f in fields:
            if not isinstance(f, _Field):
                raise TspError("TSP Runtime error: bad argument to printbuffer (buffer expected)")
            vals = f.values
            if not (1 <= a <= b <= len(vals)):
                raise TspError(
                    f"TSP Runtime error: printbuffer index out of range ({a}..{b} of {len(vals)})",
                    -1113,  # the emulator's own number, as -1003 above
                )
            cols.append(vals[a - 1 : b])
        values = [col[k] for k in range(b - a + 1) for col in cols]  # interleaved per index
        if self.format_data == 1:
            self._emit(
                (", ".join(fmt_number(x, self.ascii_precision) for x in values) + "\n").encode()
            )
        else:
            self._emit(b"#0" + self._pack(values) + b"\n")


__all__ = [
    "BUFFER_STATUS_COMPLIANCE",
    "CONDITION_CURRENT_LIMIT",
    "CONDITION_VOLTAGE_LIMIT",
    "SCRIPT_LINES_MAX",
    "Keithley2600Emulator",
    "TspError",
]
