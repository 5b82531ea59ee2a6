"""Online weight-update schemes: turn a desired float ΔW (out, in) into device pulses.

Learning rules (e-prop, SGD on a readout, ...) produce a desired change ΔW every step; a
scheme decides which devices of an ``AnalogWeights`` receive how many SET pulses. The
five schemes of ``docs/algorithms.md#update-schemes``, selectable by name::

    scheme = build_update_scheme("mixed_precision", max_pulses=8)
    scheme.bind(weights, response)      # response: the SET PulseResponse of the devices
    step = scheme.apply(delta_w)        # -> UpdateStep (pulses issued, refreshes)

``ideal``            float shadow W += ΔW, clipped to ±w_max; no device writes (the reference).
``sign``             Manhattan rule with threshold θ (in quanta): one pulse where |ΔW| > θ·quantum.
``stochastic``       one pulse with probability min(1, |ΔW| / quantum) (seeded).
``multi``            N devices per sign: round(|ΔW| / (quantum / N)) pulses, round robin over
                     the side's N devices with a per-weight pointer kept between steps.
``mixed_precision``  digital accumulator χ += ΔW; transfer n = trunc(χ / quantum) pulses,
                     χ -= n·quantum (Nandakumar et al. 2020).

Conventions:

* **Quantum.** One SET pulse moves a device by the response's mean step
  ``response.granularity_s``; in weight units ``quantum = granularity_s / mapping.scale``.
* **SET-only pair updates.** Every scheme potentiates the + side for ΔW > 0 and the
  - side for ΔW < 0 and never uses a depressing pulse. That works on every device kind:
  on PCM (gradual SET, abrupt RESET) it is the only option, and on bipolar devices it
  avoids the usually stronger SET/RESET asymmetry. The price is that both devices of a
  pair climb towards saturation; the optional refresh (``refresh_threshold_s``, see
  ``memhil.analog.updates.refresh``) resets such pairs and rewrites their difference.
* **Multi-device cells.** With ``mapping.n_devices = N > 1`` the ``multi`` scheme pulses
  one device at a time (weight step quantum / N); the other schemes treat the N devices
  of a side as one vector cell and pulse all of them (weight step quantum), so their
  behaviour does not depend on N. Pulse counts are per device.
* **Writes.** All pulses of a step go through ``AnalogWeights.set_region`` (one backend
  call for all SET pulses of the step) and are tallied in ``weights.tally``; a refresh
  adds one ``reset_region`` and one ``set_region`` call. No Python loop over weights.
* **Layout.** Device schemes need the differential layout (a + and a - side).

Parameters: each scheme declares a frozen dataclass (``Params``: ``IdealParams``,
``SignParams``, ...) that ``build_update_scheme`` fills from its keywords, rejecting
unknown keys and bad values with a ConfigError naming ``scheme.key``.

Refresh (every device scheme): ``refresh_threshold_s`` (S, default None = off; a usual
value is 0.75 of the mapping's g_hi, aihwkit's one-sided cell; srnn-pcm uses 9 µS, and
runs mixed precision with refresh off), checked every ``refresh_every`` steps after the
update, with ``refresh_reset_pulses`` RESET pulses per device (1 for PCM's abrupt RESET).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import torch
from torch import Tensor

from memhil.analog.pulse_response import PulseResponse
from memhil.analog.updates.refresh import RefreshParams, refresh_pairs
from memhil.analog.weights import AnalogWeights
from memhil.core.config import from_mapping, require
from memhil.core.errors import ConfigError


@dataclass(frozen=True)
class UpdateStep:
    """What one ``apply`` did: device pulses (update and refresh together), backend write
    calls, refreshed pairs, and ``n``, the signed pulses per weight chosen by the scheme
    (per device of the side for the vector-cell schemes, in total over the N devices for
    ``multi``; None for ``ideal``)."""

    set_pulses: int = 0
    reset_pulses: int = 0
    calls: int = 0
    refreshes: int = 0
    n: Tensor | None = None

    @property
    def pulses(self) -> int:
        return self.set_pulses + self.reset_pulses


# -- parameters: one frozen dataclass per scheme ----------------------------------------------
@dataclass(frozen=True)
class IdealParams:
    """Parameters of ``ideal`` (no device writes, hence no refresh)."""

    init: Literal["zero", "read"] = "zero"
    """Start of the float shadow: zero (freshly RESET pairs) or the weights read at bind."""

    def __post_init__(self) -> None:
        require(
            self.init in ("zero", "read"), "init", f"must be 'zero' or 'read', got {self.init!r}"
        )


@dataclass(frozen=True)
class SignParams(RefreshParams):
    """Parameters of ``sign`` (Manhattan rule)."""

    threshold: float = 0.5
    """Stop-learning threshold θ in quanta: a pulse where |ΔW| > θ·quantum."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.threshold >= 0, "threshold", f"must be >= 0 (in quanta), got {self.threshold}")


@dataclass(frozen=True)
class StochasticParams(RefreshParams):
    """Parameters of ``stochastic`` (stochastic rounding to single pulses)."""

    seed: int = 0
    """Seed of the scheme's own random generator."""


@dataclass(frozen=True)
class MultiParams(RefreshParams):
    """Parameters of ``multi`` (N devices per sign, round robin)."""

    max_pulses: int | None = None
    """Most pulses per weight and step over the N devices; None: N x the backend's count_max."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_max_pulses(self.max_pulses)


@dataclass(frozen=True)
class MixedPrecisionParams(RefreshParams):
    """Parameters of ``mixed_precision`` (accumulate and transfer)."""

    max_pulses: int | None = None
    """Most pulses per device and transfer; None: the backend's count_max."""
    transfer_every: int = 1
    """Transfer the accumulator to the devices every this many steps."""
    threshold: float = 1.0
    """Transfer threshold θ in quanta: a weight is written once |χ| >= θ·quantum, with at
    least one pulse (1: Nandakumar et al.'s threshold, the device granularity)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_max_pulses(self.max_pulses)
        require(
            self.transfer_every >= 1, "transfer_every", f"must be >= 1, got {self.transfer_every}"
        )
        require(self.threshold > 0, "threshold", f"must be > 0 (in quanta), got {self.threshold}")


def _check_max_pulses(max_pulses: int | None) -> None:
    require(
        max_pulses is None or max_pulses >= 1,
        "max_pulses",
        f"must be >= 1 or None, got {max_pulses}",
    )


class UpdateScheme:
    """Base: binding, the quantum, SET-only pulse placement, refresh and pulse accounting.

    Subclasses declare ``Params`` (a frozen dataclass) and implement
    ``_update(delta_w) -> Tensor | None`` returning the signed pulse counts per weight
    (out, in) they programmed (or None), using ``_program_cells`` or ``set_region``
    directly. A scheme is built from a ``Params`` instance or from keywords (checked by
    ``from_mapping``: unknown keys and bad values raise ConfigError naming ``name.key``).
    """

    name = "base"
    needs_devices = True
    Params: ClassVar[type[Any]] = RefreshParams

    def __init__(self, params: Any = None, /, **kw: Any):
        if params is None:
            params = from_mapping(type(self).Params, kw, prefix=self.name)
        elif kw or not isinstance(params, type(self).Params):
            raise TypeError(
                f"update scheme {self.name!r} takes a {type(self).Params.__name__} "
                f"or keywords, got {type(params).__name__} and {sorted(kw)}"
            )
        self.params = params
        refresh = params if isinstance(params, RefreshParams) else RefreshParams()
        self.refresh_threshold_s = refresh.refresh_threshold_s
        self.refresh_every = refresh.refresh_every
        self.refresh_reset_pulses = refresh.refresh_reset_pulses
        self.weights: AnalogWeights | None = None
        self.response: PulseResponse | None = None
        self.quantum = float("nan")
        self.steps = 0

    # -- binding ----------------------------------------------------------------------
    def bind(self, weights: AnalogWeights, response: PulseResponse | None = None) -> UpdateScheme:
        """Attach the weights to update and the devices' SET pulse response; returns self."""
        m = weights.mapping
        if self.needs_devices:
            if m.layout != "differential":
                raise ValueError(
                    f"update scheme {self.name!r} needs the differential layout, got {m.layout!r}"
                )
            if response is None:
                raise ValueError(f"update scheme {self.name!r} needs the SET pulse response")
            if not response.rising or response.granularity_s <= 0:
                raise ValueError(
                    f"update scheme {self.name!r} needs a rising (SET) pulse response "
                    f"with a positive granularity, got amplitude "
                    f"{response.amplitude_v} V, granularity {response.granularity_s} S"
                )
        self.weights, self.response = weights, response
        if response is not None:
            self.quantum = response.granularity_s / m.scale
        self.steps = 0
        self._on_bind()
        return self

    def _on_bind(self) -> None:
        pass

    # -- checkpoints ------------------------------------------------------------------
    #: Attributes (tensors or generators) besides ``steps`` that change while training.
    state_attributes: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, Any]:
        """What training changes in the scheme (the step count, accumulators, pointers,
        generator states), for a checkpoint; the devices hold the rest."""
        out: dict[str, Any] = {"steps": self.steps}
        for name in self.state_attributes:
            value = getattr(self, name)
            out[name] = value.get_state() if isinstance(value, torch.Generator) else value.clone()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` into a scheme bound to the same weights."""
        self.steps = int(state["steps"])
        for name in self.state_attributes:
            value = getattr(self, name)
            if isinstance(value, torch.Generator):
                value.set_state(state[name])
            else:
                setattr(self, name, state[name].clone())

    @property
    def shape(self) -> tuple[int, int]:
        m = self._bound().mapping
        return (m.out_features, m.in_features)

    def _bound(self) -> AnalogWeights:
        if self.weights is None:
            raise RuntimeError(
                f"update scheme {self.name!r} is not bound: call bind(weights, response)"
            )
        return self.weights

    @property
    def count_cap(self) -> int:
        """Most pulses one device may receive in one call (the backend's limit)."""
        return int(self._bound().backend.limits.count_max)

    # -- the step ---------------------------------------------------------------------
    def apply(self, delta_w: Tensor) -> UpdateStep:
        """Apply the desired change ``delta_w`` (out, in); returns what was issued."""
        w = self._bound()
        delta_w = delta_w.detach().to("cpu")
        if tuple(delta_w.shape) != self.shape:
            raise ValueError(f"delta_w has shape {tuple(delta_w.shape)}, expected {self.shape}")
        before = (w.tally.set_pulses, w.tally.reset_pulses, w.tally.calls, w.tally.refreshes)
        self.steps += 1
        n = self._update(delta_w)
        if (
            self.needs_devices
            and self.refresh_threshold_s is not None
            and self.steps % self.refresh_every == 0
        ):
            assert self.response is not None  # bind requires it where needs_devices
            refresh_pairs(
                w,
                self.response,
                self.refresh_threshold_s,
                reset_pulses=self.refresh_reset_pulses,
                max_pulses=self.count_cap,
            )
        t = w.tally
        return UpdateStep(
            set_pulses=t.set_pulses - before[0],
            reset_pulses=t.reset_pulses - before[1],
            calls=t.calls - before[2],
            refreshes=t.refreshes - before[3],
            n=n,
        )

    def _update(self, delta_w: Tensor) -> Tensor | None:
        raise NotImplementedError

    def effective_weight(self) -> Tensor | None:
        """The weight the scheme holds in float (``ideal``), or None: read the devices."""
        return None

    def matvec(self, x: Tensor) -> Tensor:
        """``x @ W.T`` with the scheme's weight: the float shadow, else one array MVM."""
        w = self.effective_weight()
        if w is None:
            return self._bound().matvec(x)
        return x @ w.to(x.device, x.dtype).t()

    # -- pulse placement --------------------------------------------------------------
    def _program_cells(self, n: Tensor) -> None:
        """``|n|`` SET pulses (n signed, (out, in), int) on every device of the side given
        by the sign of n: + side for n > 0, - side for n < 0; one backend call."""
        m = self._bound().mapping
        pos = n.clamp(min=0).t().repeat_interleave(m.n_devices, 1)
        neg = (-n).clamp(min=0).t().repeat_interleave(m.n_devices, 1)
        self._bound().set_region(torch.cat([pos, neg], 1).to(torch.int64))


_REGISTRY: dict[str, type[UpdateScheme]] = {}


def register_update_scheme(name: str) -> Callable[[type[UpdateScheme]], type[UpdateScheme]]:
    """Class decorator: make a scheme buildable by ``name``."""

    def deco(cls: type[UpdateScheme]) -> type[UpdateScheme]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_update_schemes() -> list[str]:
    return sorted(_REGISTRY)


def build_update_scheme(name: str, **params: Any) -> UpdateScheme:
    """The scheme registered as ``name`` with ``params`` (the fields of its ``Params``);
    unknown names, unknown parameters and bad values raise ConfigError (a ValueError)
    naming them."""
    if name not in _REGISTRY:
        raise ConfigError(
            "update_scheme",
            f"unknown update scheme {name!r} (known: {', '.join(available_update_schemes())})",
        )
    return _REGISTRY[name](**params)


# -- the schemes --------------------------------------------------------------------------
@register_update_scheme("ideal")
class IdealUpdate(UpdateScheme):
    """Float reference: W += ΔW clipped to ±w_max, no device writes. The shadow starts
    at zero (``init="zero"``, the float twin of freshly RESET pairs) or at the weights the
    devices hold at ``bind`` (``init="read"``). Needs no pulse response."""

    needs_devices = False
    state_attributes = ("shadow",)
    Params = IdealParams

    def __init__(self, params: IdealParams | None = None, /, **kw: Any):
        super().__init__(params, **kw)
        self.init = cast(IdealParams, self.params).init
        self.shadow: Tensor | None = None

    def _on_bind(self) -> None:
        w = self._bound()
        if self.init == "read":
            self.shadow = w.read_weights().detach().to("cpu", torch.float32)
        else:
            self.shadow = torch.zeros(self.shape, dtype=torch.float32)

    def _update(self, delta_w: Tensor) -> None:
        w_max = self._bound().mapping.w_max
        assert self.shadow is not None  # set by _on_bind
        self.shadow = (self.shadow + delta_w.to(self.shadow.dtype)).clamp_(-w_max, w_max)
        return None

    def effective_weight(self) -> Tensor:
        self._bound()
        assert self.shadow is not None  # set by _on_bind
        return self.shadow


@register_update_scheme("sign")
class SignUpdate(UpdateScheme):
    """Manhattan rule with a stop-learning threshold: one SET pulse on the + side where
    ΔW > θ·quantum, on the - side where ΔW < -θ·quantum, none in between."""

    Params = SignParams

    def __init__(self, params: SignParams | None = None, /, **kw: Any):
        super().__init__(params, **kw)
        # mutable: e-prop sets it from a gradient threshold once the quantum is known
        self.threshold = cast(SignParams, self.params).threshold

    def _update(self, delta_w: Tensor) -> Tensor:
        thr = self.threshold * self.quantum
        n = (delta_w > thr).to(torch.int64) - (delta_w < -thr).to(torch.int64)
        self._program_cells(n)
        return n


@register_update_scheme("stochastic")
class StochasticUpdate(UpdateScheme):
    """Stochastic rounding to single pulses: with probability min(1, |ΔW| / quantum) one
    SET pulse on the side given by the sign (unbiased up to one quantum per step)."""

    state_attributes = ("generator",)
    Params = StochasticParams

    def __init__(self, params: StochasticParams | None = None, /, **kw: Any):
        super().__init__(params, **kw)
        self.seed = cast(StochasticParams, self.params).seed
        self.generator = torch.Generator().manual_seed(self.seed)

    def _update(self, delta_w: Tensor) -> Tensor:
        p = (delta_w.abs().double() / self.quantum).clamp_(max=1.0)
        fire = torch.rand(p.shape, generator=self.generator, dtype=torch.float64) < p
        n = fire.to(torch.int64) * torch.sign(delta_w).to(torch.int64)
        self._program_cells(n)
        return n


@register_update_scheme("multi")
class MultiDeviceUpdate(UpdateScheme):
    """N devices per sign (``mapping.n_devices > 1``): n = round(|ΔW| / (quantum / N))
    pulses (capped at ``max_pulses``) on the side given by the sign, dealt round robin over
    that side's N devices from a per-weight, per-side pointer that persists between
    steps, so every device gets its share of the pulses."""

    state_attributes = ("pointer",)
    Params = MultiParams

    def __init__(self, params: MultiParams | None = None, /, **kw: Any):
        super().__init__(params, **kw)
        self.max_pulses = cast(MultiParams, self.params).max_pulses
        self.pointer: Tensor | None = None  # (2, out, in): next device of the + / - side

    def _on_bind(self) -> None:
        n_dev = self._bound().mapping.n_devices
        if n_dev < 2:
            raise ValueError(f"update scheme 'multi' needs mapping.n_devices > 1, got {n_dev}")
        self.pointer = torch.zeros((2, *self.shape), dtype=torch.int64)

    def _update(self, delta_w: Tensor) -> Tensor:
        m = self._bound().mapping
        n_dev = m.n_devices
        cap = self.count_cap * n_dev if self.max_pulses is None else self.max_pulses
        n_abs = (delta_w.abs().double() / (self.quantum / n_dev)).round().clamp_(max=cap)
        n_abs = n_abs.to(torch.int64)
        sides = torch.stack([n_abs * (delta_w > 0), n_abs * (delta_w < 0)])  # (2, out, in)
        k = torch.arange(n_dev)
        assert self.pointer is not None  # set by _on_bind
        offset = (k - self.pointer.unsqueeze(-1)) % n_dev  # (2, out, in, N)
        per_dev = sides.unsqueeze(-1) // n_dev + (offset < (sides % n_dev).unsqueeze(-1))
        self.pointer = (self.pointer + sides) % n_dev
        # (2, out, in, N) -> region (in, [+ out-major device-minor, - ...])
        region = per_dev.permute(2, 0, 1, 3).reshape(m.in_features, 2 * m.out_features * n_dev)
        self._bound().set_region(region)
        return sides[0] - sides[1]


@register_update_scheme("mixed_precision")
class MixedPrecisionUpdate(UpdateScheme):
    """Accumulate and transfer (Nandakumar et al. 2020): χ += ΔW every step; every
    ``transfer_every`` steps transfer n = trunc(χ / quantum) whole quanta (|n| capped at
    ``max_pulses``) as SET pulses on the side given by the sign and keep the remainder,
    χ -= n·quantum. χ is float64. A ``threshold`` θ other than 1 writes where |χ| >= θ·quantum
    only, at least one pulse there (θ < 1 rounds up, θ > 1 waits for larger sums)."""

    state_attributes = ("chi",)
    Params = MixedPrecisionParams

    def __init__(self, params: MixedPrecisionParams | None = None, /, **kw: Any):
        super().__init__(params, **kw)
        p = cast(MixedPrecisionParams, self.params)
        self.max_pulses, self.transfer_every = p.max_pulses, p.transfer_every
        self.threshold = p.threshold
        self.chi: Tensor | None = None

    def _on_bind(self) -> None:
        self.chi = torch.zeros(self.shape, dtype=torch.float64)

    def _update(self, delta_w: Tensor) -> Tensor:
        assert self.chi is not None  # set by _on_bind
        self.chi += delta_w.double()
        if self.steps % self.transfer_every:
            return torch.zeros(self.shape, dtype=torch.int64)
        cap = self.count_cap if self.max_pulses is None else min(self.max_pulses, self.count_cap)
        n = torch.trunc(self.chi / self.quantum)
        if self.threshold != 1.0:  # θ = 1 is the plain truncation above
            ready = self.chi.abs() >= self.threshold * self.quantum
            n = torch.where(ready, torch.sign(self.chi) * n.abs().clamp(min=1), 0.0)
        n = n.clamp_(-cap, cap)
        self.chi -= n * self.quantum
        n = n.to(torch.int64)
        self._program_cells(n)
        return n
