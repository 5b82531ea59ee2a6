"""Digital twins: build a data-driven device model from measured pulse trains, and check any
device model against held-out measurements of the chip (docs/twin.md).

*Build* (``build_empirical``): every measured transition ``(G_n, pulse_n) -> G_{n+1}`` of
every cell gives a step ``dG``; per pulse class, the steps give the mean-step and spread
tables of ``memhil.devices.empirical`` and each device's own response. The measured spread
holds three parts, which the builder separates:

* device-to-device: each device's own axis stretch ``a_d`` (its saturation level) and step
  scale per class ``s_dc``, estimated alternately with the tables (a pooled G-conditioned
  table is biased where devices differ: fast devices leave low conductances early), the
  stretch kept only where Schwarz's criterion asks for it; the measured responses, with
  their estimation noise shrunk out (split-half covariance), become the twin's device table
  (this needs repeated trains per cell). On the resistance axis (threshold switches) each
  device's floor is measured where its RESET runs rest on it (``_device_bounds``);
* read noise: each read enters two consecutive steps with opposite signs, so consecutive
  step residuals of one cell have covariance ``-sigma_read(G)^2``; the builder estimates
  ``sigma_read = rel G + floor`` from that covariance (no read-noise run needed), or, on
  the resistance axis, from the reads of devices resting on their floors;
* cycle-to-cycle: what remains, additive or scaling with the device's step (the likelier).

*Check* (``check_model``): replays a held-out trace's pulse schedule on any device model,
starting each simulated cell at its measured first conductance, reads it there and after
every step with the model's read noise, and compares with the measurement: the error of
the mean trajectory and of the across-cell spread (both relative to the measured
conductance span) and, per pulse class, the two-sample Kolmogorov-Smirnov distance between measured and predicted steps
(its p-value by permuting whole devices, ``ks_device_test``) and the one-step
predictive log-likelihood of the held-out steps (``step_log_likelihood``), which ranks
models.
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
#: The KS p-value is a permutation test over devices (``ks_device_test``): steps of one
#: device share its own response, so they are not independent samples, and a p-value that
#: treats them as such rejects even the true model of a chip whose devices differ (VTEAM:
#: 128 devices x 30 steps, the truth at p 0.008). At most this many measured steps (even
#: strides over devices, then pulses; as many predicted ones) enter it, so that it detects
#: differences of a size that matters (D of a few 0.01), not any smoothing bias that 10^4
#: steps would make significant. ``D`` is reported on all steps and replicates.
KS_SAMPLES_MAX = 2000
#: Device-label permutations of the KS test (its smallest p-value is 1 / (this + 1)).
KS_PERMUTATIONS = 499
#: The KS distance of the permutation test is taken at most at this many pooled quantiles.
KS_GRID_MAX = 512


def ks_device_test(
    measured: np.ndarray, predicted: np.ndarray, *, permutations: int = KS_PERMUTATIONS, seed=0
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov distance of the steps of ``measured`` (devices, steps)
    and ``predicted`` (devices, steps), and its p-value by permuting whole devices between
    the two samples (the device is the unit that was drawn; Good, *Permutation Tests*,
    Springer 2000, ch. 3). The distance is evaluated at up to ``KS_GRID_MAX`` quantiles of
    the pooled steps, for the observed and every permuted split alike; each permutation's
    two ECDFs are one matrix product of the split with the per-device cumulative counts."""
    na, nb = measured.shape[0], predicted.shape[0]
    both = np.concatenate([measured, predicted])
    pooled = np.sort(both.ravel())
    if pooled.size <= KS_GRID_MAX:
        grid = np.unique(pooled)
    else:
        grid = np.unique(np.quantile(pooled, np.linspace(0, 1, KS_GRID_MAX)))
    # steps of each device at or below each grid value: a histogram over the grid, summed
    pos = np.searchsorted(grid, both, side="left")
    device = np.repeat(np.arange(na + nb), both.shape[1])
    hist = np.bincount(
        device * (grid.size + 1) + pos.ravel(), minlength=(na + nb) * (grid.size + 1)
    )
    counts = np.cumsum(hist.reshape(na + nb, grid.size + 1)[:, :-1], axis=1).astype(float)
    rng = np.random.default_rng(seed)
    keys = rng.random((permutations, na + nb))
    in_a = np.empty((permutations + 1, na + nb))
    in_a[0] = np.arange(na + nb) < na  # the observed split, then random splits of na devices
    in_a[1:] = keys <= np.sort(keys, axis=1)[:, na - 1 : na]
    k = both.shape[1]
    dist = np.abs(in_a @ counts / (na * k) - (1.0 - in_a) @ counts / (nb * k)).max(1)
    # a permuted distance equal to the observed one (to rounding) counts as reaching it
    reach = dist[1:] >= dist[0] - 1e-12
    return float(dist[0]), float((1 + reach.sum()) / (permutations + 1))


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
    pulse: np.ndarray  # index of the pulse in its schedule
    n_pulses: np.ndarray  # length of that schedule
    late: np.ndarray  # True in the last third of its run of pulses of one class


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
        parts["pulse"].append(np.tile(np.arange(n), c))
        parts["n_pulses"].append(np.full(c * n, n))
        parts["late"].append(np.tile(_late_in_run(cls[0]), c))
        offset += c
    return _Transitions(**{k: np.concatenate(v) for k, v in parts.items()})


def _late_in_run(cls: np.ndarray) -> np.ndarray:
    """True for the pulses of a schedule (its class per pulse) in the last third of their
    run of consecutive pulses of one class."""
    n = cls.size
    start = np.r_[True, cls[1:] != cls[:-1]]
    run = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    length = np.diff(np.r_[first, n])
    return np.arange(n) - first[run] >= (2 * length[run]) // 3


def _interp_rows(table: np.ndarray, knots: np.ndarray, g: np.ndarray, cls: np.ndarray):
    """Row ``cls`` of ``table`` interpolated at ``g`` (flat beyond the end knots)."""
    out = np.empty_like(g)
    for c in np.unique(cls):  # a loop over the few pulse classes, not over cells
        m = cls == c
        out[m] = np.interp(g[m], knots, table[c])
    return out


def _smooth(
    x: np.ndarray,
    y: np.ndarray,
    knots: np.ndarray,
    min_count: int,
    linear: bool,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Kernel regression of ``y`` on ``x`` at ``knots``: Gaussian weights whose width at a
    knot is the local knot spacing or the distance to its ``min_count``-th nearest sample,
    whichever is larger (so sparse regions borrow from farther samples rather than
    reporting noise); local-linear (``linear``; it extrapolates a trend into sparse ends,
    as a PCM RESET from a rarely visited high conductance needs) or local-constant.
    ``weight``: per-sample weights (a weighted least-squares fit)."""
    if knots.size > 1:
        spacing = np.gradient(knots)
    else:
        spacing = np.array([max(float(np.ptp(x)), 1e-30)])
    d = x[None, :] - knots[:, None]
    k = min(min_count, x.size) - 1
    h = np.maximum(np.partition(np.abs(d), k, axis=1)[:, k], spacing)[:, None]
    w = np.exp(-0.5 * np.square(d / h))
    if weight is not None:
        w = w * weight[None, :]
    s0, t0 = w.sum(1), (w * y).sum(1)
    s0 = np.where(s0 > 0, s0, 1.0)
    if not linear:
        return t0 / s0
    s1, s2, t1 = (w * d).sum(1), (w * d * d).sum(1), (w * d * y).sum(1)
    det = s0 * s2 - s1 * s1
    ok = det > 1e-9 * s0 * s2
    return np.where(ok, (s2 * t0 - s1 * t1) / np.where(ok, det, 1.0), t0 / s0)


def _read_noise(r: np.ndarray, t: _Transitions, g: np.ndarray, slope: np.ndarray, knots, min_count):
    """Read noise ``sigma_read(G) = rel G + floor`` from one cell's consecutive step
    residuals ``r`` (step less the cell's own mean step at the *measured* conductance).

    A read error ``e`` enters step n with sign +1 and step n+1 with sign -(1 + s), s the
    slope of the cell's mean step at that conductance (``slope``, per transition: the
    error also shifts where the next mean step is looked up), so the lag-1 covariance is
    ``-(1 + s) sigma_read^2``; what is left of a cell's own step scale adds the same
    positive covariance at lags 1 and 2. Hence ``sigma_read^2 = (C_2 - C_1) / (1 + s)``,
    from pairs where 1 + s > 0.3 (a step that resets the state, s = -1, carries no trace
    of the previous read). Estimated per conductance bin (``g``: the read shared by the two
    steps, binned at the nearest knot), then a line through the per-bin values weighted by
    their counts, both coefficients kept >= 0. Returns (rel, floor_s)."""
    one = np.flatnonzero(t.follows)
    two = one[t.follows[one + 1]] if one.size else one
    if two.size == 0 or knots.size < 2:
        return 0.0, 0.0
    factor = 1.0 + slope[two + 1]
    keep = factor > 0.3
    two, factor = two[keep], factor[keep]
    gb = g[two + 1]
    b = np.clip(np.searchsorted((knots[1:] + knots[:-1]) / 2, gb), 0, knots.size - 1)
    n = np.bincount(b, minlength=knots.size)
    lag = r[two] * r[two + 2] - r[two] * r[two + 1]
    num = np.bincount(b, weights=lag, minlength=knots.size)
    den = np.bincount(b, weights=factor, minlength=knots.size)
    ok = n >= min_count
    if not ok.any():
        return 0.0, 0.0
    sigma = np.sqrt(np.maximum(num[ok] / den[ok], 0.0))
    return noise_line(knots[ok], sigma, n[ok])


#: Axis stretches searched per device: a log grid, the minimum refined by a parabola.
AXIS_GRID = np.geomspace(0.5, 2.0, 41)
#: Prior spread (log) of a device's axis stretch: it pulls a device whose trace does not
#: show its axis (one that never left a bound) to the nominal axis, and is weak against a
#: trace that does (tens of steps).
AXIS_PRIOR_LOG_STD = 0.25
#: Ridge weight, in units of the median device's information, pulling a device's step
#: scale for a class to 1 when its trace says little about it (steps at a bound).
SCALE_PRIOR_WEIGHT = 0.01
#: Rounds of alternating estimation: the step tables given the devices' responses, the
#: responses given the tables.
RESPONSE_ROUNDS = 4
#: Reads are floored at this conductance (S) before the resistance axis takes 1/G.
_G_TINY = 1e-15
#: At most this many measured devices (an even subsample) form the twin's device table.
DEVICES_MAX = 512


@dataclass
class _Responses:
    axis: np.ndarray  # (cells,) axis stretch a_d
    scale: np.ndarray  # (cells, classes) step scale s_dc
    sse: np.ndarray  # (cells,) squared step residual
    noise: np.ndarray  # (cells, classes) variance of the step-scale estimate


def _on_axis(g: np.ndarray, axis: np.ndarray, g_lo: float) -> np.ndarray:
    """Conductances mapped to the nominal axis: ``g_lo + (g - g_lo) / a``."""
    return g_lo + (g - g_lo) / axis


def _responses(
    t: _Transitions,
    use: np.ndarray,
    knots: np.ndarray,
    mean_t: np.ndarray,
    g_lo: float,
    n_cells: int,
    stretch: bool = True,
    fixed_axis: np.ndarray | None = None,
) -> _Responses:
    """Each cell's own response to the pooled step tables, from its transitions ``use``:
    the axis stretch ``a`` minimising its squared step residual (the step scale profiled
    out in closed form, plus a log-normal prior on ``a``; 1 unless ``stretch``; ``fixed_axis``
    where the stretch is measured, ``_device_bounds``), then its
    least-squares step scale per class at that ``a``, with a ridge towards 1
    (``SCALE_PRIOR_WEIGHT``), and its squared residual."""
    n_cls = mean_t.shape[0]
    idx = t.cell[use] * n_cls + t.cls[use]
    dg, g, cls = t.dg[use], t.g[use], t.cls[use]
    size = n_cells * n_cls
    sdd = np.bincount(idx, weights=dg * dg, minlength=size).reshape(n_cells, n_cls)
    count = np.bincount(t.cell[use], minlength=n_cells)

    def sums(axis_of_transition: np.ndarray):
        mu = axis_of_transition * _interp_rows(
            mean_t, knots, _on_axis(g, axis_of_transition, g_lo), cls
        )
        smm = np.bincount(idx, weights=mu * mu, minlength=size).reshape(n_cells, n_cls)
        smd = np.bincount(idx, weights=mu * dg, minlength=size).reshape(n_cells, n_cls)
        return smm, smd

    cell_of = t.cell[use]
    if fixed_axis is not None:
        smm, smd = sums(fixed_axis[cell_of])
        return _scales(fixed_axis.copy(), smm, smd, sdd, count)
    if not stretch:
        smm, smd = sums(np.ones(dg.shape))
        return _scales(np.ones(n_cells), smm, smd, sdd, count)
    # the squared residual of each cell at each grid stretch (its step scales profiled out)
    sse = np.empty((AXIS_GRID.size, n_cells))
    for j, a in enumerate(AXIS_GRID):  # a loop over the grid, all cells at once
        smm, smd = sums(np.full(dg.shape, a))
        sse[j] = np.sum(sdd - np.where(smm > 0, smd * smd / np.where(smm > 0, smm, 1.0), 0), 1)
    # the residual variance per step at the best stretch scales the prior's weight
    var = np.maximum(sse.min(0) / np.maximum(count, 1), 1e-300)
    log_a = np.log(AXIS_GRID)
    cost = sse / var + np.square(log_a[:, None] / AXIS_PRIOR_LOG_STD)
    j = np.clip(cost.argmin(0), 1, AXIS_GRID.size - 2)
    cells = np.arange(n_cells)
    c0, c1, c2 = cost[j - 1, cells], cost[j, cells], cost[j + 1, cells]
    curv = c0 - 2 * c1 + c2
    step = np.where(curv > 0, 0.5 * (c0 - c2) / np.where(curv > 0, curv, 1.0), 0.0)
    dlog = log_a[1] - log_a[0]
    axis = np.exp(log_a[j] + np.clip(step, -1.0, 1.0) * dlog)
    axis = np.where(count > 0, axis, 1.0)
    smm, smd = sums(axis[cell_of])
    return _scales(axis, smm, smd, sdd, count)


#: A step ends "at" its device's bound within this many read-noise sds of the bound's level.
BOUND_CUT_SDS = 1.0


@dataclass
class _Bounds:
    level: np.ndarray  # (cells,) each device's own bound on the builder's axis
    nominal: float  # the median level: the nominal axis' top
    cut: np.ndarray  # (transitions,) steps the bound may have cut short
    read_sd: float  # read-noise sd at the bounds (on the builder's axis)


def _device_bounds(t: _Transitions, n_cls: int, n_cells: int) -> _Bounds | None:
    """Each device's own bound where its motion stops hard, measured: the mean of its
    reads in the last third of every run of the pulse class that drives the state up the
    axis (on the resistance axis: RESET towards the device's own R_off), where a threshold
    switch sits on its bound (VTEAM's state is clamped at x = 1, Kvatinsky et al., IEEE
    TCAS-II 2015). A step of that class that starts or ends within ``BOUND_CUT_SDS`` read
    sds (the scatter of consecutive late reads) of the level may have been cut short: such
    steps are left out of the step tables, and the twin's clip at the level makes the cut.
    A fitted stretch (``_responses``) placed the bounds 6 % low on a VTEAM mock chip:
    a pooled step table ramps to zero over the spread of the devices' bounds. ``None``
    where a device has fewer than two late reads; whether the devices do rest at their
    bounds is not tested here: a twin on this axis is kept only if its replay of the
    build data beats the conductance axis' (``build_empirical``)."""
    up = int(
        np.argmax(
            [t.dg[t.cls == c].mean() if np.any(t.cls == c) else -np.inf for c in range(n_cls)]
        )
    )
    on = t.late & (t.cls == up)
    count = np.bincount(t.cell[on], minlength=n_cells)
    if count.min() < 2:
        return None
    level = np.bincount(t.cell[on], weights=t.g_next[on], minlength=n_cells) / count
    sd = _resting_read_sd(t, on)
    near = np.maximum(t.g, t.g_next) > level[t.cell] - BOUND_CUT_SDS * sd
    return _Bounds(level, float(np.median(level)), (t.cls == up) & near, sd)


def _resting_read_sd(t: _Transitions, late: np.ndarray) -> float:
    """The read-noise sd from the steps between two consecutive reads in ``late`` (the
    late part of runs that drive devices onto a bound, where a step is the difference of
    two reads' errors): 1.4826 times their median absolute deviation over sqrt 2, which
    the few devices still moving do not move; 0 without such steps."""
    both = late & np.r_[False, late[:-1]] & np.r_[False, t.cell[1:] == t.cell[:-1]]
    if not both.any():
        return 0.0
    dev = np.abs(t.dg[both] - np.median(t.dg[both]))
    return float(1.4826 * np.median(dev) / math.sqrt(2.0))


def _scales(
    axis: np.ndarray, smm: np.ndarray, smd: np.ndarray, sdd: np.ndarray, count: np.ndarray
) -> _Responses:
    """The step scales from the per-cell, per-class sums of mu^2, mu dG and dG^2 (mu the
    table's step at the cell's stretch), ridged towards 1; each cell's residual and the
    variance of its scale estimates (its residual variance per step over sum mu^2)."""
    prior = SCALE_PRIOR_WEIGHT * np.median(np.where(smm > 0, smm, np.nan), 0)
    prior = np.nan_to_num(prior, nan=0.0)
    scale = (smd + prior) / np.maximum(smm + prior, 1e-300)
    scale = np.where(smm + prior > 0, scale, 1.0).clip(min=0.0)
    sse = np.maximum(np.sum(sdd - 2 * scale * smd + scale**2 * smm, 1), 0.0)
    per_step = sse / np.maximum(count - smm.shape[1] - 1, 1)
    # a class a cell has no steps of (all cut at its bound) is unknown: infinite noise
    info = smm + prior
    noise = np.full(info.shape, np.inf)
    np.divide(np.broadcast_to(per_step[:, None], info.shape), info, out=noise, where=info > 0)
    return _Responses(axis, scale, sse, noise)


def _denoised(full: np.ndarray, half_a: np.ndarray, half_b: np.ndarray) -> np.ndarray:
    """Per-cell estimates pulled towards their mean so that their spread is the true
    spread, not the true spread plus estimation noise: two estimates of the same cells from
    disjoint parts of their transitions have covariance = the true variance, while the
    full-data estimate has variance true + noise; each column is shrunk by
    ``sqrt(cov / var)`` (in [0, 1])."""
    out = full.copy()
    cols = full.reshape(full.shape[0], -1)
    a, b = half_a.reshape(cols.shape), half_b.reshape(cols.shape)
    res = out.reshape(cols.shape)
    for c in range(cols.shape[1]):  # a loop over the few response columns
        var = cols[:, c].var()
        cov = np.mean((a[:, c] - a[:, c].mean()) * (b[:, c] - b[:, c].mean()))
        k = math.sqrt(min(max(cov / var, 0.0), 1.0)) if var > 0 else 0.0
        res[:, c] = cols[:, c].mean() + k * (cols[:, c] - cols[:, c].mean())
    return out


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


def trace_read_noise(
    trace: PulseTrace, *, n_knots: int = 16, min_per_bin: int = 20
) -> tuple[float, float]:
    """(relative, floor S) of the read noise a trace shows, from its lag covariances about
    the pooled mean steps (``_read_noise``), lowered to the scatter of devices resting on
    a bound where that is lower (``_resting_read_sd``): the quick estimate ``check_model``
    reads models without their own read noise with; ``build_empirical`` refines it per
    device."""
    classes = pulse_classes([trace])
    t = _transitions([trace], classes)
    g_lo, g_hi = np.quantile(trace.g_s, [0.001, 0.999])
    knots = np.linspace(g_lo, g_hi, n_knots)
    masks = [t.cls == c for c in range(len(classes))]
    mean_t = np.stack([_smooth(t.g[m], t.dg[m], knots, min_per_bin, True) for m in masks])
    r = t.dg - _interp_rows(mean_t, knots, t.g, t.cls)
    slope = _interp_rows(np.gradient(mean_t, knots, axis=1), knots, t.g, t.cls)
    rel, floor = _read_noise(r, t, t.g, slope, knots, min_per_bin)
    # where runs end with devices at rest on a bound, their reads show the noise there:
    # the class whose late reads scatter least (relative to their level) is the one at
    # rest; its scatter replaces the lag estimate where lower (the lag covariances about
    # a pooled mean step read VTEAM's 1 % as 1.1-3.9 %)
    rest = []
    for m in masks:  # a loop over the few pulse classes
        late = t.late & m
        sd = _resting_read_sd(t, late)
        if sd > 0 and late.sum() >= min_per_bin:
            rest.append((sd / float(np.median(t.g_next[late])), sd))
    if rest and min(rest)[1] < rel * min(rest)[1] / min(rest)[0] + floor:
        return 0.0, min(rest)[1]
    return rel, floor


#: Axes ``build_empirical`` chooses between (``step_axis`` of ``memhil.devices.empirical``).
STEP_AXES = ("conductance", "resistance")


def build_empirical(
    traces: Sequence[PulseTrace],
    *,
    n_knots: int = 16,
    min_per_bin: int = 20,
    read_noise: tuple[float, float] | None = None,
    step_axis: str = "auto",
    source: str = "",
) -> FitResult:
    """An ``empirical`` device model from measured pulse traces (see the module docstring),
    as a versioned ``FitResult`` whose ``to_yaml`` file ``build_device_model`` loads.

    ``min_per_bin``: the fewest steps a knot's estimate rests on (the smoothing widens
    where data are sparse). ``read_noise``: (relative, floor S) of the read-noise std when
    known from a read-noise run; else it is estimated from the step residuals' lag
    covariances. At most ``DEVICES_MAX`` measured devices form the device table.
    ``step_axis``: whether each device's own response scales its steps in conductance or
    in resistance; ``auto`` builds both and keeps the one whose replay of the build traces
    is closer to them (``_replay_misfit``).
    """
    if step_axis not in ("auto", *STEP_AXES):
        raise ValueError(
            f"step_axis must be 'auto', 'conductance' or 'resistance', got {step_axis!r}"
        )
    if not traces:
        raise ValueError("no pulse traces to build a twin from")
    fits = [
        _build_on_axis(traces, axis == "resistance", n_knots, min_per_bin, read_noise, source)
        for axis in (STEP_AXES if step_axis == "auto" else (step_axis,))
    ]
    return fits[0] if len(fits) == 1 else min(fits, key=lambda f: _replay_misfit(f, traces))


def _replay_misfit(fit: FitResult, traces: Sequence[PulseTrace]) -> float:
    """The largest KS distance, over pulse classes, between the steps of ``traces`` and
    those of one replay of their schedules on ``fit``'s model: the check
    (``check_model``) on the build data itself. Axes are chosen by it rather than by a
    Gaussian likelihood, which a threshold switch's steps (a jump or nothing at its
    bound) are far from: on VTEAM mock chips the Gaussian likelihood preferred the
    conductance axis, whose twin fails the check on held-out devices (KS D 0.08-0.15)."""
    model = fit.device_model()
    worst = 0.0
    for tr in traces:
        sim = replay(model, tr, replicates=1, read_noise=(0.0, 0.0))[0]
        idx = _class_index(tr, pulse_classes([tr]))
        m_dg, p_dg = np.diff(tr.g_s, axis=1), np.diff(sim, axis=1)
        for c in np.unique(idx):  # a loop over the few pulse classes
            d = ks_2samp(m_dg[:, idx == c].ravel(), p_dg[:, idx == c].ravel()).statistic
            worst = max(worst, float(d))
    return worst


def _build_on_axis(
    traces: Sequence[PulseTrace],
    resistance: bool,
    n_knots: int,
    min_per_bin: int,
    read_noise: tuple[float, float] | None,
    source: str,
) -> FitResult:
    """``build_empirical`` on one axis. On the resistance axis every read ``y`` of
    the builder below is ``1/G`` and the tables are mapped back to G at the end."""
    g_traces = traces
    if resistance:
        traces = [
            PulseTrace(1.0 / np.maximum(tr.g_s, _G_TINY), tr.v, tr.width_s, tr.source)
            for tr in traces
        ]
    if not traces:
        raise ValueError("no pulse traces to build a twin from")
    classes = pulse_classes(traces)
    t = _transitions(traces, classes)
    n_cls, n_cells = len(classes), int(t.cell.max()) + 1
    by_class = [t.cls == c for c in range(n_cls)]
    reads = np.concatenate([tr.g_s.ravel() for tr in traces])
    first_cell = np.cumsum([0] + [tr.cells for tr in traces[:-1]])
    read_cell = np.concatenate(
        [np.repeat(np.arange(tr.cells) + c0, tr.g_s.shape[1]) for tr, c0 in zip(traces, first_cell)]
    )
    g_lo = float(np.quantile(reads, 0.001))
    flat = _Responses(
        np.ones(n_cells), np.ones((n_cells, n_cls)), np.zeros(n_cells), np.zeros((n_cells, n_cls))
    )

    # on the resistance axis each device's own bound is measured, not fitted (see
    # ``_device_bounds``); the steps it may have cut are left out of the tables
    bounds = _device_bounds(t, n_cls, n_cells) if resistance else None
    everything = np.ones(t.dg.size, dtype=bool) if bounds is None else ~bounds.cut
    by_class = [m & everything for m in by_class]
    fixed = None if bounds is None else (bounds.level - g_lo) / (bounds.nominal - g_lo)

    def tables(resp: _Responses):
        """Knots (uniform blended with quantiles of the reads on the nominal axis: dense
        where the devices spend their time) and the weighted mean-step tables there."""
        u_reads = _on_axis(reads, resp.axis[read_cell], g_lo)
        hi = float(np.quantile(u_reads, 0.999)) if bounds is None else bounds.nominal
        uniform = np.linspace(g_lo, hi, n_knots)
        quant = np.quantile(np.clip(u_reads, g_lo, hi), np.linspace(0, 1, n_knots))
        knots = 0.5 * (uniform + quant)
        a = resp.axis[t.cell]
        sa = resp.scale[t.cell, t.cls] * a
        u = _on_axis(t.g, a, g_lo)
        ok = sa > 1e-9 * np.abs(sa).max()
        y = np.where(ok, t.dg / np.where(ok, sa, 1.0), 0.0)
        mean_t = np.stack(
            [_smooth(u[m], y[m], knots, min_per_bin, True, weight=sa[m] ** 2) for m in by_class]
        )
        return knots, hi, mean_t

    def alternate(stretch: bool):
        fixed_axis = fixed if stretch else None
        resp = flat
        for _ in range(RESPONSE_ROUNDS):  # alternating estimation, a few rounds
            knots, _, mean_t = tables(resp)
            resp = _responses(t, everything, knots, mean_t, g_lo, n_cells, stretch, fixed_axis)
            if fixed_axis is None:  # a measured bound keeps its level
                resp.axis /= np.exp(np.log(resp.axis).mean())
            resp.scale /= np.maximum(resp.scale.mean(0), 1e-300)
        knots, g_hi, mean_t = tables(resp)
        resp = _responses(t, everything, knots, mean_t, g_lo, n_cells, stretch, fixed_axis)
        # Schwarz's criterion (Ann. Stat. 1978): Gaussian deviance + parameters x ln(steps)
        n_d = np.bincount(t.cell, minlength=n_cells)
        bic = np.sum(n_d * np.log(np.maximum(resp.sse, 1e-300) / np.maximum(n_d, 1)))
        bic += n_cells * (n_cls + stretch) * math.log(t.dg.size)
        return bic, resp, knots, g_hi, mean_t, stretch

    # a per-device axis stretch only where the data ask for it (saturation levels that
    # differ between devices), not to soak up what step scales explain
    _, resp, knots, g_hi, mean_t, stretch = min(
        alternate(True), alternate(False), key=lambda f: f[0]
    )
    # the device table: per-cell responses with their estimation noise removed. The axis
    # stretch: split-half (``_denoised``); the step scales: each pulled towards the mean by
    # its own noise (a device that is known to stay put keeps its zero). The halves: the
    # first and the second half of each schedule, i.e. of its repeated trains
    # (interleaved halves would share reads, whose errors anti-correlate)
    first = t.pulse < t.n_pulses / 2
    fixed = fixed if stretch else None
    ra = _responses(t, first & everything, knots, mean_t, g_lo, n_cells, stretch, fixed)
    rb = _responses(t, ~first & everything, knots, mean_t, g_lo, n_cells, stretch, fixed)
    axis_table = np.exp(_denoised(np.log(resp.axis), np.log(ra.axis), np.log(rb.axis)))
    # the true variance from the halves' covariance; each device's noise from its own
    # residuals, scaled so that the noise adds up to the rest of the observed variance
    true_var = np.maximum(
        np.mean((ra.scale - ra.scale.mean(0)) * (rb.scale - rb.scale.mean(0)), 0), 0.0
    )
    total_noise = np.maximum(resp.scale.var(0) - true_var, 0.0)
    known = np.isfinite(resp.noise)
    typical = np.array(
        [resp.noise[known[:, c], c].mean() if known[:, c].any() else 1.0 for c in range(n_cls)]
    )
    noise = np.where(known, resp.noise * total_noise / np.maximum(typical, 1e-300), np.inf)
    pull = np.sqrt(true_var / np.maximum(true_var + noise, 1e-300))
    scale_mean = resp.scale.mean(0)
    scale_table = (scale_mean + pull * (resp.scale - scale_mean)).clip(min=0.0)

    a_i = resp.axis[t.cell]
    s_i = resp.scale[t.cell, t.cls]
    u_i = _on_axis(t.g, a_i, g_lo)
    mu = s_i * a_i * _interp_rows(mean_t, knots, u_i, t.cls)
    if bounds is not None:  # the twin's step as it simulates it: clipped at the bound
        ceiling = g_lo + a_i * (g_hi - g_lo)
        mu = np.minimum(t.g + mu, np.maximum(ceiling, t.g)) - t.g
    r = t.dg - mu
    # each cell's residuals lost 1 + classes fitted degrees of freedom
    n_cell = np.bincount(t.cell, minlength=n_cells).astype(float)
    dof = (n_cell / np.maximum(n_cell - 1 - n_cls, 1.0))[t.cell]

    # the slope of each cell's mean step where it stands (d(s a mu(u))/dG = s mu'(u))
    slope = s_i * _interp_rows(np.gradient(mean_t, knots, axis=1), knots, u_i, t.cls)
    if read_noise is None and bounds is not None:
        # devices resting on their bound: their consecutive reads differ by read noise
        # alone (in G: sd_R / R^2); the lag covariances of moving devices mistook a
        # threshold switch's 1 % for 0.9-1.5 % (VTEAM mock chips)
        rel, floor = 0.0, bounds.read_sd / bounds.nominal**2
    elif read_noise is None:
        rel, floor = _read_noise(r, t, t.g, slope, knots, min_per_bin)
    else:
        rel, floor = read_noise

    def read_sd(y: np.ndarray) -> np.ndarray:
        """The read noise in G, on the resistance axis mapped through |dR/dG| = R^2."""
        return rel * y + (floor * y**2 if resistance else floor)

    # a residual holds the next read's error and the previous one's, (1 + slope) times: the
    # mean step was looked up at the noisy read (a step that returns the device to a level,
    # slope -1, keeps none of the previous read's error)
    read_var = read_sd(t.g_next) ** 2 + np.square((1.0 + slope) * read_sd(t.g))

    # cycle-to-cycle: the residual variance less read noise, per class on the nominal axis,
    # either the same for every device (additive) or scaling with the device's own step
    # (relative, as a threshold switch's is); the one under which the residuals are more
    # likely (Gaussian) is kept
    r2 = dof * r**2
    excess = r2 - read_var
    sa2 = (s_i * a_i) ** 2
    ok = sa2 > 0
    rel_y = np.where(ok, excess / np.where(ok, sa2, 1.0), 0.0)
    var_add, var_rel = (
        np.stack(
            [_smooth(u_i[m], y[m], knots, min_per_bin, False, weight=w[m]) for m in by_class]
        ).clip(min=0.0)
        for y, w in ((excess, np.ones_like(excess)), (rel_y, sa2))
    )

    def nll(pred_var: np.ndarray) -> float:
        v = np.maximum(pred_var + read_var, 1e-300)
        return float(np.sum(np.log(v) + dof * r**2 / v))

    nll_rel = nll(sa2 * _interp_rows(var_rel, knots, u_i, t.cls))
    nll_add = nll(_interp_rows(var_add, knots, u_i, t.cls))
    relative = nll_rel < nll_add
    c2c_var = var_rel if relative else var_add
    step_sd = np.sqrt(c2c_var)
    if resistance:  # the tables back on the conductance axis: the reference device's step
        r_k = knots
        knots = 1.0 / r_k[::-1]
        mean_t = (1.0 / np.maximum(r_k + mean_t, 1e-3 * r_k[0]) - 1.0 / r_k)[:, ::-1]
        step_sd = (step_sd / r_k**2)[:, ::-1]
        g_lo, g_hi = 1.0 / g_hi, 1.0 / g_lo

    g0 = np.concatenate([tr.g_s[:, 0] for tr in g_traces])
    g0_var = max(g0.var(ddof=1) - (rel * g0.mean() + floor) ** 2, 0.0) if g0.size > 1 else 0.0
    keep = np.unique(np.linspace(0, n_cells - 1, min(n_cells, DEVICES_MAX)).round().astype(int))
    params: dict[str, Any] = {
        "g_min_s": g_lo,
        "g_max_s": g_hi,
        "g_knots_s": knots.tolist(),
        "pulse_v": [c[0] for c in classes],
        "pulse_width_s": [c[1] for c in classes],
        "step_mean_s": mean_t.tolist(),
        "step_std_s": step_sd.tolist(),
        "step_std_relative": bool(relative),
        "step_dtod": [0.0] * n_cls,
        "g0_mean_s": float(g0.mean()),
        "g0_std_s": float(math.sqrt(g0_var)),
        "read_noise_rel": rel,
        "read_noise_floor_s": floor,
        "device_axis_scale": axis_table[keep].tolist(),
        "device_step_scale": scale_table[keep].tolist(),
        "step_axis": STEP_AXES[resistance],
    }
    # the residual in G (on the resistance axis through dG = -dR / R^2)
    rms = float(np.sqrt(np.mean((r / t.g**2 if resistance else r) ** 2)))
    fit = FitResult(
        model="empirical",
        params=params,
        stderr={},
        residual_rms=rms,
        n_points=int(t.dg.size),
        source=source or "; ".join(tr.source for tr in traces if tr.source),
    )
    return fit


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
    # the first read too is simulated: the measured first step holds two reads' errors
    out[..., 0] = read(state, 0.0)
    ones = torch.ones(shape, dtype=torch.int64)
    for n, (v, w) in enumerate(zip(trace.v, trace.width_s)):  # the schedule, in order
        t = (n + 1) * period_s
        vt = torch.full(shape, float(v), dtype=dt)
        wt = torch.full(shape, float(w), dtype=dt)
        state = model.step(state, d2d, vt, wt, ones, t, gen)
        out[..., n + 1] = read(state, t)
    return out.numpy()


#: Transitions (an even subsample) and model draws per transition of the log-likelihood.
LL_TRANSITIONS_MAX = 4000
LL_SAMPLES = 64


def step_log_likelihood(
    model: DeviceModel,
    trace: PulseTrace,
    *,
    samples: int = LL_SAMPLES,
    seed: int = 0,
    v_read_v: float = 0.1,
    period_s: float = 1e-3,
    read_noise: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The one-step predictive log-likelihood of every held-out step (an even subsample of
    at most ``LL_TRANSITIONS_MAX``): from each measured conductance, ``samples`` draws of
    the model's next read (a fresh device draw each: the held-out device is unknown), with
    the read noise of both reads; their density at the measured step by a Gaussian kernel
    (Silverman's bandwidth, at least 0.1 % of the span). Steps are in units of the measured
    conductance span, so the values (nats per step) compare across chips. Returns
    (transitions,) values and their pulse-class indices, as two rows."""
    g_now = trace.g_s[:, :-1].ravel()
    g_next = trace.g_s[:, 1:].ravel()
    n = trace.v.size
    pick = np.unique(
        np.linspace(0, g_now.size - 1, min(g_now.size, LL_TRANSITIONS_MAX)).round().astype(int)
    )
    pulse = pick % n
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    shape = (samples, pick.size)
    d2d = model.sample_d2d(shape, gen, dtype=dt)
    g0 = torch.tensor(g_now[pick], dtype=dt).expand(shape)
    state = state_at(model, d2d, g0, model.initial_state(d2d, shape, gen, dtype=dt))
    v = torch.tensor(trace.v[pulse], dtype=dt).expand(shape)
    w = torch.tensor(trace.width_s[pulse], dtype=dt).expand(shape)
    ones = torch.ones(shape, dtype=torch.int64)
    state = model.step(state, d2d, v, w, ones, period_s, gen)
    g = model.conductance(state, d2d, v_read_v, period_s)

    def noise_std(x: torch.Tensor) -> torch.Tensor:
        std = model.read_noise_std(x, d2d)
        return read_noise[0] * x.abs() + read_noise[1] if std is None else std

    std = torch.sqrt(noise_std(g) ** 2 + noise_std(g0) ** 2)
    pred = (g - g0 + std * torch.randn(shape, generator=gen, dtype=dt)).numpy()
    span = float(np.quantile(trace.g_s, 0.999) - np.quantile(trace.g_s, 0.001)) or 1.0
    pred /= span
    meas = (g_next[pick] - g_now[pick]) / span
    h = np.maximum(1.06 * pred.std(0) * samples ** (-0.2), 1e-3)
    z = (meas[None, :] - pred) / h
    log_k = -0.5 * z * z - np.log(h * math.sqrt(2 * math.pi))
    peak = log_k.max(0)
    ll = peak + np.log(np.exp(log_k - peak).mean(0))
    classes = pulse_classes([trace])
    return np.stack([ll, _class_index(trace, classes)[pulse].astype(float)])


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
    log_likelihood: float = float("nan")


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
    #: mean one-step log-likelihood of the held-out steps, all classes (``step_log_likelihood``)
    log_likelihood: float = float("nan")

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
        read_noise = trace_read_noise(trace)
    sim = replay(model, trace, replicates=replicates, seed=seed, read_noise=read_noise)
    meas = trace.g_s
    span = float(np.quantile(meas, 0.999) - np.quantile(meas, 0.001)) or 1.0
    m_mean, m_std = meas.mean(0), meas.std(0, ddof=1)
    flat = sim.reshape(-1, sim.shape[-1])
    p_mean, p_std = flat.mean(0), sim.std(1, ddof=1).mean(0)
    classes = pulse_classes([trace])
    idx = _class_index(trace, classes)
    m_dg, p_dg = np.diff(meas, axis=1), np.diff(flat, axis=1)
    ll, ll_cls = step_log_likelihood(model, trace, seed=seed, read_noise=read_noise)
    out = []
    for c, (v, w) in enumerate(classes):
        a, b = m_dg[:, idx == c], p_dg[:, idx == c]
        # the test sees one replicate: as many predicted devices as measured ones (a
        # twin's device table is itself a sample of measured devices, no larger), and at
        # most ``KS_SAMPLES_MAX`` steps of each (even strides over devices, then pulses)
        per_device = -(-a.shape[0] // KS_SAMPLES_MAX)
        devices = -(-a.shape[0] // per_device)
        per_pulse = -(-devices * a.shape[1] // KS_SAMPLES_MAX)
        pick = (slice(None, a.shape[0], per_device), slice(None, None, per_pulse))
        _, p_value = ks_device_test(a[pick], b[pick], seed=seed)
        d = ks_2samp(a.ravel(), b.ravel()).statistic
        mine = ll[ll_cls == c]
        out.append(
            ClassCheck(
                v,
                w,
                float(d),
                float(p_value),
                float(a.mean()),
                float(b.mean()),
                float(mine.mean()) if mine.size else float("nan"),
            )
        )
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
        log_likelihood=float(ll.mean()),
    )
