"""Programming conductance targets: open loop from the mean pulse response, and
program-and-verify (closed loop), on any backend.

Everything here talks to the Backend contract only (``pulse``, ``read_conductance``,
``capabilities``, ``limits``) and is vectorized over cells: each iteration is one read of
the cells still being programmed and at most one pulse call per polarity, with per-cell
counts (and, where the backend allows, per-cell widths). The pulse counts come from a
``PulseResponse`` (the device population's mean G after k pulses), measured on the very
devices being programmed when none is given (``program_weights``), so no device-model
code is needed: the same routine programs the simulator, the mock lab and a bench.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

import torch
from torch import Tensor

from memhil.analog.pulse_response import PulseResponse, measure_pulse_response, measure_set_response
from memhil.backends.base import Backend, CellSelection
from memhil.core.types import PulseSpec

if TYPE_CHECKING:  # calibration -> algorithms only for the type; no import cycle at runtime
    from memhil.analog.weights import AnalogWeights

Method = Literal["verify", "open_loop"]

#: Bounds of the per-cell step factor of the adaptive verify loop (powers of two).
_FACTOR_MIN, _FACTOR_MAX = 2.0**-12, 2.0**12


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgramProgress:
    """Where a programming run stands: ``iteration`` (0-based) of at most
    ``max_iterations`` verify rounds (calibration is ``phase`` "calibrate"), with
    ``remaining`` of ``n_cells`` cells still being programmed: what a progress bar shows."""

    iteration: int
    max_iterations: int
    remaining: int
    n_cells: int
    phase: Literal["calibrate", "verify", "open_loop"] = "verify"


R = TypeVar("R")


def run_to_end(steps: Generator[Any, None, R]) -> R:
    """Drive a generator of progress items to its end and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


@dataclass
class ProgramReport:
    """Outcome of programming, per selected cell (1-D tensors in row-major mask order,
    the order ``Backend.read_conductance(mask)`` returns).

    ``achieved_s`` is the final verify read (averaged over ``n_reads`` where asked);
    ``error_s = achieved_s - target_s``; ``within`` is ``|error_s| <= tolerance_s`` (all
    False when no tolerance was given). ``set_pulses`` / ``reset_pulses`` count the pulses
    each cell received (int64), ``resets`` the RESET-and-retry events of a SET-only device
    (0 elsewhere). ``iterations`` is the number of read-and-pulse rounds (0 for open loop),
    ``pulse_calls`` the backend ``pulse`` calls issued.
    """

    target_s: Tensor
    achieved_s: Tensor
    error_s: Tensor
    within: Tensor
    set_pulses: Tensor
    reset_pulses: Tensor
    resets: Tensor
    iterations: int
    tolerance_s: float | None
    method: str
    pulse_calls: int = 0

    @property
    def n_cells(self) -> int:
        return int(self.target_s.numel())

    @property
    def fraction_within(self) -> float:
        """Fraction of cells within tolerance (NaN when no tolerance was given)."""
        if self.tolerance_s is None or self.n_cells == 0:
            return float("nan")
        return float(self.within.double().mean())

    @property
    def pulses(self) -> Tensor:
        """Total pulses per cell (SET + RESET)."""
        return self.set_pulses + self.reset_pulses

    @property
    def pulses_per_cell(self) -> float:
        """Mean total pulses per cell."""
        return float(self.pulses.double().mean()) if self.n_cells else 0.0

    @property
    def rms_error_s(self) -> float:
        return float(self.error_s.double().pow(2).mean().sqrt()) if self.n_cells else 0.0

    def summary(self) -> str:
        """A short human-readable account: fraction within tolerance, RMS error, pulses."""
        tol = "n/a" if self.tolerance_s is None else f"±{self.tolerance_s * 1e6:.4g} µS"
        frac = self.fraction_within
        frac_txt = "n/a" if math.isnan(frac) else f"{100 * frac:.2f} %"
        p = self.pulses
        max_p = int(p.max()) if self.n_cells else 0
        lines = [
            f"{self.method}: {self.n_cells} cells, tolerance {tol}",
            f"  within tolerance: {frac_txt} ({int(self.within.sum())}/{self.n_cells})",
            f"  RMS error: {self.rms_error_s * 1e6:.4g} µS, "
            f"max |error|: {float(self.error_s.abs().max()) * 1e6 if self.n_cells else 0:.4g} µS",
            f"  pulses per cell: mean {self.pulses_per_cell:.2f}, max {max_p} "
            f"(SET {float(self.set_pulses.double().mean()):.2f}, "
            f"RESET {float(self.reset_pulses.double().mean()):.2f}, "
            f"retries {int(self.resets.sum())})",
            f"  iterations: {self.iterations}, pulse calls: {self.pulse_calls}",
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------
def _pulse_pair(pulse: Any, name: str, polarity: int) -> tuple[float, float]:
    """(amplitude V, width s) from a PulseSpec-like object or a 2-tuple, sign checked."""
    if hasattr(pulse, "amplitude_v") and hasattr(pulse, "width_s"):
        amp, width = float(pulse.amplitude_v), float(pulse.width_s)
    else:
        try:
            amp, width = (float(x) for x in pulse)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a PulseSpec or (amplitude_v, width_s), got {pulse!r}"
            ) from None
    if not (math.isfinite(amp) and amp * polarity > 0):
        want = "> 0 (positive raises G)" if polarity > 0 else "< 0 (negative lowers G)"
        raise ValueError(f"{name} amplitude must be {want}, got {amp} V")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"{name} width must be > 0 s, got {width} s")
    return amp, width


@overload
def _check_response(resp: PulseResponse, name: str, rising: bool) -> PulseResponse: ...
@overload
def _check_response(resp: None, name: str, rising: bool) -> None: ...
@overload
def _check_response(
    resp: PulseResponse | None, name: str, rising: bool
) -> PulseResponse | None: ...
def _check_response(resp: PulseResponse | None, name: str, rising: bool) -> PulseResponse | None:
    """Check the direction of ``resp`` and return it with its curve on the CPU (a curve
    measured on a CUDA backend stays there; the per-cell bookkeeping here is CPU)."""
    if resp is None:
        return None
    if not isinstance(resp, PulseResponse):
        raise TypeError(f"{name} must be a PulseResponse, got {type(resp).__name__}")
    if resp.rising != rising:
        raise ValueError(
            f"{name} must be a {'rising (SET)' if rising else 'falling (RESET)'} "
            f"pulse response; got one measured with amplitude {resp.amplitude_v} V"
        )
    if resp.g_curve_s.device.type != "cpu":
        spread = resp.spread_s.cpu() if isinstance(resp.spread_s, Tensor) else resp.spread_s
        resp = PulseResponse(resp.amplitude_v, resp.width_s, resp.g_curve_s.cpu(), spread)
    return resp


def _select(backend: Backend, cells: CellSelection, targets_s: Any) -> tuple[Tensor, Tensor]:
    """The backend mask of ``cells`` and the targets as a 1-D float64 CPU tensor in mask
    order, with every check that names the offending value."""
    if cells is not None and not (isinstance(cells, Tensor) and cells.dtype == torch.bool):
        idx = torch.as_tensor(cells, dtype=torch.int64).reshape(-1, 3)
        mask = backend.cell_mask(cells)  # raises IndexError naming a bad index
        _, rows, cols = backend.shape
        lin = (idx[:, 0] * rows + idx[:, 1]) * cols + idx[:, 2]
        if lin.numel() > 1 and not bool((lin[1:] > lin[:-1]).all()):
            raise ValueError(
                "cells given as a list must be distinct and in row-major "
                "(tile, row, col) order, the order reads and targets use"
            )
    else:
        mask = backend.cell_mask(
            torch.ones(backend.shape, dtype=torch.bool) if cells is None else cells
        )
    n = int(mask.sum())
    if n == 0:
        raise ValueError("no cells selected: the cell mask is empty")
    t = torch.as_tensor(targets_s, dtype=torch.float64).detach().cpu()
    if t.dim() == 3 and tuple(t.shape) == tuple(backend.shape):
        t = t[mask.cpu()]
    elif t.dim() == 0:
        t = t.expand(n).clone()
    elif t.dim() != 1 or t.numel() != n:
        raise ValueError(
            f"targets_s of shape {tuple(t.shape)} does not match the {n} selected "
            f"cells (give a 1-D tensor in row-major mask order, or one shaped "
            f"like the array {tuple(backend.shape)})"
        )
    g_lo, g_hi = backend.capabilities.conductance_range_s
    # Targets computed in float32 (weights -> conductances) land a few ulp outside the
    # window when they sit on its edge: accept 1e-6 relative slack and clip those back in.
    slack = 1e-6
    bad = ~torch.isfinite(t) | (t < g_lo * (1 - slack)) | (t > g_hi * (1 + slack))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        where = tuple(int(v) for v in mask.nonzero()[i].tolist())
        raise ValueError(
            f"target {float(t[i]):.6g} S for cell {where} lies outside the "
            f"device window [{g_lo:.6g}, {g_hi:.6g}] S "
            f"(capabilities.conductance_range_s); {int(bad.sum())} target(s) bad"
        )
    return mask, t.clamp(g_lo, g_hi)


def _max_count(
    backend: Backend, amp: float, width: float, compliance_a: float | None, cap: int | None
) -> int:
    """Largest per-cell count one call may carry: ``cap``, ``limits.count_max`` and the
    per-call energy limit at the nominal width."""
    lim = backend.limits
    n = lim.count_max if cap is None else min(int(cap), lim.count_max)
    if lim.energy_max_j is not None:
        c = lim.compliance_default_a if compliance_a is None else compliance_a
        per_pulse = abs(amp) * c * width
        n = min(n, int(lim.energy_max_j / per_pulse * (1 - 1e-6)))
    if n < 1:
        raise ValueError(
            f"one pulse of {amp} V / {width} s exceeds the backend's per-call "
            f"limits (count_max {lim.count_max}, energy_max_j {lim.energy_max_j})"
        )
    return n


class _Writer:
    """Scatters per-cell vectors (mask order) into array-shaped pulse requests."""

    def __init__(self, backend: Backend, mask: Tensor, compliance_a: float | None):
        self.backend = backend
        self.mask = mask
        self.compliance_a = compliance_a
        self.calls = 0

    def full(self, values: Tensor, dtype: torch.dtype, fill: float = 0) -> Tensor:
        out = torch.full(self.backend.shape, fill, dtype=dtype, device=self.backend.torch_device)
        out[self.mask] = values.to(dtype=dtype, device=out.device)
        return out

    def pulse(self, counts: Tensor, amp: float, width: float, widths: Tensor | None = None) -> None:
        """``counts`` (N,) int64 per selected cell; cells with 0 are not selected."""
        if not bool((counts > 0).any()):
            return
        n_full = self.full(counts, torch.int64)
        w = width if widths is None else self.full(widths, self.backend.dtype, fill=width)
        self.backend.pulse(n_full > 0, amp, w, n_full, compliance_a=self.compliance_a)
        self.calls += 1


def _read(backend: Backend, mask: Tensor, n_reads: int) -> Tensor:
    """Mean of ``n_reads`` reads of the masked cells, float64 on the CPU."""
    g = backend.read_conductance(mask).double()
    for _ in range(n_reads - 1):
        g = g + backend.read_conductance(mask).double()
    return (g / n_reads).cpu()


def _report(
    target: Tensor,
    achieved: Tensor,
    tol: float | None,
    set_n: Tensor,
    reset_n: Tensor,
    resets: Tensor,
    iterations: int,
    method: str,
    calls: int,
) -> ProgramReport:
    err = achieved - target
    within = err.abs() <= tol if tol is not None else torch.zeros_like(err, dtype=torch.bool)
    return ProgramReport(
        target_s=target,
        achieved_s=achieved,
        error_s=err,
        within=within,
        set_pulses=set_n,
        reset_pulses=reset_n,
        resets=resets,
        iterations=iterations,
        tolerance_s=tol,
        method=method,
        pulse_calls=calls,
    )


# ---------------------------------------------------------------------------------------
# Open loop
# ---------------------------------------------------------------------------------------
def program_open_loop(
    backend: Backend,
    cells: CellSelection,
    targets_s: Any,
    *,
    set_pulse: Any,
    reset_pulse: Any,
    response_set: PulseResponse,
    response_reset: PulseResponse | None = None,
    reset_count: int = 1,
    tolerance_s: float | None = None,
    n_reads: int = 1,
    compliance_a: float | None = None,
) -> ProgramReport:
    """Program ``targets_s`` without verifying: pulse counts from the inverse of the mean
    pulse response, i.e. ``round(response.pulses_between(g_now, target))``.

    SET-only devices (``capabilities.bipolar`` False) or no ``response_reset``: every
    selected cell is RESET first (``reset_count`` RESET pulses, as the ``prepare`` step
    that started ``response_set``'s curve), read, then one SET call with per-cell counts.
    Bipolar devices with ``response_reset``: one read, then one SET call for the cells
    below target and one RESET call for those above, counts from the matching curve.
    One final read (``n_reads`` averaged) fills the report; ``tolerance_s``, if given,
    only grades it. ``cells`` is a backend mask, a row-major list of (tile, row, col) or
    None (all); ``targets_s`` is 1-D in mask order or shaped like the array.
    """
    s_amp, set_width_s = _pulse_pair(set_pulse, "set_pulse", +1)
    r_amp, reset_width_s = _pulse_pair(reset_pulse, "reset_pulse", -1)
    if response_set is None:
        raise ValueError("open-loop programming needs response_set (the mean SET response)")
    response_set = _check_response(response_set, "response_set", True)
    response_reset = _check_response(response_reset, "response_reset", False)
    _check_tol(tolerance_s, allow_none=True)
    if n_reads < 1:
        raise ValueError(f"n_reads must be >= 1, got {n_reads}")
    if reset_count < 1:
        raise ValueError(f"reset_count must be >= 1, got {reset_count}")
    mask, target = _select(backend, cells, targets_s)
    n = target.numel()
    w = _Writer(backend, mask, compliance_a)
    set_max = _max_count(backend, s_amp, set_width_s, compliance_a, None)
    reset_max = _max_count(backend, r_amp, reset_width_s, compliance_a, None)
    zeros = torch.zeros(n, dtype=torch.int64)
    set_n, reset_n = zeros.clone(), zeros.clone()
    if not backend.capabilities.bipolar or response_reset is None:
        if reset_count > reset_max:
            raise ValueError(f"reset_count {reset_count} exceeds the per-call limit {reset_max}")
        reset_n = torch.full((n,), reset_count, dtype=torch.int64)
        w.pulse(reset_n, r_amp, reset_width_s)
        g = _read(backend, mask, n_reads)
        set_n = response_set.pulses_between(g, target).round().clamp(0, set_max).to(torch.int64)
        w.pulse(set_n, s_amp, set_width_s)
    else:
        g = _read(backend, mask, n_reads)
        up = target > g
        k_set = response_set.pulses_between(g, target).round().clamp(0, set_max)
        k_reset = response_reset.pulses_between(g, target).round().clamp(0, reset_max)
        set_n = torch.where(up, k_set, 0).to(torch.int64)
        reset_n = torch.where(~up, k_reset, 0).to(torch.int64)
        w.pulse(set_n, s_amp, set_width_s)
        w.pulse(reset_n, r_amp, reset_width_s)
    achieved = _read(backend, mask, n_reads)
    return _report(
        target, achieved, tolerance_s, set_n, reset_n, zeros.clone(), 0, "open_loop", w.calls
    )


def _check_tol(tol: float | None, allow_none: bool = False) -> None:
    if tol is None and allow_none:
        return
    if tol is None or not (math.isfinite(float(tol)) and float(tol) > 0):
        raise ValueError(f"tolerance_s must be a finite conductance > 0 S, got {tol!r}")


# ---------------------------------------------------------------------------------------
# Program and verify
# ---------------------------------------------------------------------------------------
def program_and_verify_steps(
    backend: Backend,
    cells: CellSelection,
    targets_s: Any,
    *,
    set_pulse: Any,
    reset_pulse: Any,
    tolerance_s: float,
    max_iterations: int = 50,
    response_set: PulseResponse | None = None,
    response_reset: PulseResponse | None = None,
    gain: float = 0.7,
    max_pulses_per_step: int = 100,
    n_reads: int = 1,
    max_resets: int = 20,
    margin_s: float = 0.0,
    adapt: bool = True,
    compliance_a: float | None = None,
) -> Generator[ProgramProgress, None, ProgramReport]:
    """Closed-loop programming of ``targets_s`` to within ``±tolerance_s``, as a generator
    that yields a :class:`ProgramProgress` before each read-and-pulse iteration and returns
    the :class:`ProgramReport` (``program_and_verify`` runs it to the end).

    Each iteration reads every unfinished cell once (``n_reads`` reads averaged, to beat
    read noise) and issues at most one pulse call per polarity, all vectorized:

    * ``|G - target| <= tolerance_s - margin_s``: the cell is done and is left alone from
      then on (neither read nor pulsed again until the final read that fills the report).
      Verifying with noisy reads favours the lucky ones: a cell just outside the window is
      accepted as soon as one read says it is inside. A guard band ``margin_s`` of about
      two read-noise sigmas (of the ``n_reads`` mean) keeps those out.
    * below target: ``round(gain * k)`` SET pulses, ``k = response_set.pulses_between(G,
      target)``, at least 1 and at most ``max_pulses_per_step`` (and the limits); 1 pulse
      when no ``response_set`` is given. Where G or the target lies beyond the curve (or
      on its saturated tail), ``k = |target - G| / response.granularity_s``.
    * above target, bipolar device: RESET-direction pulses the same way (from
      ``response_reset``, or 1).
    * above target, SET-only device (PCM, abrupt RESET): RESET and retry. The cell gets one
      RESET pulse (counted in ``resets``) and, in the same iteration, the SET pulses that
      climb from the mean post-RESET state (``response_set``'s first point) towards the
      target; after ``max_resets`` retries a cell that overshoots again is given up (left
      alone, reported as not within).

    Step adaptation (bipolar devices, ``adapt=True``): each cell carries one step factor f
    per polarity (starting at 1) that scales its commanded step ``a = f * gain * k`` (``f``
    alone without a response). After a step, the factor of the polarity just used halves
    when the cell overshot (its error changed sign) and, where a response predicted the
    step, doubles when the cell moved less than half of what it was asked to (|error|
    shrank by less than ``gain / 2`` of itself), so cells faster or slower than the
    population mean in either direction, and the nonlinear ends of the response, are
    learned per cell. The step is issued as ``round(a)`` pulses of the nominal width;
    where ``a < 1`` and the backend has ``capabilities.per_cell_width``, as one pulse of
    width ``a * width`` (never below the backend's minimum width), which gives sub-pulse
    resolution on devices whose change scales with width (VTEAM, ion drift) and costs
    nothing on devices where it does not. On SET-only devices the factor stays 1 (an
    overshoot is repaired by a RESET, not by smaller steps).

    Cost per iteration: ``n_reads`` reads of the unfinished cells and at most two pulse
    calls; the report counts the pulses per cell and the calls.

    The loop stops when every cell is done or given up, or after ``max_iterations``; one
    final read of all selected cells (``n_reads`` averaged) fills the report. Every request
    stays within the backend limits: counts are capped by ``limits.count_max`` and the
    per-call energy limit, widths are clamped to ``[limits.width_min_s, width]``.
    ``targets_s`` is 1-D in mask order (or shaped like the array); ``set_pulse`` /
    ``reset_pulse`` are ``PulseSpec`` or (amplitude V, width s).
    """
    s_amp, set_width_s = _pulse_pair(set_pulse, "set_pulse", +1)
    r_amp, reset_width_s = _pulse_pair(reset_pulse, "reset_pulse", -1)
    _check_tol(tolerance_s)
    response_set = _check_response(response_set, "response_set", True)
    response_reset = _check_response(response_reset, "response_reset", False)
    if int(max_iterations) < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be > 0, got {gain}")
    if int(max_pulses_per_step) < 1:
        raise ValueError(f"max_pulses_per_step must be >= 1, got {max_pulses_per_step}")
    if int(n_reads) < 1:
        raise ValueError(f"n_reads must be >= 1, got {n_reads}")
    if int(max_resets) < 0:
        raise ValueError(f"max_resets must be >= 0, got {max_resets}")
    tol = float(tolerance_s)
    if not (math.isfinite(margin_s) and 0.0 <= margin_s < tol):
        raise ValueError(f"margin_s must be in [0, tolerance_s = {tol:.6g} S), got {margin_s}")
    accept = tol - float(margin_s)
    mask, target = _select(backend, cells, targets_s)
    caps, lim = backend.capabilities, backend.limits
    bipolar = bool(caps.bipolar)
    set_max = _max_count(backend, s_amp, set_width_s, compliance_a, max_pulses_per_step)
    reset_max = _max_count(backend, r_amp, reset_width_s, compliance_a, max_pulses_per_step)
    w_min = max(lim.width_min_s, caps.min_pulse_width_s)
    scale_width = bool(adapt and bipolar and caps.per_cell_width)
    if scale_width and (set_width_s < w_min or reset_width_s < w_min):
        raise ValueError(
            f"pulse widths ({set_width_s}, {reset_width_s}) s lie below the backend's minimum width {w_min} s"
        )

    n = target.numel()
    w = _Writer(backend, mask, compliance_a)
    set_n = torch.zeros(n, dtype=torch.int64)
    reset_n = torch.zeros(n, dtype=torch.int64)
    resets = torch.zeros(n, dtype=torch.int64)
    done = torch.zeros(n, dtype=torch.bool)
    given_up = torch.zeros(n, dtype=torch.bool)
    # Step factors per cell and polarity (column 0: SET, 1: RESET), and the polarity each
    # cell was pulsed with in the last iteration (-1: none).
    factor = torch.ones(n, 2, dtype=torch.float64)
    last_dir = torch.full((n,), -1, dtype=torch.int64)
    err_prev = torch.full((n,), float("nan"), dtype=torch.float64)
    g_reset_mean = float(response_set.g_curve_s[0]) if response_set is not None else None

    def step_size(resp: PulseResponse | None, g_from: Tensor, tgt: Tensor, f: Tensor) -> Tensor:
        """Commanded step in (fractional) nominal pulses: ``gain * k * f``."""
        if resp is None:
            return f.clone()
        k = resp.pulses_between(g_from, tgt)
        # Beyond the curve's ends (or on a saturated, flat tail) the inverse says nothing:
        # use the distance in units of the curve's mean step instead.
        flat = k <= 0
        if bool(flat.any()):
            k = torch.where(flat, (tgt - g_from).abs() / max(resp.granularity_s, 1e-30), k)
        return gain * k * f

    def issue(amount: Tensor, k_max: int, nominal_width_s: float) -> tuple[Tensor, Tensor | None]:
        """Counts (and widths) for commanded steps ``amount`` (nominal pulses)."""
        counts = amount.round().clamp(1, k_max).to(torch.int64)
        if not scale_width:
            return counts, None
        widths = torch.where(
            amount < 1.0,
            (amount * nominal_width_s).clamp(w_min, nominal_width_s),
            torch.full_like(amount, nominal_width_s),
        )
        return counts, widths

    iterations = 0
    for it in range(int(max_iterations)):
        active = ~done & ~given_up
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        iterations = it + 1
        yield ProgramProgress(it, int(max_iterations), int(idx.numel()), n)
        sub_mask = torch.zeros_like(mask)
        sub_mask[mask] = active.to(mask.device)
        g = _read(backend, sub_mask, int(n_reads))
        t = target[idx]
        err = g - t
        ok = err.abs() <= accept
        done[idx[ok]] = True

        if adapt and bipolar:
            prev = err_prev[idx]
            d = last_dir[idx]
            was = (d >= 0) & ~ok & torch.isfinite(prev)
            crossed = was & (torch.sign(err) != torch.sign(prev))
            # "Slower than asked" needs an expectation: only where a response predicted the
            # step (without one, steps are single pulses and only shrink after overshoots).
            predicted = torch.tensor([response_set is not None, response_reset is not None])
            slow = (
                was
                & ~crossed
                & predicted[d.clamp_min(0)]
                & (err.abs() > (1.0 - 0.5 * gain) * prev.abs())
            )
            upd = torch.where(crossed, 0.5, torch.where(slow, 2.0, 1.0))
            rows, cols = idx[was], d[was]
            factor[rows, cols] = (factor[rows, cols] * upd[was]).clamp(_FACTOR_MIN, _FACTOR_MAX)
        err_prev[idx] = err

        below = ~ok & (err < 0)
        above = ~ok & (err > 0)
        set_amount = torch.zeros(idx.numel(), dtype=torch.float64)
        reset_amount = torch.zeros(idx.numel(), dtype=torch.float64)
        f_set, f_reset = factor[idx, 0], factor[idx, 1]
        if bool(below.any()):
            set_amount[below] = step_size(response_set, g[below], t[below], f_set[below])
        if bipolar:
            if bool(above.any()):
                reset_amount[above] = step_size(response_reset, g[above], t[above], f_reset[above])
        else:
            # RESET and retry; a cell past its retry budget is given up instead.
            exhausted = above & (resets[idx] >= int(max_resets))
            given_up[idx[exhausted]] = True
            retry = above & ~exhausted
            if bool(retry.any()):
                reset_amount[retry] = 1.0
                resets[idx[retry]] += 1
                # climb at once unless the mean post-RESET state is already acceptable
                climb = retry & ((t - (g_reset_mean or 0.0)) > accept)
                if g_reset_mean is None:
                    set_amount[climb] = 1.0
                elif bool(climb.any()):
                    g0 = torch.full_like(t[climb], g_reset_mean)
                    set_amount[climb] = step_size(response_set, g0, t[climb], torch.ones_like(g0))

        # RESET first (a retried SET-only cell climbs again in the same iteration).
        r_counts = torch.zeros(n, dtype=torch.int64)
        s_counts = torch.zeros(n, dtype=torch.int64)
        r_widths = s_widths = None
        r_sel = reset_amount > 0
        s_sel = set_amount > 0
        if bool(r_sel.any()):
            if bipolar:
                c, wd = issue(reset_amount[r_sel], reset_max, reset_width_s)
            else:
                c, wd = torch.ones(int(r_sel.sum()), dtype=torch.int64), None
            r_counts[idx[r_sel]] = c
            if wd is not None:
                r_widths = torch.full((n,), reset_width_s, dtype=torch.float64)
                r_widths[idx[r_sel]] = wd
            w.pulse(r_counts, r_amp, reset_width_s, r_widths)
        if bool(s_sel.any()):
            c, wd = issue(set_amount[s_sel], set_max, set_width_s)
            s_counts[idx[s_sel]] = c
            if wd is not None:
                s_widths = torch.full((n,), set_width_s, dtype=torch.float64)
                s_widths[idx[s_sel]] = wd
            w.pulse(s_counts, s_amp, set_width_s, s_widths)
        set_n += s_counts
        reset_n += r_counts
        last_dir = torch.where(s_counts > 0, 0, torch.where(r_counts > 0, 1, -1))
        # A retried cell restarts its error history (the RESET is not an overshoot).
        if not bipolar:
            err_prev[r_counts > 0] = float("nan")

    achieved = _read(backend, mask, int(n_reads))
    return _report(target, achieved, tol, set_n, reset_n, resets, iterations, "verify", w.calls)


def program_and_verify(
    backend: Backend, cells: CellSelection, targets_s: Any, **kw: Any
) -> ProgramReport:
    """Closed-loop programming of ``targets_s`` to within ``±tolerance_s``: runs
    :func:`program_and_verify_steps` (whose docstring describes the loop and the keywords)
    to the end and returns its report."""
    return run_to_end(program_and_verify_steps(backend, cells, targets_s, **kw))


# ---------------------------------------------------------------------------------------
# Weight matrices on AnalogWeights
# ---------------------------------------------------------------------------------------
def calibrate_region(
    weights: AnalogWeights,
    *,
    n_pulses: int = 32,
    set_curve: bool = True,
    reset_curve: bool | None = None,
) -> tuple[PulseResponse | None, PulseResponse | None]:
    """Measure the mean SET response (and, by default on bipolar devices, the RESET
    response) on the region's own devices with ``measure_pulse_response``; the region's
    state is lost. Returns ``(response_set, response_reset)``, None for a curve not asked.

    The RESET curve starts from ``n_pulses`` SET pulses, the SET curve from ``n_pulses``
    RESET pulses (one on a SET-only device, whose RESET is abrupt). Each curve costs
    ``2 n_pulses`` pulses per device (one RESET for the SET curve of a SET-only device),
    added to ``weights.tally``.
    """
    b = weights.backend
    mask = weights.mapping.cell_mask(b.shape).to(b.torch_device)
    sp, rp = weights.set_pulse, weights.reset_pulse
    n_cells = int(mask.sum())
    bipolar = bool(b.capabilities.bipolar)
    if reset_curve is None:
        reset_curve = bipolar
    n_pulses = int(n_pulses)
    if not 1 <= n_pulses <= b.limits.count_max:
        raise ValueError(
            f"n_pulses must be in 1..{b.limits.count_max} (limits.count_max), got {n_pulses}"
        )
    tally = weights.tally
    resp_set = resp_reset = None
    if reset_curve:
        resp_reset = measure_pulse_response(
            b,
            mask,
            rp.amplitude_v,
            rp.width_s,
            n_pulses,
            prepare=(sp.amplitude_v, sp.width_s, n_pulses),
        )
        tally.set_pulses += n_pulses * n_cells
        tally.reset_pulses += n_pulses * n_cells
        tally.calls += n_pulses + 1
    if set_curve:
        prep = n_pulses if bipolar else 1
        resp_set = measure_set_response(b, mask, sp, rp, n_pulses, n_reset=n_pulses, restore=False)
        tally.reset_pulses += prep * n_cells
        tally.set_pulses += n_pulses * n_cells
        tally.calls += n_pulses + 1
    return resp_set, resp_reset


class _RegionPulses(TypedDict):
    """The pulses and responses :func:`program_weights` hands to the programming loops."""

    set_pulse: PulseSpec
    reset_pulse: PulseSpec
    response_set: PulseResponse
    response_reset: PulseResponse | None


def program_weights_steps(
    weights: AnalogWeights,
    weight: Tensor,
    *,
    method: Method = "verify",
    tolerance_s: float | None = None,
    response_set: PulseResponse | None = None,
    response_reset: PulseResponse | None = None,
    calibration_pulses: int = 32,
    **kw: Any,
) -> Generator[ProgramProgress, None, ProgramReport]:
    """Program the (out, in) matrix ``weight`` onto ``weights``' region, as a generator of
    :class:`ProgramProgress` (one item before the calibration, one per verify iteration)
    that returns the :class:`ProgramReport`; ``program_weights`` runs it to the end.

    Targets come from ``weights.mapping.targets(weight)`` (clipped to ±w_max), cells from
    ``weights.mapping.cell_mask``, pulses from ``weights.set_pulse`` / ``reset_pulse``.
    Missing pulse responses are measured first on the region itself (``calibrate_region``
    with ``calibration_pulses``): a calibration on the real devices, which is what makes
    this backend-agnostic. ``method`` "verify" runs ``program_and_verify`` (``tolerance_s``
    defaults to 5 % of the mapping's window g_hi - g_lo), "open_loop" runs
    ``program_open_loop`` (``tolerance_s`` then only grades the result). Other keywords go
    to the programming routine. ``weights.tally`` gains the programming pulses and those
    of any calibration done here. The report's cells are the region in row-major order,
    i.e. ``report.achieved_s.reshape(in_features, n_cols)`` is the region.
    """
    m = weights.mapping
    want = (m.out_features, m.in_features)
    if tuple(weight.shape) != want:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} does not match the mapping's "
            f"(out_features, in_features) = {want}"
        )
    if method not in ("verify", "open_loop"):
        raise ValueError(f"unknown method {method!r} (verify, open_loop)")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains non-finite values")
    b = weights.backend
    if tolerance_s is None:
        tolerance_s = 0.05 * (m.g_hi_s - m.g_lo_s)
    targets = m.targets(weight).reshape(-1)
    mask = m.cell_mask(b.shape).to(b.torch_device)
    _select(b, mask, targets)  # bad targets fail before any calibration pulse
    need_set = response_set is None
    need_reset = bool(b.capabilities.bipolar) and response_reset is None
    n_cells = int(mask.sum())
    if need_set or need_reset:
        yield ProgramProgress(0, 1, n_cells, n_cells, "calibrate")
        rs, rr = calibrate_region(
            weights, n_pulses=calibration_pulses, set_curve=need_set, reset_curve=need_reset
        )
        response_set = rs if need_set else response_set
        response_reset = rr if need_reset else response_reset
    assert response_set is not None  # given, or just measured by calibrate_region
    pulses: _RegionPulses = dict(
        set_pulse=weights.set_pulse,
        reset_pulse=weights.reset_pulse,
        response_set=response_set,
        response_reset=response_reset,
    )
    if method == "verify":
        report = yield from program_and_verify_steps(
            b, mask, targets, tolerance_s=tolerance_s, **pulses, **kw
        )
    else:
        yield ProgramProgress(0, 1, n_cells, n_cells, "open_loop")
        report = program_open_loop(b, mask, targets, tolerance_s=tolerance_s, **pulses, **kw)
    weights.tally.set_pulses += int(report.set_pulses.sum())
    weights.tally.reset_pulses += int(report.reset_pulses.sum())
    weights.tally.calls += report.pulse_calls
    return report


def program_weights(weights: AnalogWeights, weight: Tensor, **kw: Any) -> ProgramReport:
    """Program the (out, in) matrix ``weight`` onto ``weights``' region: runs
    :func:`program_weights_steps` (whose docstring gives the keywords) to the end."""
    return run_to_end(program_weights_steps(weights, weight, **kw))
