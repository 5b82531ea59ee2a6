"""The 2600B trigger model of one SMU channel (``smuX.trigger.*``) and the instrument's
timers (``trigger.timer[N]``), as lab sweep scripts use them (2600B reference manual,
"Triggering" and the "Sweep operation" examples: ``trigger.source.linearv/logv/listv``,
``trigger.source.limiti``, ``trigger.measure.iv(buf1, buf2)``, ``endpulse``/``endsweep``
actions, ``count``, ``arm.count``, ``initiate()``, ``waitcomplete()``, pulsed sweeps timed
by ``trigger.timer[1].delay`` as the endpulse stimulus).

``initiate()`` starts the arm and trigger cycles and returns at once, as on a 2600B; the
sweep then runs in the background of the chip's time (a background job of the bench,
``memhil.mock_hw.bench``): its points take the chip time that passes, whether a realtime
lab catches up with the wall clock before a command, a script ``delay()``s, or another
instrument measures. Meanwhile ``status.operation.sweeping`` has the channel's bit set
and its buffers fill point by point (``bufferVar.n`` grows); ``waitcomplete()``,
``opc()``, ``*OPC?`` and ``*WAI`` run the rest of it at once (with the lab's latency, in
wall time too); ``smuX.abort()`` stops it before its next point. In a ``virtual`` lab no
time passes between commands, so a sweep progresses only through instrument operations:
a script polls it with ``delay()`` or ends it with ``waitcomplete()``.

Per point: the source level of the sweep list (the list repeats when ``count`` exceeds
it), the source delay, the measurement (``measure.count`` readings into the buffers, which
are cleared at ``initiate()`` unless ``appendmode``), the pulse held until the endpulse
timer's delay, then the endpulse action (``SOURCE_IDLE``: back to the idle level, the
level set before the sweep; ``SOURCE_HOLD``: stay); a source-stimulus timer's delay is
the point period. After the sweep, ``endsweep`` returns to the idle level or holds the
last step's level (which ``smuX.source.levelv`` then reads: our assumption).
Event IDs are our numbers (a script uses them only through the names); the stimulus of
arm and measure events is stored, not modelled. Error codes from the 2600 error list
(``memhil.mock_hw.tsp.errors``): 1101/1102 for a number beyond its bounds, -222 for a
value not among the allowed ones, 5059 for a sweep started with the source action enabled
and no source values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memhil.mock_hw.tsp import Fn, Obj, Prop, TspError, num
from memhil.mock_hw.tsp.errors import (
    PARAMETER_DATA_OUT_OF_RANGE,
    SETTINGS_CONFLICT,
    TRIGGER_SOURCE_UNCONFIGURED,
    beyond,
    not_a_choice,
)
from memhil.mock_hw.tsp.values import LuaTable

if TYPE_CHECKING:
    from memhil.mock_hw.emulators.k2600 import _Smu

# smuX.trigger.* event IDs (ours: unique per channel, nonzero)
_EVENTS = (
    "ARMED",
    "SOURCE_COMPLETE",
    "MEASURE_COMPLETE",
    "PULSE_COMPLETE",
    "SWEEP_COMPLETE",
    "IDLE",
)
#: trigger.timer[N].EVENT_ID: 100 + N (ours)
TIMER_EVENT_BASE = 100
TIMERS = 8  # the 2600B has eight timers
SOURCE_IDLE, SOURCE_HOLD = 0, 1


def _int_in(value: Any, choices: tuple[int, ...], what: str) -> int:
    x = int(num(value))
    if x not in choices:
        raise not_a_choice(x, choices, what)
    return x


@dataclass
class Timer:
    """``trigger.timer[N]``: its delay is a pulse width (endpulse stimulus) or a period
    (source stimulus)."""

    delay: float = 10e-6
    count: int = 1
    passthrough: int = 0
    stimulus: float = 0.0


@dataclass
class TriggerState:
    """The trigger model settings of one channel (defaults as after ``smuX.reset()``)."""

    source_action: int = 0
    source_kind: str = ""  # "v" or "i" once a sweep is configured
    source_values: list[float] = field(default_factory=list)
    source_limitv: float | None = None  # None: the source's own limit during the sweep
    source_limiti: float | None = None
    source_stimulus: float = 0.0
    measure_action: int = 0
    measure_kind: str = ""  # "i", "v", "r", "p", "iv"
    measure_buffers: tuple[Any, Any] = (None, None)
    measure_stimulus: float = 0.0
    endpulse_action: int = SOURCE_IDLE
    endpulse_stimulus: float = 0.0
    endsweep_action: int = SOURCE_IDLE
    count: int = 1
    arm_count: int = 1
    arm_stimulus: float = 0.0
    runs: int = 0  # completed initiate() calls (for tests)


class TriggerModel:
    """``smuX.trigger`` of one channel, run against that channel's source and measure."""

    def __init__(self, smu: _Smu, timers: list[Timer]):
        self.smu = smu
        self.timers = timers
        self.t = TriggerState()
        self._run: _SweepRun | None = None  # the running sweep, a bench background job
        base = 1000 * (1 + "abcd".find(smu.channel[-1]))  # smua: 1001.., smub: 2001..
        self.event_ids = {name: float(base + k + 1) for k, name in enumerate(_EVENTS)}

    def reset(self) -> None:
        self.abort()
        runs = self.t.runs
        self.t = TriggerState(runs=runs)

    # -- configuration --------------------------------------------------------------------
    def _sweep(self, kind: str, values: list[float]) -> None:
        limit = self.smu.table.source_v[-1] if kind == "v" else self.smu.table.source_i[-1]
        bad = [x for x in values if not math.isfinite(x) or abs(x) > limit]
        if bad:
            raise beyond(abs(bad[0]), None, limit, f"{self.smu.channel}.trigger.source")
        self.t.source_kind, self.t.source_values = kind, values

    def _linear(self, kind: str) -> Fn:
        def fn(start: Any, stop: Any, points: Any) -> None:
            a, b, n = num(start), num(stop), int(num(points))
            if n < 1:
                raise beyond(n, 1, None, "sweep points")
            self._sweep(kind, [a + k * (b - a) / (n - 1) if n > 1 else a for k in range(n)])

        return Fn(fn, f"trigger.source.linear{kind}")

    def _log(self, kind: str) -> Fn:
        def fn(start: Any, stop: Any, points: Any, asymptote: Any = 0.0) -> None:
            a, b, n, c = num(start), num(stop), int(num(points)), num(asymptote)
            if n < 1 or (a - c) * (b - c) <= 0:
                raise TspError(
                    "Parameter data out of range: a log sweep needs points >= 1 and start, "
                    "stop on one side of the asymptote",
                    PARAMETER_DATA_OUT_OF_RANGE,
                )
            la, lb = math.log10(abs(a - c)), math.log10(abs(b - c))
            sign = 1.0 if a - c > 0 else -1.0
            vals = [
                c + sign * 10 ** (la + k * (lb - la) / (n - 1) if n > 1 else la) for k in range(n)
            ]
            self._sweep(kind, vals)

        return Fn(fn, f"trigger.source.log{kind}")

    def _list(self, kind: str) -> Fn:
        def fn(values: Any) -> None:
            if not isinstance(values, LuaTable) or len(values) == 0:
                raise TspError("TSP Runtime error: bad argument (a table of levels expected)")
            self._sweep(kind, [num(values.tsp_get(k + 1)) for k in range(len(values))])

        return Fn(fn, f"trigger.source.list{kind}")

    def _measure_fn(self, kind: str) -> Fn:
        def fn(buf: Any = None, buf2: Any = None) -> None:
            for b in (buf, buf2):
                self.smu.resolve_buffer(b)  # a bad argument fails here, not at initiate()
            self.t.measure_kind, self.t.measure_buffers = kind, (buf, buf2)

        return Fn(fn, f"trigger.measure.{kind}")

    def _attr(self, attr: str, parse: Callable[[Any], Any]) -> Prop:
        def get() -> float:
            v = getattr(self.t, attr)
            return float(v) if v is not None else 0.0

        return Prop(get, lambda v: setattr(self.t, attr, parse(v)))

    def obj(self) -> Obj:
        ch = self.smu.channel
        act = lambda what: lambda v: _int_in(v, (0, 1, 2), f"{ch}.trigger.{what}")
        end = lambda what: lambda v: _int_in(v, (0, 1), f"{ch}.trigger.{what}")

        def count(what: str) -> Callable[[Any], int]:
            def parse(v: Any) -> int:
                x = int(num(v))
                if not 1 <= x <= 2**31 - 1:  # 0 (infinite) is not emulated: it never ends
                    raise beyond(x, 1, 2**31 - 1, f"{ch}.trigger.{what} (1 .. 2^31-1 here)")
                return x

            return parse

        def limit(kind: str) -> Callable[[Any], float | None]:
            lo = self.smu.table.limit_v_min if kind == "v" else self.smu.table.limit_i_min
            hi = self.smu.table.source_v[-1] if kind == "v" else self.smu.table.source_i[-1]

            def parse(v: Any) -> float | None:
                x = num(v)
                if x == 0:  # smuX.LIMIT_AUTO: the source's own limit
                    return None
                if not lo <= x <= hi:
                    raise beyond(x, lo, hi, f"{ch}.trigger.source.limit{kind}")
                return x

            return parse

        stim = float
        return Obj(
            f"{ch}.trigger",
            {
                "source": Obj(
                    f"{ch}.trigger.source",
                    {
                        "action": self._attr("source_action", act("source.action")),
                        "linearv": self._linear("v"),
                        "lineari": self._linear("i"),
                        "logv": self._log("v"),
                        "logi": self._log("i"),
                        "listv": self._list("v"),
                        "listi": self._list("i"),
                        "limitv": self._attr("source_limitv", limit("v")),
                        "limiti": self._attr("source_limiti", limit("i")),
                        "stimulus": self._attr("source_stimulus", stim),
                    },
                ),
                "measure": Obj(
                    f"{ch}.trigger.measure",
                    {
                        "action": self._attr("measure_action", act("measure.action")),
                        "stimulus": self._attr("measure_stimulus", stim),
                        **{k: self._measure_fn(k) for k in ("i", "v", "r", "p", "iv")},
                    },
                ),
                "endpulse": Obj(
                    f"{ch}.trigger.endpulse",
                    {
                        "action": self._attr("endpulse_action", end("endpulse.action")),
                        "stimulus": self._attr("endpulse_stimulus", stim),
                    },
                ),
                "endsweep": Obj(
                    f"{ch}.trigger.endsweep",
                    {"action": self._attr("endsweep_action", end("endsweep.action"))},
                ),
                "arm": Obj(
                    f"{ch}.trigger.arm",
                    {
                        "count": self._attr("arm_count", count("arm.count")),
                        "stimulus": self._attr("arm_stimulus", stim),
                        "set": Fn(lambda: None, "trigger.arm.set"),
                    },
                ),
                "count": self._attr("count", count("count")),
                "initiate": Fn(self.initiate, "trigger.initiate"),
                "abort": Fn(self.abort, "trigger.abort"),
                **{f"{name}_EVENT_ID": eid for name, eid in self.event_ids.items()},
            },
        )

    # -- running ---------------------------------------------------------------------------
    def _timer_delay(self, stimulus: float) -> float | None:
        n = int(stimulus) - TIMER_EVENT_BASE
        return self.timers[n - 1].delay if 1 <= n <= len(self.timers) else None

    def _hold_until(self, t0: float, duration: float | None) -> None:
        """Hold the present drive until ``duration`` after ``t0`` (None: no wait)."""
        emu = self.smu.emu
        if duration is not None and emu.clock.now() - t0 < duration:
            with emu.bench.lock:
                self.smu.operating_point()
                emu.bench.hold(duration - (emu.clock.now() - t0))

    @property
    def sweeping(self) -> bool:
        """Whether a sweep started by ``initiate()`` is still running."""
        return self._run is not None

    def initiate(self) -> None:
        """Start the arm and trigger cycles in the background and return at once (see
        the module docstring); -221 "Settings conflict" while a sweep still runs."""
        smu, t = self.smu, self.t
        emu = smu.emu
        if self._run is not None:
            raise TspError(f"Settings conflict: {smu.channel} is sweeping", SETTINGS_CONFLICT)
        if t.source_action and not t.source_values:
            raise TspError(
                f"TSP Runtime error: {smu.channel}.trigger.source.action is enabled but no "
                f"sweep is configured (linearv/logv/listv)",
                TRIGGER_SOURCE_UNCONFIGURED,
            )
        v_mode = t.source_kind != "i"
        level_attr, limit_attr = ("levelv", "limiti") if v_mode else ("leveli", "limitv")
        run = _SweepRun(
            model=self,
            level_attr=level_attr,
            limit_attr=limit_attr,
            idle=getattr(smu.s, level_attr),
            own_limit=getattr(smu.s, limit_attr),
            sweep_limit=t.source_limiti if v_mode else t.source_limitv,
            buffers=(
                smu.resolve_buffer(t.measure_buffers[0]),
                smu.resolve_buffer(t.measure_buffers[1]),
            ),
            width=self._timer_delay(t.endpulse_stimulus),
            period=self._timer_delay(t.source_stimulus),
        )
        for b in run.buffers:
            if b is not None and not b.appendmode:
                b.clear(emu.clock.now())
        if t.source_action and run.sweep_limit is not None:
            smu.obj.tsp_get("source").tsp_set(limit_attr, run.sweep_limit)
        self._run = run
        emu.bench.start_job(run)

    def wait(self) -> None:
        """Run the sweep (if any) to its end now: ``waitcomplete()``."""
        if self._run is not None:
            self.smu.emu.bench.finish_job(self._run)

    def abort(self) -> None:
        """``smuX.abort()``: stop the sweep before its next point; the source limit and
        the endsweep action are applied as at a sweep's end (our assumption)."""
        run = self._run
        if run is not None:
            self.smu.emu.bench.cancel_job(run)
            run.end()


@dataclass(eq=False)  # a job is itself: the bench finds it by identity
class _SweepRun:
    """One ``initiate()``'s arm and trigger cycles, a background job of the bench: each
    ``step`` is one point (source, delay, measure, pulse width, endpulse, period)."""

    model: TriggerModel
    level_attr: str
    limit_attr: str
    idle: float
    own_limit: float
    sweep_limit: float | None
    buffers: tuple[Any, Any]
    width: float | None
    period: float | None
    k: int = 0  # points done

    def step(self) -> bool:
        """One point; an error ends the sweep and goes to this instrument's error queue
        (the hold that ran the point may be another instrument's)."""
        m, t = self.model, self.model.t
        if self.k >= t.arm_count * t.count:
            self.end()
            return False
        try:
            self._point()
        except TspError as exc:
            m.smu.emu.queue_error(exc.code, str(exc))
            self.end()
            return False
        return True

    def _point(self) -> None:
        m, t = self.model, self.model.t
        smu, bench = m.smu, m.smu.emu.bench
        source = smu.obj.tsp_get("source")
        t0 = smu.emu.clock.now()
        if t.source_action:
            source.tsp_set(self.level_attr, t.source_values[self.k % len(t.source_values)])
        self.k += 1
        if smu.s.source_delay > 0:
            with bench.lock:
                smu.operating_point()
                bench.hold(smu.s.source_delay)
        if t.measure_action and t.measure_kind:
            ibuf, vbuf = self.buffers
            smu.measure(t.measure_kind, ibuf, vbuf, clear=False)
        m._hold_until(t0, self.width)  # the pulse lasts the endpulse timer
        if t.source_action and t.endpulse_action == SOURCE_IDLE:
            source.tsp_set(self.level_attr, self.idle)
        m._hold_until(t0, self.period)  # the next point: a period after this one

    def end(self) -> None:
        """Restore the source's own limit, apply the endsweep action, leave the model."""
        m, t = self.model, self.model.t
        if m._run is not self:
            return
        m._run = None
        source = m.smu.obj.tsp_get("source")
        if t.source_action and self.sweep_limit is not None:
            source.tsp_set(self.limit_attr, self.own_limit)
        if t.source_action and t.endsweep_action == SOURCE_IDLE:
            source.tsp_set(self.level_attr, self.idle)
        elif t.source_action and self.k:  # SOURCE_HOLD: the last step's level stays
            source.tsp_set(self.level_attr, t.source_values[(self.k - 1) % len(t.source_values)])
        t.runs += 1


def timers_obj(timers: list[Timer]) -> Obj:
    """The global ``trigger`` table: ``trigger.timer[N]`` (delay, count, passthrough,
    stimulus, EVENT_ID, reset) and the no-op ``trigger.clear()``/``trigger.wait()``."""

    def timer_obj(n: int, tm: Timer) -> Obj:
        def setter(attr: str, lo: float, hi: float) -> Callable[[Any], None]:
            def set_(v: Any) -> None:
                x = num(v)
                if not lo <= x <= hi:
                    raise beyond(x, lo, hi, f"trigger.timer[{n}].{attr}")
                setattr(tm, attr, type(getattr(tm, attr))(x))

            return set_

        return Obj(
            f"trigger.timer[{n}]",
            {
                "delay": Prop(lambda: tm.delay, setter("delay", 1e-6, 100e3)),
                "count": Prop(lambda: float(tm.count), setter("count", 0, 1048575)),
                "passthrough": Prop(lambda: float(tm.passthrough), setter("passthrough", 0, 1)),
                "stimulus": Prop(lambda: tm.stimulus, setter("stimulus", 0, 1e9)),
                "EVENT_ID": float(TIMER_EVENT_BASE + n),
                "reset": Fn(lambda: timers.__setitem__(n - 1, Timer()), "timer.reset"),
            },
        )

    return Obj(
        "trigger",
        {
            "timer": _TimerTable(timers, timer_obj),
            "clear": Fn(lambda: None, "trigger.clear"),
            "wait": Fn(lambda timeout=0.0: False, "trigger.wait"),
            "EVENT_ID": 99.0,
        },
    )


class _TimerTable(LuaTable):
    """``trigger.timer``: index N (1..8) is that timer's table, rebuilt on each access
    so that ``trigger.timer[N].reset()`` is seen."""

    def __init__(self, timers: list[Timer], make: Callable[[int, Timer], Obj]):
        super().__init__()
        self._timers, self._make = timers, make

    def tsp_get(self, key: Any) -> Any:
        n = int(num(key))
        if not 1 <= n <= len(self._timers):
            raise TspError(f"TSP Runtime error: trigger.timer[{n}] does not exist (1..8)")
        return self._make(n, self._timers[n - 1])

    def tsp_set(self, key: Any, value: Any) -> None:
        raise TspError("TSP Runtime error: trigger.timer is read-only")

    def __len__(self) -> int:
        return len(self._timers)
