"""Digital twins: build a data-driven device model from measured pulse trains, and check any
device model against held-out measurements of the chip (docs/twin.md).

*Build* (``build_empirical``): every measured transition ``(G_n, pulse_n) -> G_{n+1}`` of
every cell gives a step ``dG``; per pulse class and conductance bin the steps give the mean
and the spread of ``memhil.devices.empirical``. The measured spread holds three parts, which
the builder separates:

* read noise: each read enters two consecutive steps with opposite signs, so consecutive
  step residuals of one cell have covariance ``-sigma_read(G)^2``; the builder estimates a
  relative read noise ``sigma_read = rel G`` from that covariance (no read-noise run needed);
* device-to-device: a cell's own step scale ``s_d`` (least-squares ratio of its steps to the
  pooled mean steps) varies across cells by more than its estimation noise; the excess is
  ``step_dtod`` (this needs several steps per cell of each class: repeated trains);
* cycle-to-cycle: what remains, ``sigma_c2c^2 = var - 2 sigma_read^2 - (mu step_dtod)^2``.

*Check* (``check_model``): replays a held-out trace's pulse schedule on any device model,
starting each simulated cell at its measured first conductance, reads every step with the
model's read noise, and compares with the measurement: the error of the mean trajectory and
of the across-cell spread (both relative to the measured conductance span) and, per pulse
class, the two-sample Kolmogorov-Smirnov distance between measured and predicted steps
(its p-value on a subsample of at most ``KS_SAMPLES_MAX`` steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import ks_2samp

from memhil.calibration.fit.neurosim import FitResult
from memhil.devices.base import DeviceModel

#: Relative tolerance under which two pulses are the same class (amplitude and width).
CLASS_RTOL = 1e-6
#: Thresholds of the check's verdict: every class's KS p-value at least ``KS_ALPHA`` and the
#: mean trajectory within ``MEAN_ERROR_MAX`` of the conductance span. 5 % of the span is
#: about what one programming step is on the devices memhil models (NeuroSim: 31 steps).
KS_ALPHA = 0.01
MEAN_ERROR_MAX = 0.05
#: The KS p-value is taken on at most this many measured steps per class (an even
#: subsample; the prediction on ``replicates`` times as many), so that it detects
#: differences of a size that matters (D of a few 0.01), not any smoothing bias that 10^5
#: steps would make significant. The distance ``D`` is reported on all steps.
KS_SAMPLES_MAX = 2000


@dataclass
class PulseTrace:
    """Reads of ``cells`` devices before the first and after every pulse of one schedule:
    ``g_s`` (cells, n_pulses + 1), pulse amplitudes ``v`` (V) and widths ``width_s`` (s)."""

    g_s: np.ndarray
    v: np.ndarray
    width_s: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        self.g_s = np.atleast_2d(np.asarray(self.g_s, dtype=float))
        self.v = np.asarray(self.v, dtype=float)
        self.width_s = np.asarray(self.width_s, dtype=float)
        n = self.v.size
        if self.width_s.size != n or self.g_s.shape[1] != n + 1:
            raise ValueError(
                f"{self.source or 'trace'}: {n} pulses need {n} widths and {n + 1} reads per "
                f"cell, got {self.width_s.size} widths and {self.g_s.shape[1]} reads"
            )

    @property
    def cells(self) -> int:
        return self.g_s.shape[0]

    def split_cells(self, every: int = 2) -> tuple[PulseTrace, PulseTrace]:
        """(cells not on the stride, every ``every``-th cell): a build set and a held-out
        set measured on different devices with the same schedule."""
        held = np.zeros(self.cells, dtype=bool)
        held[::every] = True
        part = lambda m, tag: PulseTrace(self.g_s[m], self.v, self.width_s, f"{self.source}{tag}")
        return part(~held, " (build cells)"), part(held, " (held-out cells)")


def pulse_classes(traces: Sequence[PulseTrace]) -> list[tuple[float, float]]:
    """The distinct (amplitude V, width s) pulses of ``traces``, positive first."""
    seen: list[tuple[float, float]] = []
    for tr in traces:
        for v, w in zip(tr.v, tr.width_s):
            if not any(
                math.isclose(v, a, rel_tol=CLASS_RTOL) and math.isclose(w, b, rel_tol=CLASS_RTOL)
                for a, b in seen
            ):
                seen.append((float(v), float(w)))
    return sorted(seen, key=lambda c: (c[0] < 0, -abs(c[0]), c[1]))


def _class_index(tr: PulseTrace, classes: list[tuple[float, float]]) -> np.ndarray:
    cv = np.array([c[0] for c in classes])
    cw = np.array([c[1] for c in classes])
    match = np.isclose(tr.v[:, None], cv, rtol=CLASS_RTOL, atol=0) & np.isclose(
        tr.width_s[:, None], cw, rtol=CLASS_RTOL, atol=0
    )
    return match.argmax(1)


@dataclass
class _Transitions:
    g: np.ndarray  # conductance before the step (S)
    dg: np.ndarray  # step (S)
    cls: np.ndarray  # pulse class
    cell: np.ndarray  # global cell id
    g_next: np.ndarray  # the read after the step (shared with the next step)
    follows: np.ndarray  # True where the next transition of the same cell exists


def _transitions(traces: Sequence[PulseTrace], classes) -> _Transitions:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _Transitions.__dataclass_fields__}
    offset = 0
    for tr in traces:
        c, n = tr.cells, tr.v.size
        cls = np.broadcast_to(_class_index(tr, classes), (c, n))
        follows = np.zeros((c, n), dtype=bool)
        follows[:, :-1] = True
        parts["g"].append(tr.g_s[:, :-1].ravel())
        parts["dg"].append(np.diff(tr.g_s, axis=1).ravel())
        parts["cls"].append(cls.ravel())
        parts["cell"].append(np.repeat(np.arange(c) + offset, n))
        parts["g_next"].append(tr.g_s[:, 1:].ravel())
        parts["follows"].append(follows.ravel())
        offset += c
    return _Transitions(**{k: np.concatenate(v) for k, v in parts.items()})


def _interp_rows(table: np.ndarray, knots: np.ndarray, g: np.ndarray, cls: np.ndarray):
    """Row ``cls`` of ``table`` interpolated at ``g`` (flat beyond the end knots)."""
    out = np.empty_like(g)
    for c in np.unique(cls):  # a loop over the few pulse classes, not over cells
        m = cls == c
        out[m] = np.interp(g[m], knots, table[c])
    return out


def _smooth(
    x: np.ndarray, y: np.ndarray, knots: np.ndarray, min_count: int, linear: bool
) -> np.ndarray:
    """Kernel regression of ``y`` on ``x`` at ``knots``: Gaussian weights whose width at a
    knot is the knot spacing or the distance to its ``min_count``-th nearest sample,
    whichever is larger (so sparse regions borrow from farther samples rather than
    reporting noise); local-linear (``linear``; it extrapolates a trend into sparse ends,
    as a PCM RESET from a rarely visited high conductance needs) or local-constant."""
    spacing = knots[1] - knots[0] if knots.size > 1 else max(float(np.ptp(x)), 1e-30)
    d = x[None, :] - knots[:, None]
    k = min(min_count, x.size) - 1
    h = np.maximum(np.partition(np.abs(d), k, axis=1)[:, k], spacing)[:, None]
    w = np.exp(-0.5 * np.square(d / h))
    s0, t0 = w.sum(1), (w * y).sum(1)
    if not linear:
        return t0 / s0
    s1, s2, t1 = (w * d).sum(1), (w * d * d).sum(1), (w * d * y).sum(1)
    det = s0 * s2 - s1 * s1
    ok = det > 1e-9 * s0 * s2
    return np.where(ok, (s2 * t0 - s1 * t1) / np.where(ok, det, 1.0), t0 / s0)


def _read_noise(
    r: np.ndarray, t: _Transitions, knots: np.ndarray, mean_t: np.ndarray, min_count: int
):
    """Read noise ``sigma_read(G) = rel G + floor`` from one cell's consecutive step
    residuals ``r`` (step less the mean step at the *measured* conductance).

    A read error ``e`` enters step n with sign +1 and step n+1 with sign -(1 + s), s the
    slope of the mean step at that conductance (the error also shifts where the next mean
    step is looked up), so the lag-1 covariance is ``-(1 + s) sigma_read^2``; a cell's own
    step scale adds the same positive covariance at lags 1 and 2. Hence
    ``sigma_read^2 = (C_2 - C_1) / (1 + s)``, from pairs where 1 + s > 0.3 (a step that
    resets the state, s = -1, carries no trace of the previous read). Estimated per
    conductance bin, then a line through the per-bin values weighted by their counts, both
    coefficients kept >= 0. Returns (rel, floor_s)."""
    one = np.flatnonzero(t.follows)
    two = one[t.follows[one + 1]] if one.size else one
    if two.size == 0 or knots.size < 2:
        return 0.0, 0.0
    g = t.g_next[two]
    slope = _interp_rows(np.gradient(mean_t, knots, axis=1), knots, g, t.cls[two + 1])
    factor = 1.0 + slope
    keep = factor > 0.3
    two, g, factor = two[keep], g[keep], factor[keep]
    half = (knots[1] - knots[0]) / 2
    b = np.clip(np.round((g - knots[0]) / (2 * half)).astype(int), 0, knots.size - 1)
    n = np.bincount(b, minlength=knots.size)
    lag = r[two] * r[two + 2] - r[two] * r[two + 1]
    num = np.bincount(b, weights=lag, minlength=knots.size)
    den = np.bincount(b, weights=factor, minlength=knots.size)
    ok = n >= min_count
    if not ok.any():
        return 0.0, 0.0
    sigma = np.sqrt(np.maximum(num[ok] / den[ok], 0.0))
    return noise_line(knots[ok], sigma, n[ok])


def noise_line(g_s: np.ndarray, sigma_s: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """``sigma = rel G + floor`` through per-conductance read-noise estimates, weighted by
    the square root of the samples behind each, both coefficients kept >= 0; a floor only
    when the conductances span less than a factor 1.5 (the slope is not identifiable)."""
    g, sigma, w = (np.asarray(a, dtype=float) for a in (g_s, sigma_s, np.sqrt(counts)))
    if g.size == 0:
        return 0.0, 0.0
    if g.size < 2 or g.max() < 1.5 * max(g.min(), 1e-30):
        return 0.0, float(np.sum(w**2 * sigma) / np.sum(w**2))
    rel, floor = np.polyfit(g, sigma, 1, w=w)
    if floor < 0:  # through the origin: a purely relative noise
        rel, floor = float(np.sum(w**2 * g * sigma) / np.sum(w**2 * g**2)), 0.0
    if rel < 0:  # a constant noise
        rel, floor = 0.0, float(np.sum(w**2 * sigma) / np.sum(w**2))
    return float(rel), float(floor)


def build_empirical(
    traces: Sequence[PulseTrace],
    *,
    n_knots: int = 16,
    min_per_bin: int = 20,
    read_noise: tuple[float, float] | None = None,
    source: str = "",
) -> FitResult:
    """An ``empirical`` device model from measured pulse traces (see the module docstring),
    as a versioned ``FitResult`` whose ``to_yaml`` file ``build_device_model`` loads.

    ``min_per_bin``: the fewest steps a knot's estimate rests on (the smoothing widens
    where data are sparse). ``read_noise``: (relative, floor S) of the read-noise std when known from a read-noise
    run; else it is estimated from the step residuals' lag covariances.
    """
    if not traces:
        raise ValueError("no pulse traces to build a twin from")
    classes = pulse_classes(traces)
    t = _transitions(traces, classes)
    all_g = np.concatenate([tr.g_s.ravel() for tr in traces])
    g_lo, g_hi = np.quantile(all_g, [0.001, 0.999])
    knots = np.linspace(g_lo, g_hi, n_knots)
    n_cls = len(classes)
    by_class = [t.cls == c for c in range(n_cls)]

    mean_t = np.stack([_smooth(t.g[m], t.dg[m], knots, min_per_bin, True) for m in by_class])
    mu = _interp_rows(mean_t, knots, t.g, t.cls)
    r = t.dg - mu

    rel, floor = _read_noise(r, t, knots, mean_t, min_per_bin) if read_noise is None else read_noise
    read_var = 2.0 * (rel * t.g + floor) ** 2

    # residual variance per class at the knots, less read noise: C2C + D2D
    var_t = np.stack(
        [_smooth(t.g[m], r[m] ** 2 - read_var[m], knots, min_per_bin, False) for m in by_class]
    ).clip(min=0.0)
    var_i = _interp_rows(var_t, knots, t.g, t.cls)

    # device-to-device, per class: the spread of each cell's own step scale (least-squares
    # ratio of its steps to the pooled mean steps) beyond that ratio's estimation noise
    dtod = np.zeros(n_cls)
    for c, m in enumerate(by_class):
        cells = t.cell[m]
        smm = np.bincount(cells, weights=mu[m] ** 2)
        smd = np.bincount(cells, weights=mu[m] * t.dg[m])
        smv = np.bincount(cells, weights=mu[m] ** 2 * var_i[m])
        has = smm > 0
        if has.sum() >= 3:
            scale = smd[has] / smm[has]
            noise = smv[has] / smm[has] ** 2
            dtod[c] = math.sqrt(max(scale.var(ddof=1) - noise.mean(), 0.0))
    c2c_var = np.maximum(var_t - (mean_t * dtod[:, None]) ** 2, 0.0)

    g0 = np.concatenate([tr.g_s[:, 0] for tr in traces])
    g0_var = max(g0.var(ddof=1) - (rel * g0.mean() + floor) ** 2, 0.0) if g0.size > 1 else 0.0
    params: dict[str, Any] = {
        "g_min_s": float(g_lo),
        "g_max_s": float(g_hi),
        "g_knots_s": knots.tolist(),
        "pulse_v": [c[0] for c in classes],
        "pulse_width_s": [c[1] for c in classes],
        "step_mean_s": mean_t.tolist(),
        "step_std_s": np.sqrt(c2c_var).tolist(),
        "step_dtod": dtod.tolist(),
        "g0_mean_s": float(g0.mean()),
        "g0_std_s": float(math.sqrt(g0_var)),
        "read_noise_rel": rel,
        "read_noise_floor_s": floor,
    }
    rms = float(np.sqrt(np.mean(r**2)))
    return FitResult(
        model="empirical",
        params=params,
        stderr={},
        residual_rms=rms,
        n_points=int(t.dg.size),
        source=source or "; ".join(tr.source for tr in traces if tr.source),
    )


# -- replay and check ----------------------------------------------------------------------


def state_at(model: DeviceModel, d2d: dict, g_s: torch.Tensor, template: torch.Tensor):
    """A state of ``model`` whose conductance is ``g_s``: its first component set directly
    when it is the conductance (``g_s``), else found by bisection on the normalised state
    ``x`` in [0, 1] (the ion-drift and threshold models), other components from
    ``template``. Conductances outside the model's reach end at the nearer bound."""
    state = template.clone()
    if model.state_names and model.state_names[0] == "g_s":
        state[..., 0] = g_s
        return state
    lo = torch.zeros_like(g_s)
    hi = torch.ones_like(g_s)

    def g_of(x):
        s = state.clone()
        s[..., 0] = x
        return model.conductance(s, d2d, 0.1, 0.0)

    rising = bool((g_of(hi) >= g_of(lo)).float().mean() >= 0.5)
    for _ in range(50):  # bisection: 2^-50 of the state range, a loop over iterations
        mid = (lo + hi) / 2
        above = g_of(mid) > g_s
        go_down = above if rising else ~above
        hi = torch.where(go_down, mid, hi)
        lo = torch.where(go_down, lo, mid)
    state[..., 0] = (lo + hi) / 2
    return state


def replay(
    model: DeviceModel,
    trace: PulseTrace,
    *,
    replicates: int = 4,
    seed: int = 0,
    v_read_v: float = 0.1,
    period_s: float = 1e-3,
    read_noise: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Simulated reads (replicates x cells, n_pulses + 1) of ``trace``'s schedule on
    ``model``: each simulated cell starts at its measured first conductance, gets its own
    device-to-device draw per replicate, and every read carries the model's read noise.
    Pulses are ``period_s`` apart (it matters only to models that drift). A model without
    read noise of its own (in memhil the simulator's read settings add it) is read with
    ``read_noise`` = (relative, floor S) std."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    shape = (replicates, trace.cells)
    d2d = model.sample_d2d(shape, gen, dtype=dt)
    g0 = torch.tensor(trace.g_s[:, 0], dtype=dt).expand(shape)
    state = state_at(model, d2d, g0, model.initial_state(d2d, shape, gen, dtype=dt))

    def read(state, t):
        g = model.conductance(state, d2d, v_read_v, t)
        std = model.read_noise_std(g, d2d)
        if std is None:
            std = read_noise[0] * g.abs() + read_noise[1]
        # a noisy read is floored at 0 S, as the simulator's reads are
        return (g + std * torch.randn(shape, generator=gen, dtype=dt)).clamp_min(0.0)

    out = torch.empty((*shape, trace.v.size + 1), dtype=dt)
    out[..., 0] = g0
    ones = torch.ones(shape, dtype=torch.int64)
    for n, (v, w) in enumerate(zip(trace.v, trace.width_s)):  # the schedule, in order
        t = (n + 1) * period_s
        vt = torch.full(shape, float(v), dtype=dt)
        wt = torch.full(shape, float(w), dtype=dt)
        state = model.step(state, d2d, vt, wt, ones, t, gen)
        out[..., n + 1] = read(state, t)
    return out.numpy()


@dataclass
class ClassCheck:
    """One pulse class of a check: its KS distance and p-value, and the measured and
    predicted mean step (S)."""

    v: float
    width_s: float
    ks_distance: float
    ks_p: float
    mean_step_measured_s: float
    mean_step_predicted_s: float


@dataclass
class TwinCheck:
    """How well a device model predicts a held-out trace (see ``check_model``)."""

    model: str
    mean_error_rel: float
    spread_error_rel: float
    classes: list[ClassCheck]
    measured_mean_s: np.ndarray = field(repr=False)
    predicted_mean_s: np.ndarray = field(repr=False)
    measured_std_s: np.ndarray = field(repr=False)
    predicted_std_s: np.ndarray = field(repr=False)
    predicted_steps_s: np.ndarray = field(repr=False)

    @property
    def ks_distance(self) -> float:
        return max(c.ks_distance for c in self.classes)

    @property
    def ks_p(self) -> float:
        return min(c.ks_p for c in self.classes)

    @property
    def consistent(self) -> bool:
        """Every class passes the KS test at ``KS_ALPHA`` and the mean trajectory is within
        ``MEAN_ERROR_MAX`` of the span."""
        return self.ks_p >= KS_ALPHA and self.mean_error_rel <= MEAN_ERROR_MAX


def check_model(
    model: DeviceModel,
    trace: PulseTrace,
    *,
    replicates: int = 4,
    seed: int = 0,
    read_noise: tuple[float, float] | None = None,
) -> TwinCheck:
    """Replay ``trace`` on ``model`` and compare (module docstring). A model without its
    own read noise is read with ``read_noise`` (relative, floor S), by default the read noise the trace
    itself shows (the estimator of ``build_empirical``), so that every model is judged on
    its programming behaviour, not on a read noise the simulator adds elsewhere."""
    if read_noise is None:
        own = build_empirical([trace]).params
        read_noise = (own["read_noise_rel"], own["read_noise_floor_s"])
    sim = replay(model, trace, replicates=replicates, seed=seed, read_noise=read_noise)
    meas = trace.g_s
    span = float(np.quantile(meas, 0.999) - np.quantile(meas, 0.001)) or 1.0
    m_mean, m_std = meas.mean(0), meas.std(0, ddof=1)
    flat = sim.reshape(-1, sim.shape[-1])
    p_mean, p_std = flat.mean(0), sim.std(1, ddof=1).mean(0)
    classes = pulse_classes([trace])
    idx = _class_index(trace, classes)
    m_dg, p_dg = np.diff(meas, axis=1), np.diff(flat, axis=1)
    out = []
    for c, (v, w) in enumerate(classes):
        a, b = m_dg[:, idx == c].ravel(), p_dg[:, idx == c].ravel()
        stride_a = -(-a.size // KS_SAMPLES_MAX)
        stride_b = -(-b.size // (replicates * KS_SAMPLES_MAX))
        p_value = ks_2samp(a[::stride_a], b[::stride_b]).pvalue
        d = ks_2samp(a, b).statistic
        out.append(ClassCheck(v, w, float(d), float(p_value), float(a.mean()), float(b.mean())))
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))
    return TwinCheck(
        model=model.name,
        mean_error_rel=rms(p_mean - m_mean) / span,
        spread_error_rel=rms(p_std - m_std) / span,
        classes=out,
        measured_mean_s=m_mean,
        predicted_mean_s=p_mean,
        measured_std_s=m_std,
        predicted_std_s=p_std,
        predicted_steps_s=p_dg,
    )
