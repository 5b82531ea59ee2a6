"""The safety guard: the ONE place every source, pulse, relay and prober-move request passes.

Every instrument a ``Station`` builds is wrapped here before anything else sees it. A
refused request raises ``LimitError`` (or its subclass ``InterlockError`` for refusals
that depend on state rather than on a value) and nothing is sent to the instrument.

Rules (``Limits`` from the Station YAML):

``GuardedSourceMeter``
  * the source mode must be set (``set_source_mode``) before compliance, level, output-on,
    sweep or pulse; the mode cannot change while the output is on;
  * ``set_compliance``: 0 < limit <= ``compliance_max_a`` (voltage mode) or
    0 < limit <= ``v_pulse_max_v`` (current mode: the compliance is a voltage);
  * ``set_level``: |V| <= ``v_pulse_max_v`` (voltage mode), |I| <= ``compliance_max_a``
    (current mode); refused while the output is on without a compliance;
  * ``output(True)``, ``sweep`` and ``pulse`` need a compliance set on this channel since
    the last source-mode change (compliance before output-on);
  * ``sweep`` checks every point before anything is sent;
  * ``pulse`` checks level and base as ``set_level`` does, then width, count, period
    (<= ``period_max_s``) and worst-case energy, the time at base included (at the
    channel's compliance; in current mode |I| * V_compliance); afterwards the output is
    switched off and that is confirmed by a query;
  * ``measure`` at a non-zero level: |level| * compliance * nplc / 50 Hz within
    ``energy_max_j`` (nplc as set through the guard, else ``NPLC_MAX``);
  * ``output_is_on``, ``in_compliance``, ``output(False)``, ``set_nplc`` (> 0) and
    ``safe_state`` pass.
``GuardedSwitchMatrix``: forbidden (port, line) relays never close; a ``connect_many``
  containing one closes nothing.
``GuardedProber``: no ``step_to`` while in contact (asked of the prober every time).
``GuardedArrayIO``: read voltages within ``v_read_max_v``; pulses checked as above at
  their compliance (``compliance_default_a`` when None), the energy per cell summed over
  the row x column blocks the mask is sent as (selected at |V|, half-selected at |V|/2).

Every value is compared with ``memhil.core.limits.exceeds``, as the Backend contract does.

``safe_session(station)`` puts everything in its safe state when the block ends, however
it ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memhil.core.errors import LimitError
from memhil.core.limits import (
    LINE_FREQUENCY_HZ,
    NPLC_MAX,
    Limits,
    exceeds,
    row_column_blocks,
    v_half_energy_j,
    worst_case_energy_j,
)
from memhil.instruments.capabilities import (
    ArrayIO,
    Measurement,
    Prober,
    SourceMeter,
    SourceMode,
    SweepResult,
    SwitchMatrix,
)

log = logging.getLogger(__name__)

_MODES = ("voltage", "current")


class InterlockError(LimitError):
    """A request refused because of the instrument's state (no compliance set, prober in
    contact, forbidden relay), not because a value is too large."""

    def __init__(
        self,
        message: str,
        quantity: str = "interlock",
        value: float = math.nan,
        limit: float = math.nan,
        unit: str = "",
    ):
        self.quantity = quantity
        self.value = value
        self.limit = limit
        self.unit = unit
        ValueError.__init__(self, message)


@dataclass(frozen=True)
class SafeStateEntry:
    """One component's safe state: ``state`` is what its confirming query reported
    (``confirmed``) or what is unknown about it, with the ``error`` that prevented it."""

    component: str
    state: str
    confirmed: bool
    error: BaseException | None = None

    def line(self) -> str:
        if self.confirmed:
            return f"{self.component}: {self.state} (confirmed)"
        why = f" ({type(self.error).__name__}: {self.error})" if self.error is not None else ""
        return f"{self.component}: NOT CONFIRMED, {self.state}{why}"


@dataclass(frozen=True)
class SafeStateReport:
    """The safe state of a station, per component, as its confirming queries reported it
    (SMU output state, relays, array-board acknowledgement, prober chuck height)."""

    entries: tuple[SafeStateEntry, ...]

    @property
    def confirmed(self) -> bool:
        return all(e.confirmed for e in self.entries)

    @property
    def unconfirmed(self) -> list[SafeStateEntry]:
        return [e for e in self.entries if not e.confirmed]

    def lines(self) -> list[str]:
        return [e.line() for e in self.entries]

    def __str__(self) -> str:
        return "; ".join(self.lines()) or "no instrument"


class SafeStateError(RuntimeError):
    """The safe state of one or more components was not confirmed. ``report`` holds every
    component's state; ``errors`` every (component, exception)."""

    def __init__(
        self, errors: Sequence[tuple[str, BaseException]], report: SafeStateReport | None = None
    ):
        self.errors = list(errors)
        self.report = report or SafeStateReport(
            tuple(SafeStateEntry(who, "state unknown", False, e) for who, e in self.errors)
        )
        names = ", ".join(e.component for e in self.report.unconfirmed)
        super().__init__(
            f"safe state NOT confirmed for {names}; the bench may not be safe: {self.report}"
        )


# -- value checks ----------------------------------------------------------------------


def _number(value: Any, quantity: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LimitError(f"{quantity} (not a real number: {value!r})", math.nan, math.nan)
    return float(value)


def _check_abs(value: Any, limit: float, quantity: str, unit: str) -> float:
    """|value| <= limit by ``limits.exceeds`` (the backend's comparison): NaN and inf are
    refused."""
    v = _number(value, quantity)
    if exceeds(abs(v), limit):
        raise LimitError(quantity, abs(v) if v == v else v, limit, unit)
    return v


def _check_positive_upto(value: Any, limit: float, quantity: str, unit: str) -> float:
    v = _number(value, quantity)
    if not v > 0:
        raise LimitError(f"{quantity} (must be > 0)", v, 0.0, unit)
    if exceeds(v, limit):
        raise LimitError(quantity, v, limit, unit)
    return v


def _check_count(count: Any, limits: Limits) -> int:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral):
        raise LimitError(f"pulse count (not an integer: {count!r})", math.nan, math.nan)
    count = int(count)
    if count < 0:
        raise LimitError("pulse count (must be >= 0)", count, 0)
    if count > limits.count_max:
        raise LimitError("pulse count", count, limits.count_max)
    return count


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _check_pulse_rules(
    limits: Limits, v_abs: float, width_s: Any, count: int, current_a: float
) -> None:
    """Width, count and worst-case energy by ``Limits.check_pulse`` (0-dim tensors), for a
    request whose amplitude was already checked strictly by the caller."""
    width = _number(width_s, "pulse width")
    limits.check_pulse(
        _scalar(v_abs), _scalar(width), _scalar(float(count)), _scalar(current_a), None
    )


# -- SMU ---------------------------------------------------------------------------------


def _resync(inner: Any) -> None:
    """Pass ``resync`` through to the wrapped adapter: it restores the connection and
    changes no source, relay or chuck state, so the guard has nothing to check."""
    fn = getattr(inner, "resync", None)
    if fn is None:
        raise NotImplementedError(f"{type(inner).__name__} cannot resync its connection")
    fn()


class GuardedSourceMeter:
    """A ``SourceMeter`` that checks every request against ``limits`` before forwarding it."""

    def __init__(self, smu: SourceMeter, limits: Limits):
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, got {type(limits).__name__}")
        self._smu = smu
        self._limits = limits
        self._mode: str | None = None
        self._compliance: float | None = None  # set since the last source-mode change
        self._level: float | None = None  # last level sent through the guard (None: unknown)
        self._nplc: float | None = None  # integration time set through the guard
        self.name = getattr(smu, "name", "smu")

    def resync(self) -> None:
        _resync(self._smu)

    # -- state the guard tracks ----------------------------------------------------------
    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def source_mode(self) -> str | None:
        """The mode set through this guard (None until ``set_source_mode``)."""
        return self._mode

    @property
    def compliance(self) -> float | None:
        """The compliance set since the last source-mode change, or None."""
        return self._compliance

    def _need_mode(self, what: str) -> str:
        if self._mode is None:
            raise InterlockError(
                f"{self.name}: {what} refused: set the source mode first "
                f"(set_source_mode('voltage'|'current'))",
                "source mode",
            )
        return self._mode

    def _need_compliance(self, what: str) -> float:
        self._need_mode(what)
        if self._compliance is None:
            raise InterlockError(
                f"{self.name}: {what} refused: no compliance set on this "
                f"channel since the source mode was set (compliance before "
                f"output on)",
                "compliance",
            )
        return self._compliance

    def _check_level(self, value: Any, what: str = "source level") -> float:
        mode = self._need_mode(what)
        if mode == "voltage":
            return _check_abs(value, self._limits.v_pulse_max_v, f"{what} |V|", "V")
        return _check_abs(value, self._limits.compliance_max_a, f"{what} |I|", "A")

    # -- SourceMeter -----------------------------------------------------------------------
    def set_source_mode(self, mode: SourceMode) -> None:
        if mode not in _MODES:
            raise InterlockError(
                f"{self.name}: source mode must be one of {list(_MODES)}, got {mode!r}",
                "source mode",
            )
        if self._smu.output_is_on():
            raise InterlockError(
                f"{self.name}: source mode change refused while the output "
                f"is on (turn it off first)",
                "source mode",
            )
        self._smu.set_source_mode(mode)
        self._mode = mode
        self._compliance = None
        self._level = None

    def set_compliance(self, limit: float) -> None:
        mode = self._need_mode("set_compliance")
        if mode == "voltage":
            value = _check_positive_upto(
                limit, self._limits.compliance_max_a, "current compliance", "A"
            )
        else:
            value = _check_positive_upto(
                limit, self._limits.v_pulse_max_v, "voltage compliance", "V"
            )
        self._smu.set_compliance(value)
        self._compliance = value

    def set_nplc(self, nplc: float) -> None:
        n = _number(nplc, "nplc")
        if not n > 0:
            raise LimitError("nplc (must be > 0)", n, 0.0)
        self._smu.set_nplc(n)
        self._nplc = n

    def set_level(self, value: float) -> None:
        level = self._check_level(value)
        if self._compliance is None and self._smu.output_is_on():
            self._need_compliance("set_level with the output on")
        self._level = None  # unknown while the command is in flight
        self._smu.set_level(level)
        self._level = level

    def output(self, on: bool) -> None:
        if on:
            self._need_compliance("output on")
            self._smu.output(True)
        else:
            self._smu.output(False)

    def output_is_on(self) -> bool:
        return self._smu.output_is_on()

    def measure(self) -> Measurement:
        """Measure; with ``energy_max_j`` the energy of one measurement, |level| x
        compliance x nplc / ``LINE_FREQUENCY_HZ``, must be within it (a DC level held for
        the integration time is a pulse of that width)."""
        self._check_measurement_energy()
        return self._smu.measure()

    def _check_measurement_energy(self) -> None:
        lim = self._limits
        if lim.energy_max_j is None:
            return
        worst = lim.v_pulse_max_v if self._mode != "current" else lim.compliance_max_a
        level = abs(self._level) if self._level is not None else worst
        if level == 0 or not self._smu.output_is_on():  # asked: no level reaches the DUT
            return
        nplc = NPLC_MAX if self._nplc is None else self._nplc  # unknown: the longest
        if self._mode == "current":  # the full current at the voltage compliance
            v, i = (self._compliance or lim.v_pulse_max_v), level
        else:
            v, i = level, (self._compliance or lim.compliance_max_a)
        lim.check_energy(
            _scalar(worst_case_energy_j(v, i, nplc / LINE_FREQUENCY_HZ, 1)),
            quantity=f"{self.name}: worst-case energy of one measurement "
            f"(|level| x compliance x nplc / {LINE_FREQUENCY_HZ:g} Hz)",
        )

    def sweep(self, start: float, stop: float, points: int) -> SweepResult:
        self._check_level(start, "sweep start")
        self._check_level(stop, "sweep stop")
        if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 1:
            raise LimitError(f"sweep points (must be an integer >= 1, got {points!r})", math.nan, 1)
        self._need_compliance("sweep")
        for value in np.linspace(float(start), float(stop), int(points)):
            self._check_level(float(value), "sweep point")
        return self._smu.sweep(float(start), float(stop), int(points))

    def pulse(
        self,
        level: float,
        width_s: float,
        count: int = 1,
        *,
        base: float = 0.0,
        period_s: float | None = None,
    ) -> None:
        """Check, pulse, then switch the output off and confirm it by a query (the adapter
        leaves it on at ``base``). The energy counts the time at base too: per pulse
        |level| x width + |base| x (period - width), period None meaning 2 x width (the
        adapters' default), times the compliance and ``count``."""
        lvl = self._check_level(level, "pulse level")
        b = self._check_level(base, "pulse base")
        n = _check_count(count, self._limits)
        compliance = self._need_compliance("pulse")
        width = _number(width_s, "pulse width")
        period = 2.0 * width if period_s is None else _number(period_s, "pulse period")
        if not period >= width:
            raise InterlockError(
                f"{self.name}: pulse period {period:.6g} s is shorter than the width {width:.6g} s",
                "pulse period",
                period,
                width,
                "s",
            )
        if exceeds(period, self._limits.period_max_s):
            raise LimitError("pulse period", period, self._limits.period_max_s, "s")
        if self._mode == "voltage":
            v_lvl, v_b, current = abs(lvl), abs(b), compliance
        else:  # worst case: the full current at the voltage compliance
            v_lvl = v_b = compliance
            current = max(abs(lvl), abs(b)) or self._limits.compliance_default_a
        _check_pulse_rules(self._limits, max(v_lvl, v_b), width, n, current)
        if self._mode == "current":
            at_level, at_base = abs(lvl) * width, abs(b) * (period - width)
            energy = worst_case_energy_j(compliance, 1.0, at_level + at_base, n)
        else:
            energy = worst_case_energy_j(1.0, current, v_lvl * width + v_b * (period - width), n)
        self._limits.check_energy(
            _scalar(energy), quantity=f"{self.name}: worst-case pulse energy (level and base time)"
        )
        if n == 0:
            return
        self._level = None
        self._smu.pulse(lvl, width, n, base=b, period_s=period_s)
        self._level = b
        self._smu.output(False)
        if self._smu.output_is_on():
            raise InterlockError(f"{self.name}: output still on after the pulse and output off")

    def in_compliance(self) -> bool:
        return self._smu.in_compliance()

    def safe_state(self) -> str:
        """Level 0 and output off, then confirmed by a query (a round trip: the writes
        before it have been executed) so a safe state is never merely assumed."""
        self._level = None
        self._smu.safe_state()
        if self._smu.output_is_on():
            raise InterlockError(f"{self.name}: output still on after the safe state")
        self._level = 0.0
        return "output off"

    def __repr__(self) -> str:
        return (
            f"GuardedSourceMeter({self.name!r}, mode={self._mode}, compliance={self._compliance})"
        )


# -- switch matrix -------------------------------------------------------------------------


def _pair(pair: Any) -> tuple[int, int]:
    try:
        port, line = pair
    except (TypeError, ValueError):
        raise InterlockError(f"relay must be a (port, line) pair, got {pair!r}", "relay") from None
    for v in (port, line):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise InterlockError(f"relay (port, line) must be integers, got {pair!r}", "relay")
    return int(port), int(line)


class GuardedSwitchMatrix:
    """A ``SwitchMatrix`` that never closes a forbidden (port, line) relay."""

    def __init__(self, matrix: SwitchMatrix, forbidden: Iterable[Sequence[int]] = ()):
        self._matrix = matrix
        self.forbidden: frozenset[tuple[int, int]] = frozenset(_pair(p) for p in forbidden)
        self.name = getattr(matrix, "name", "matrix")

    def resync(self) -> None:
        _resync(self._matrix)

    def _check(self, pairs: Iterable[Any]) -> list[tuple[int, int]]:
        checked = [_pair(p) for p in pairs]
        bad = [p for p in checked if p in self.forbidden]
        if bad:
            raise InterlockError(
                f"{self.name}: relay(s) {bad} (port, line) are forbidden by "
                f"wiring.forbidden; nothing was closed",
                "forbidden relay",
            )
        return checked

    def connect(self, port: int, line: int) -> None:
        ((p, l),) = self._check([(port, line)])
        self._matrix.connect(p, l)

    def disconnect(self, port: int, line: int) -> None:
        self._matrix.disconnect(port, line)

    def connect_many(self, pairs: Sequence[tuple[int, int]]) -> None:
        checked = self._check(list(pairs))
        self._matrix.connect_many(checked)

    def connections(self) -> set[tuple[int, int]]:
        return self._matrix.connections()

    def open_all(self) -> None:
        self._matrix.open_all()

    def safe_state(self) -> str:
        """All relays open, confirmed by asking the matrix which relays are closed."""
        self._matrix.safe_state()
        closed = self._matrix.connections()
        if closed:
            raise InterlockError(
                f"{self.name}: relays {sorted(closed)} still closed after the safe state", "relay"
            )
        return "all relays open"

    def __repr__(self) -> str:
        return f"GuardedSwitchMatrix({self.name!r}, forbidden={sorted(self.forbidden)})"


# -- prober --------------------------------------------------------------------------------


class GuardedProber:
    """A ``Prober`` that refuses X/Y moves while in contact, whatever the driver allows."""

    def __init__(self, prober: Prober):
        self._prober = prober
        self.name = getattr(prober, "name", "prober")
        self.moves = 0  # chuck commands sent: a holder of a confirmed contact re-checks on change

    def resync(self) -> None:
        _resync(self._prober)

    def load_map(self, dies: Sequence[tuple[int, int]], subsites: int = 1) -> None:
        self._prober.load_map(dies, subsites)

    def step_to(self, die: tuple[int, int], subsite: int = 0) -> None:
        if self._prober.in_contact():
            raise InterlockError(
                f"{self.name}: step_to {die}/{subsite} refused while in contact (separate first)",
                "prober move",
            )
        self.moves += 1
        self._prober.step_to(die, subsite)

    def position(self) -> tuple[tuple[int, int], int]:
        return self._prober.position()

    def contact(self) -> None:
        self.moves += 1
        self._prober.contact()

    def separate(self) -> None:
        self.moves += 1
        self._prober.separate()

    def in_contact(self) -> bool:
        return self._prober.in_contact()

    def contact_ok(self) -> bool:
        return self._prober.contact_ok()

    def safe_state(self) -> str:
        """Separated, confirmed by asking the prober for its chuck height."""
        self.moves += 1
        self._prober.safe_state()
        if self._prober.in_contact():
            raise InterlockError(
                f"{self.name}: chuck still at contact height after the safe state (needles down)",
                "prober contact",
            )
        return "separated (needles up)"

    def __repr__(self) -> str:
        return f"GuardedProber({self.name!r})"


# -- array board ---------------------------------------------------------------------------


class GuardedArrayIO:
    """An ``ArrayIO`` whose reads and pulses are checked against ``limits``."""

    def __init__(self, array: ArrayIO, limits: Limits):
        self._array = array
        self._limits = limits
        self.name = getattr(array, "name", "array")
        self.rows = int(array.rows)
        self.cols = int(array.cols)

    def resync(self) -> None:
        _resync(self._array)

    def _read_vector(self, v: Sequence[float] | np.ndarray, n: int, what: str) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape != (n,):
            raise LimitError(f"{what} (need {n} values, got shape {arr.shape})", math.nan, n)
        vmax = float(np.max(np.abs(arr))) if n else 0.0
        if exceeds(vmax, self._limits.v_read_max_v):  # NaN refused too
            raise LimitError(f"{what} read voltage |V|", vmax, self._limits.v_read_max_v, "V")
        return arr

    def read_columns(self, v_rows: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = self._read_vector(v_rows, self.rows, "row")
        return self._array.read_columns(arr)

    def read_rows(self, v_cols: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = self._read_vector(v_cols, self.cols, "column")
        return self._array.read_rows(arr)

    def pulse_cells(
        self,
        mask: np.ndarray,
        amplitude_v: float,
        width_s: float,
        count: int = 1,
        compliance_a: float | None = None,
    ) -> None:
        m = np.asarray(mask)
        if m.shape != (self.rows, self.cols) or m.dtype != np.bool_:
            raise LimitError(
                f"pulse mask (need a bool array of shape {(self.rows, self.cols)}, "
                f"got {m.dtype} {m.shape})",
                math.nan,
                math.nan,
            )
        amp = _check_abs(amplitude_v, self._limits.v_pulse_max_v, "pulse amplitude |V|", "V")
        n = _check_count(count, self._limits)
        comp = (
            self._limits.compliance_default_a
            if compliance_a is None
            else _check_positive_upto(
                compliance_a, self._limits.compliance_max_a, "pulse compliance", "A"
            )
        )
        _check_pulse_rules(self._limits, abs(amp), width_s, n, comp)
        # the driver pulses a non-product mask as several row x column blocks: every cell
        # is charged each block it is selected (|V|) or half-selected (|V|/2) by
        energy = v_half_energy_j(m.shape, row_column_blocks(m), abs(amp), comp, float(width_s), n)
        self._limits.check_energy(
            torch.from_numpy(energy), quantity="worst-case energy per cell of the V/2 pulses"
        )
        if n == 0 or not m.any():
            return
        self._array.pulse_cells(m, amp, float(width_s), n, compliance_a=comp)

    def safe_state(self) -> str:
        """All lines to 0 V; the board acknowledges the command (it keeps no line state
        between commands to query: a read or pulse returns its lines to 0 V)."""
        self._array.safe_state()
        return "all lines at 0 V (acknowledged)"

    def __repr__(self) -> str:
        return f"GuardedArrayIO({self.name!r}, {self.rows}x{self.cols})"


# -- safe state ----------------------------------------------------------------------------


def _components(station: Any) -> list[tuple[str, Any]]:
    """Everything with a safe state, in the order it is made safe: SMU outputs off first,
    then the array board's lines, then the relays open, and the needles lift last."""
    out: list[tuple[str, Any]] = []
    for key, smu in dict(getattr(station, "smus", None) or {}).items():
        out.append((f"smu {key}", smu))
    for attr in ("array", "matrix", "prober"):
        obj = getattr(station, attr, None)
        if obj is not None:
            out.append((attr, obj))
    return out


def safe_state_all(station: Any) -> SafeStateReport:
    """Call ``safe_state()`` on every SMU channel, the array board, the matrix and the
    prober of ``station``; each confirms its state by a query. Every call is attempted and
    each failure logged; returns the ``SafeStateReport`` when every component confirmed
    its safe state, else raises ``SafeStateError`` carrying it (a KeyboardInterrupt during
    the cleanup is re-raised as it is, after the others were attempted)."""
    entries: list[SafeStateEntry] = []
    errors: list[tuple[str, BaseException]] = []
    for who, obj in _components(station):
        try:
            state = obj.safe_state()
        except BaseException as exc:  # attempt every component, re-raise below
            log.critical(
                "safe_state failed for %s: %s: %s", who, type(exc).__name__, exc, exc_info=exc
            )
            errors.append((who, exc))
            entries.append(
                SafeStateEntry(who, _UNKNOWN.get(_kind(who), "state unknown"), False, exc)
            )
            continue
        if isinstance(state, str):
            entries.append(SafeStateEntry(who, state, True))
        else:  # an unguarded component that answered no confirming query
            entries.append(SafeStateEntry(who, "safe state sent, not confirmed by a query", False))
    report = SafeStateReport(tuple(entries))
    interrupts = [e for _, e in errors if not isinstance(e, Exception)]
    if interrupts:  # a Ctrl-C during cleanup stays a Ctrl-C (every failure was logged above)
        raise interrupts[0]
    if not report.confirmed:
        raise SafeStateError(errors, report) from (errors[0][1] if errors else None)
    return report


_UNKNOWN = {
    "smu": "output state unknown (may be on)",
    "array": "line voltages unknown",
    "matrix": "relay state unknown (may be closed)",
    "prober": "chuck height unknown (needles may be down)",
}


def _kind(who: str) -> str:
    return who.split(" ", 1)[0]


@contextlib.contextmanager
def safe_session(station: Any) -> Iterator[Any]:
    """``with safe_session(station):`` -- on exit (success, exception, KeyboardInterrupt)
    every SMU output goes off at 0, the array lines to 0 V, all relays open and the prober
    separates. An exception from the block (KeyboardInterrupt included) is re-raised after
    the cleanup; an error from the cleanup itself is never swallowed: it propagates, with
    the block's exception, if any, as its ``__context__``."""
    try:
        yield station
    finally:
        safe_state_all(station)


__all__ = [
    "GuardedArrayIO",
    "GuardedProber",
    "GuardedSourceMeter",
    "GuardedSwitchMatrix",
    "InterlockError",
    "SafeStateEntry",
    "SafeStateError",
    "SafeStateReport",
    "safe_session",
    "safe_state_all",
]
