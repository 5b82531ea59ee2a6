"""EqProp conductances on memristive devices: desired dG -> pulses -> realised dG.

``docs/algorithms.md#from-a-desired-change-to-pulses``: the learning rule asks for dG*; an
idealised inverse of the device model turns it into a pulse per cell (polarity from the
sign, the model's nominal SET or RESET amplitude, a width or a pulse count); the device
(simulator or hardware) decides what change happens, and the network reads the conductances
back before the next step.

The inverse is the device model linearised at the current state: ``LocalSlope`` tabulates
the mean |dG| per second of pulse (or per pulse) against G, measured once with the nominal
model on a grid of states, and the dose is |dG*| / slope(G). Cycle-to-cycle noise, device-
to-device spread, state dependence within the pulse, windows, thresholds and the bounds of
the range are what the inverse leaves out: the device model decides.

The resistance ratio of the sweep: ``memristor_device_config(model, ratio)`` sets
R_off = ratio R_on for the models that have both (HP and its windows, VTEAM); the Yakopcic
model has no R_off/R_on parameter (G = a1 b x, x in [0, 1]), so for it the ratio acts only
through the usable window [g_max / ratio, g_max] that the learning rule clips to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import torch
from torch import Tensor

from memhil.analog.placement import Region, one_per_tile
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError
from memhil.devices import build_device_model
from memhil.devices.base import DeviceModel

#: The six memristor models of the sweep (``docs/algorithms.md#from-a-desired-change-to-pulses``).
MEMRISTOR_MODELS = ("hp", "joglekar", "biolek", "prodromakis", "vteam", "yakopcic")

PulseMode = Literal["width", "count"]
Inverse = Literal["local", "trajectory"]


# -- the idealised inverse ---------------------------------------------------------------


@dataclass(frozen=True)
class LocalSlope:
    """Mean |dG| per dose unit (a second of pulse in ``width`` mode, one pulse of
    ``width_s`` in ``count`` mode) at amplitude ``amplitude_v``, tabulated against G.

    ``g_s`` is increasing; ``slope`` is >= 0 (0 where the device does not move in this
    direction: at its bound, below a threshold, locked by a window)."""

    amplitude_v: float
    width_s: float
    mode: PulseMode
    g_s: Tensor
    slope: Tensor

    def slope_at(self, g_s: Tensor) -> Tensor:
        """Piecewise-linear interpolation of the slope at ``g_s`` (clamped to the table)."""
        return _interp(self.g_s, self.slope, g_s)

    def dose(self, g_s: Tensor, dg_abs_s: Tensor) -> Tensor:
        """Dose (s or pulses) the linearised model needs for |dG| from G; inf where the
        slope is 0."""
        s = self.slope_at(g_s)
        return torch.where(
            s > 0,
            dg_abs_s.to(torch.float64) / s.clamp_min(1e-300),
            torch.full_like(s, float("inf")),
        )

    def trajectory_dose(self, g_from_s: Tensor, g_to_s: Tensor) -> Tensor:
        """Dose along the tabulated mean trajectory from ``g_from_s`` to ``g_to_s``
        (integral of dG / slope): the nominal model's own inverse, exact up to the table's
        resolution; inf where the trajectory stalls (slope 0) on the way."""
        t = self._time_table()
        a, b = _interp(self.g_s, t, g_from_s), _interp(self.g_s, t, g_to_s)
        d = (b - a) if self.amplitude_v > 0 else (a - b)
        return torch.where(torch.isnan(d), torch.full_like(d, float("inf")), d.clamp_min(0.0))

    def trajectory_change(self, g_s: Tensor, dose: float) -> Tensor:
        """|dG| that ``dose`` (s or pulses) moves a device from ``g_s`` along the tabulated
        mean trajectory (saturating at the table's end, 0 where it stalls): what one
        pulse of the shortest width really does, where the slope's linear extrapolation
        overshoots a device that crosses much of its range in that pulse."""
        t = self._time_table()
        t0 = _interp(self.g_s, t, g_s)
        t1 = t0 + dose if self.amplitude_v > 0 else t0 - dose
        finite = torch.isfinite(t)
        tf, gf = t[finite], self.g_s[finite]
        keep = torch.cat([torch.tensor([True]), tf.diff() > 0])  # strictly increasing times
        g1 = _interp(tf[keep], gf[keep], torch.nan_to_num(t1, posinf=float(tf[-1])))
        stalled = ~torch.isfinite(t0)
        return torch.where(stalled, torch.zeros_like(g1), (g1 - g_s.to(torch.float64)).abs())

    def _time_table(self) -> Tensor:
        s = 0.5 * (self.slope[1:] + self.slope[:-1])
        step = torch.where(
            s > 0, self.g_s.diff() / s.clamp_min(1e-300), torch.full_like(s, float("inf"))
        )
        return torch.cat([torch.zeros(1, dtype=step.dtype), step.cumsum(0)])

    def full_range_dose(self) -> float:
        """Dose that crosses the tabulated range at the median nonzero slope: a typical
        full sweep, the longest pulse the inverse asks for (near a window's bound the
        slope, and with it 1 / slope, is unbounded)."""
        moving = self.slope[self.slope > 0]
        if moving.numel() == 0:
            return 0.0
        return float((self.g_s[-1] - self.g_s[0]) / moving.median())


class _Placement(TypedDict):
    """Where and in which precision :func:`local_slope` builds its tensors."""

    device: str
    dtype: torch.dtype


def local_slope(
    device: str | Mapping[str, Any] | DeviceModel,
    amplitude_v: float,
    width_s: float,
    mode: PulseMode = "width",
    *,
    v_read: float = 0.2,
    n_grid: int = 201,
    n_replicas: int = 32,
    probe_fraction: float = 1e-3,
    seed: int = 0,
) -> LocalSlope:
    """Tabulate a device model's local pulse response on a grid of its state.

    The grid spans the state (x in [0, 1], or G in the model's range for models whose
    state is the conductance), ``n_replicas`` devices per point (D2D and C2C averaged
    out). ``width`` mode probes with a pulse of ``probe_fraction * width_s`` (short enough
    to be local) and divides by its width; ``count`` mode applies one pulse of ``width_s``.
    """
    require(mode in ("width", "count"), "mode", f"must be 'width' or 'count', got {mode!r}")
    require(amplitude_v != 0, "amplitude_v", "must be nonzero (its sign is the polarity)")
    model = build_device_model(device)
    gen = torch.Generator().manual_seed(seed)
    dd: _Placement = {"device": "cpu", "dtype": torch.float64}
    if model.state_names == ("x",):
        # uniform plus geometric towards both bounds: G(x) can be steep there (HP: 1/R(x))
        ends = torch.logspace(-6.0, 0.0, n_grid // 3, dtype=torch.float64)
        grid = torch.unique(
            torch.cat(
                [
                    torch.linspace(0.0, 1.0, n_grid - 2 * (n_grid // 3), dtype=torch.float64),
                    ends,
                    1.0 - ends,
                ]
            )
        )
    elif model.state_names == ("g_s",):
        lo, hi = model.conductance_range()
        grid = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
    else:
        raise ConfigError(
            "device",
            f"model {model.name!r} has state {model.state_names}; "
            "the EqProp inverse needs a one-component state x or g_s",
        )
    shape = (grid.numel(), n_replicas)
    d2d = model.sample_d2d(shape, gen, **dd)
    state = grid[:, None, None].expand(*shape, 1).contiguous()
    dose = width_s * probe_fraction if mode == "width" else 1.0
    width = width_s * probe_fraction if mode == "width" else width_s
    v = torch.full(shape, float(amplitude_v), **dd)
    new = model.step(
        state,
        d2d,
        v,
        torch.full(shape, width, **dd),
        torch.ones(shape, dtype=torch.int64),
        0.0,
        gen,
    )
    g0 = model.conductance(state, d2d, v_read, 0.0)
    g1 = model.conductance(new, d2d, v_read, 0.0)
    sign = 1.0 if amplitude_v > 0 else -1.0
    g_mean = g0.mean(1)
    slope = (sign * (g1 - g0)).clamp_min(0.0).mean(1) / dose
    order = torch.argsort(g_mean)
    g_sorted, slope_sorted = g_mean[order], slope[order]
    keep = torch.cat([torch.tensor([True]), g_sorted.diff() > 0])  # strictly increasing grid
    return LocalSlope(float(amplitude_v), float(width_s), mode, g_sorted[keep], slope_sorted[keep])


def _interp(x: Tensor, y: Tensor, q: Tensor) -> Tensor:
    """Piecewise-linear y(q) on the increasing grid x, clamped to its ends (inf-safe)."""
    q = q.to(torch.float64).contiguous()
    idx = torch.searchsorted(x, q).clamp(1, x.numel() - 1)
    lo, hi = x[idx - 1], x[idx]
    frac = ((q - lo) / (hi - lo).clamp_min(1e-300)).clamp(0.0, 1.0)
    y0, y1 = y[idx - 1], y[idx]
    return torch.where(frac == 0, y0, torch.where(frac == 1, y1, y0 + frac * (y1 - y0)))


@dataclass(frozen=True)
class PulsePlan:
    """Per-cell pulse request: amplitude (V), width (s), count (0: not pulsed)."""

    amplitude_v: Tensor
    width_s: Tensor
    count: Tensor


def plan_pulses(
    g_s: Tensor,
    delta_s: Tensor,
    set_slope: LocalSlope,
    reset_slope: LocalSlope,
    *,
    width_min_s: float,
    max_dose: tuple[float, float],
    generator: torch.Generator,
    count_max: int = 1000,
    inverse: Inverse = "local",
) -> PulsePlan:
    """Pulses that the linearised model says give ``delta_s`` from ``g_s``.

    ``width`` mode: one pulse of the dose's width; a dose below ``width_min_s`` becomes a
    ``width_min_s`` pulse with probability |dG*| / |dG| of that pulse along the model's
    mean trajectory (unbiased for the nominal model, no dead zone; dose / width_min, the
    linear extrapolation, would overshoot where one shortest pulse crosses much of the
    range, e.g. VTEAM near its threshold).
    ``count`` mode: stochastically rounded pulse count of the nominal width. Doses are
    capped at ``max_dose`` (SET, RESET): a device that the model says cannot move (slope
    0) gets the cap, not an endless pulse. ``inverse``: ``local`` linearises the model at
    the current G; ``trajectory`` follows its mean trajectory."""
    mode = set_slope.mode
    up = delta_s > 0
    mag = delta_s.abs().to(torch.float64)
    if inverse == "local":
        dose = torch.where(up, set_slope.dose(g_s, mag), reset_slope.dose(g_s, mag))
    elif inverse == "trajectory":
        g_to = g_s.to(torch.float64) + delta_s.to(torch.float64)
        dose = torch.where(
            up, set_slope.trajectory_dose(g_s, g_to), reset_slope.trajectory_dose(g_s, g_to)
        )
    else:
        raise ConfigError("inverse", f"must be 'local' or 'trajectory', got {inverse!r}")
    dose = torch.where(up, dose.clamp(max=max_dose[0]), dose.clamp(max=max_dose[1]))
    dose = torch.where(mag > 0, dose, torch.zeros_like(dose))
    amp = torch.where(
        up,
        torch.full_like(dose, set_slope.amplitude_v),
        torch.full_like(dose, reset_slope.amplitude_v),
    )
    u = torch.rand(dose.shape, generator=generator, dtype=torch.float64)
    if mode == "width":
        short = dose < width_min_s
        quantum = torch.where(
            up,
            set_slope.trajectory_change(g_s, width_min_s),
            reset_slope.trajectory_change(g_s, width_min_s),
        )
        # where the trajectory stalls within the table, the linear extrapolation's odds
        p_hit = torch.where(quantum > 0, mag / quantum.clamp_min(1e-300), dose / width_min_s)
        hit = u < p_hit
        width = torch.where(short, torch.full_like(dose, width_min_s), dose)
        count = torch.where(short, hit, dose > 0).to(torch.int64)
    else:
        width = torch.where(
            up, torch.full_like(dose, set_slope.width_s), torch.full_like(dose, reset_slope.width_s)
        )
        count = torch.floor(dose + u).clamp(0, count_max).to(torch.int64)
    return PulsePlan(amp, width, count)


# -- conductances on a backend -----------------------------------------------------------


def place_layers(
    array_shape: tuple[int, int, int], layer_shapes: Sequence[tuple[int, int]]
) -> list[Region]:
    """One layer per tile when there are enough tiles, else side by side along the
    columns of tile 0; raises naming the sizes when the layers do not fit."""
    return one_per_tile(
        layer_shapes, array_shape, names=[f"layer {i}" for i in range(len(layer_shapes))]
    )


class DeviceConductances:
    """The network's conductances on a Backend's devices (a ``ConductanceStore``).

    ``read`` is one ``read_conductance`` of the array; ``apply`` turns the desired dG into
    one ``pulse`` call (per-cell amplitude, width and count) through the idealised
    inverse; ``program`` sets initial targets by a few read-pulse rounds.
    """

    def __init__(
        self,
        backend: Backend,
        layer_shapes: Sequence[tuple[int, int]],
        set_slope: LocalSlope,
        reset_slope: LocalSlope,
        g_min_s: float,
        g_max_s: float,
        *,
        seed: int = 0,
        compliance_a: float | None = None,
        count_max: int = 1000,
        inverse: Inverse = "local",
    ):
        require(
            0 < g_min_s < g_max_s, "g_min_s", f"need 0 < g_min_s ({g_min_s}) < g_max_s ({g_max_s})"
        )
        require(
            set_slope.amplitude_v > 0 > reset_slope.amplitude_v,
            "set_slope",
            "need a positive (SET) and a negative (RESET) amplitude",
        )
        require(set_slope.mode == reset_slope.mode, "mode", "SET and RESET tables differ in mode")
        self.backend = backend
        self.placements = place_layers(backend.shape, layer_shapes)
        self.set_slope, self.reset_slope = set_slope, reset_slope
        self.g_min_s, self.g_max_s = float(g_min_s), float(g_max_s)
        self.compliance_a = compliance_a
        self.inverse = inverse
        self.count_max = min(count_max, backend.limits.count_max)
        self._gen = torch.Generator().manual_seed(seed)
        lim = backend.limits
        if set_slope.mode == "width":
            self._max_dose = (
                min(lim.width_max_s, set_slope.full_range_dose()),
                min(lim.width_max_s, reset_slope.full_range_dose()),
            )
        else:
            self._max_dose = (float(self.count_max), float(self.count_max))
        self.pulse_calls = 0
        self.pulses = 0
        self._last_read: list[Tensor] | None = None
        self._pending: tuple[Tensor, Tensor] | None = None  # (G before, requested dG), flat
        #: per applied step: cosine similarity and norm ratio of realised vs requested dG
        self.update_fidelity: list[tuple[float, float]] = []

    def read(self) -> list[Tensor]:
        g = self.backend.read_conductance().to(torch.float64)
        self._last_read = [g[p.region()].clone() for p in self.placements]
        if self._pending is not None:
            before, want = self._pending
            got = torch.cat([t.flatten() for t in self._last_read]) - before
            cos = float(torch.nn.functional.cosine_similarity(got, want, dim=0))
            self.update_fidelity.append((cos, float(got.norm() / want.norm().clamp_min(1e-300))))
            self._pending = None
        return [t.clone() for t in self._last_read]

    def apply(
        self,
        delta_s: Sequence[Tensor],
        g_s: Sequence[Tensor] | None = None,
        inverse: Inverse | None = None,
    ) -> None:
        """Request the changes ``delta_s`` (S per layer) from the conductances ``g_s``
        (default: the last ``read``, which the rule's step was computed from) with one
        pulse call."""
        if g_s is None:
            g_s = self._last_read if self._last_read is not None else self.read()
        shape = self.backend.shape
        g_full = torch.zeros(shape, dtype=torch.float64)
        d_full = torch.zeros(shape, dtype=torch.float64)
        for p, g, d in zip(self.placements, g_s, delta_s):
            g_full[p.region()] = g
            d_full[p.region()] = d
        plan = plan_pulses(
            g_full,
            d_full,
            self.set_slope,
            self.reset_slope,
            width_min_s=self.backend.limits.width_min_s,
            max_dose=self._max_dose,
            generator=self._gen,
            count_max=self.count_max,
            inverse=inverse or self.inverse,
        )
        mask = plan.count > 0
        if not bool(mask.any()):
            return
        self._pending = (
            torch.cat([t.flatten() for t in g_s]),
            torch.cat([t.flatten() for t in delta_s]),
        )
        self.backend.pulse(
            mask, plan.amplitude_v, plan.width_s, plan.count, compliance_a=self.compliance_a
        )
        self.pulse_calls += 1
        self.pulses += int(plan.count.sum())

    def program(self, targets_s: Sequence[Tensor], rounds: int = 6) -> None:
        """Bring the devices towards ``targets_s`` (S per layer): ``rounds`` of read, then
        pulse along the model's mean trajectory (a loop over rounds only)."""
        for _ in range(rounds):
            g = self.read()
            self.apply([t - gl for t, gl in zip(targets_s, g)], g, inverse="trajectory")
        self.read()
        self.update_fidelity.clear()


def memristor_device_config(
    model: str,
    ratio: float,
    *,
    r_on_ohm: float | None = None,
    variability: bool = True,
    **params: Any,
) -> dict[str, Any]:
    """Device mapping for ``model`` with R_off / R_on = ``ratio`` where the model has both
    resistances (HP and its windows, VTEAM; R_on kept at the model's default unless given).
    Yakopcic has no such parameters and is returned unchanged (see the module docstring).
    ``variability=False`` zeroes every D2D (``*_dtod``) and C2C (``*_std``) spread: the
    deterministic model, as in a SPICE study."""
    require(ratio > 1, "ratio", f"R_off/R_on must be > 1, got {ratio}")
    base = build_device_model(model)
    cfg: dict[str, Any] = {"model": model}
    if not variability:
        cfg.update(
            {f.name: 0.0 for f in dataclasses.fields(base.p) if f.name.endswith(("_dtod", "_std"))}
        )
    cfg.update(params)
    if hasattr(base.p, "r_on_ohm") and hasattr(base.p, "r_off_ohm"):
        r_on = base.p.r_on_ohm if r_on_ohm is None else r_on_ohm
        cfg.update(r_on_ohm=r_on, r_off_ohm=ratio * r_on)
    return cfg


def usable_range(
    device: str | Mapping[str, Any] | DeviceModel, ratio: float | None = None
) -> tuple[float, float]:
    """(g_min, g_max) the learning rule uses: the model's g_max and g_max / ratio (None:
    the model's own nominal range)."""
    g_min, g_max = build_device_model(device).conductance_range()
    return (g_min, g_max) if ratio is None else (g_max / ratio, g_max)


def memristor_store(
    backend: Backend,
    layer_shapes: Sequence[tuple[int, int]],
    device: str | Mapping[str, Any],
    ratio: float | None = None,
    *,
    mode: PulseMode = "width",
    v_read: float = 0.2,
    inverse: Inverse = "local",
    seed: int = 0,
) -> DeviceConductances:
    """A ``DeviceConductances`` for ``backend`` whose inverse is the nominal ``device``
    model at its nominal SET/RESET pulses, clipping to ``usable_range(device, ratio)``."""
    model = build_device_model(device)
    if model.nominal_set_pulse is None or model.nominal_reset_pulse is None:
        raise ConfigError("device", f"model {model.name!r} declares no nominal SET/RESET pulse")
    tables = [
        local_slope(device, amp, width, mode, v_read=v_read, seed=seed)
        for amp, width in (model.nominal_set_pulse, model.nominal_reset_pulse)
    ]
    g_min, g_max = usable_range(device, ratio)
    return DeviceConductances(
        backend, layer_shapes, tables[0], tables[1], g_min, g_max, seed=seed, inverse=inverse
    )
