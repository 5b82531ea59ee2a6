"""Edge pruning of randomly weighted resistive-memory networks (``docs/algorithms.md#pruning``).

Random weights are drawn ON the backend by stochastic forming: for each weight one cell of
its differential pair (the + cell where a fixed random sign is +1, the - cell otherwise) is
formed, its partner stays pristine, so the differential readout ``G+ - G-`` carries that
sign and a log-normal magnitude. Training (edge-popup) learns only which connections to
keep: a trainable score per weight, a per-layer top-k mask with straight-through
gradients, a fresh noisy readout per forward pass, quantized activations, and the
switch-limiting rule that lets a mask bit flip only when its score moved enough. Each flip
is one programming operation; deployment turns flips into RESET (prune) and SET
(reinstate) pulses, and a pruned cell keeps its small RESET conductance.

    w = sign0 * (|G_keep| * M + |G_prune| * (1 - M)) / scale,
    scale = mean|G_keep| / sigma_K,  sigma_K = gain / sqrt(keep_fraction * fan_in)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memhil.analog.mapping import WeightMapping
from memhil.analog.placement import pack_columns
from memhil.backends.base import Backend


# Weight regions use WeightMapping with one siemens per weight unit: combine() = G+ - G-.
class _Window(TypedDict):
    g_lo_s: float
    g_hi_s: float
    w_max: float


_UNIT_WINDOW: _Window = {"g_lo_s": 0.0, "g_hi_s": 1.0, "w_max": 1.0}


# -- where the layers live on the backend ------------------------------------------------
def layout_layers(
    shapes: Sequence[tuple[int, int]], backend_shape: tuple[int, int, int]
) -> list[WeightMapping]:
    """Place (out, in) weight matrices as differential regions, side by side along the
    columns of a tile, moving to the next tile when one is full; raise naming the layer
    that does not fit."""
    regions = pack_columns(
        [(n_in, 2 * n_out) for n_out, n_in in shapes],
        backend_shape,
        names=[f"layer {i}" for i in range(len(shapes))],
    )
    return [
        WeightMapping(n_in, n_out, tile=r.tile, col_offset=r.col, **_UNIT_WINDOW)
        for (n_out, n_in), r in zip(shapes, regions)
    ]


def backend_shape_for(shapes: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """(tiles, rows, cols) of a simulator that holds every layer on a tile of its own."""
    return (len(shapes), max(n_in for _, n_in in shapes), 2 * max(n_out for n_out, _ in shapes))


def random_signs(shapes: Sequence[tuple[int, int]], seed: int) -> list[Tensor]:
    """Fixed random +-1 signs (out, in), one per weight (the software init's sign)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2, shape, generator=gen).float().mul_(2).sub_(1) for shape in shapes]


def active_cells(
    mapping: WeightMapping,
    sign: Tensor,
    backend_shape: tuple[int, int, int],
    select: Tensor | None = None,
) -> Tensor:
    """Backend mask of the active cell of each selected weight's pair (+ cell where
    sign > 0, - cell where sign < 0); ``select`` (out, in) bool, default all weights."""
    sel = torch.ones_like(sign, dtype=torch.bool) if select is None else select.bool()
    plus, _ = mapping.side_masks(sel & (sign > 0))
    _, minus = mapping.side_masks(sel & (sign < 0))
    return mapping.cell_mask(backend_shape, plus | minus)


def active_cells_all(
    mappings: Sequence[WeightMapping],
    signs: Sequence[Tensor],
    backend_shape: tuple[int, int, int],
    selects: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """Union over layers of :func:`active_cells`."""
    mask = torch.zeros(backend_shape, dtype=torch.bool)
    for i, (m, s) in enumerate(zip(mappings, signs)):
        mask |= active_cells(m, s, backend_shape, None if selects is None else selects[i])
    return mask


# -- forming, reading, programming ---------------------------------------------------------
@dataclass(frozen=True)
class FormingRecipe:
    """How the random weights are drawn. ``method="pulse"``: one forming pulse of
    ``amplitude_v`` on every active cell at once (the simulator's forming model: the
    breakdown-voltage CDF at that amplitude sets the formed fraction); ``"protocol"``: the
    AutoFormer ramp (``v_start``..``amplitude_v`` by ``v_step``, each cell pulsed until its
    read current at ``v_read`` reaches ``i_target_a``), as the ``forming`` protocol runs it
    on a bench."""

    method: str = "pulse"
    amplitude_v: float = 2.8
    width_s: float = 1e-6
    compliance_a: float = 2e-4
    v_start: float = 1.4
    v_step: float = 0.1
    i_target_a: float = 1e-6
    v_read: float = 0.2

    def __post_init__(self) -> None:
        if self.method not in ("pulse", "protocol"):
            raise ValueError(f"forming method must be 'pulse' or 'protocol', got {self.method!r}")


@dataclass(frozen=True)
class SwitchPulses:
    """SET (reinstate) and RESET (prune) pulses (amplitude V, width s) with the SET
    compliance (A); None takes the backend's nominal pulses from its capabilities."""

    set_pulse: tuple[float, float] | None = None
    reset_pulse: tuple[float, float] | None = None
    compliance_a: float = 2e-4

    def resolve(self, backend: Backend) -> tuple[tuple[float, float], tuple[float, float]]:
        caps = backend.capabilities
        set_p = self.set_pulse or caps.set_pulse
        reset_p = self.reset_pulse or caps.reset_pulse
        if set_p is None or reset_p is None:
            raise ValueError(
                f"backend device {caps.device_model!r} has no nominal SET/RESET "
                "pulse; pass SwitchPulses(set_pulse=..., reset_pulse=...)"
            )
        if set_p[0] <= 0 or reset_p[0] >= 0:
            raise ValueError(
                f"SET amplitude must be > 0 V and RESET < 0 V, got {set_p[0]}, {reset_p[0]}"
            )
        return set_p, reset_p


def form_random_weights(
    backend: Backend, cells: Tensor, recipe: FormingRecipe = FormingRecipe()
) -> None:
    """Form the pristine ``cells`` (backend mask) so that each draws a random conductance."""
    if recipe.method == "pulse":
        backend.pulse(cells, recipe.amplitude_v, recipe.width_s, compliance_a=recipe.compliance_a)
        return
    active = backend.cell_mask(cells).clone()

    def unformed(selected: Tensor) -> Tensor:
        i_a = backend.read(selected, v_read_v=recipe.v_read).i_a.abs().to(selected.device)
        still = torch.zeros_like(selected)
        still[selected] = i_a < recipe.i_target_a
        return still

    active = unformed(active)  # cells already formed are never pulsed again
    k = 0
    while bool(active.any()):
        v = recipe.v_start + k * recipe.v_step
        if v > recipe.amplitude_v * (1 + 1e-9):
            break
        backend.pulse(
            active, min(v, recipe.amplitude_v), recipe.width_s, compliance_a=recipe.compliance_a
        )
        active = unformed(active)
        k += 1


def read_magnitudes(
    backend: Backend, mappings: Sequence[WeightMapping], signs: Sequence[Tensor], n_reads: int = 1
) -> list[Tensor]:
    """``n_reads`` fresh readouts of every layer: sign0 * (G+ - G-) clamped at 0, in S,
    shape (n_reads, out, in) per layer (each read carries the backend's read noise)."""
    reads = torch.stack([backend.read_conductance().float().cpu() for _ in range(n_reads)])
    out = []
    for m, s in zip(mappings, signs):
        region = reads[:, m.tile, m.rows, m.cols]  # (R, in, n_cols)
        out.append((m.combine(region).transpose(1, 2) * s).clamp_min(0.0))
    return out


@dataclass
class PairStates:
    """Readout banks of every layer: kept (formed/SET) and pruned (RESET) magnitudes,
    (n_reads, out, in) in S, as measured on the backend."""

    keep: list[Tensor]
    prune: list[Tensor]


def measure_pair_states(
    backend: Backend,
    mappings: Sequence[WeightMapping],
    signs: Sequence[Tensor],
    n_reads: int = 8,
    pulses: SwitchPulses = SwitchPulses(),
) -> PairStates:
    """After forming: RESET every active cell and read ``n_reads`` times (the pruned
    residual), then SET them again (a fresh random LRS draw, as re-forming) and read
    ``n_reads`` times (the kept weights). The array is left with every weight kept."""
    (v_set, w_set), (v_reset, w_reset) = pulses.resolve(backend)
    cells = active_cells_all(mappings, signs, backend.shape)
    backend.pulse(cells, v_reset, w_reset)
    prune = read_magnitudes(backend, mappings, signs, n_reads)
    backend.pulse(cells, v_set, w_set, compliance_a=pulses.compliance_a)
    keep = read_magnitudes(backend, mappings, signs, n_reads)
    return PairStates(keep, prune)


@dataclass(frozen=True)
class Deployment:
    """Cells pulsed by one deployment (backend masks) and their counts."""

    reset_cells: Tensor
    set_cells: Tensor

    @property
    def n_reset(self) -> int:
        return int(self.reset_cells.sum())

    @property
    def n_set(self) -> int:
        return int(self.set_cells.sum())


def deploy_masks(
    backend: Backend,
    mappings: Sequence[WeightMapping],
    signs: Sequence[Tensor],
    old_masks: Sequence[Tensor],
    new_masks: Sequence[Tensor],
    pulses: SwitchPulses = SwitchPulses(),
) -> Deployment:
    """Program the mask change on the array: a weight going 1 -> 0 gets a RESET of its
    active cell (it keeps the small RESET conductance), 0 -> 1 a SET (a fresh LRS draw);
    unchanged weights are not touched. One vectorized pulse call per polarity."""
    (v_set, w_set), (v_reset, w_reset) = pulses.resolve(backend)
    old = [m.bool() for m in old_masks]
    new = [m.bool() for m in new_masks]
    reset = active_cells_all(mappings, signs, backend.shape, [o & ~n for o, n in zip(old, new)])
    set_ = active_cells_all(mappings, signs, backend.shape, [~o & n for o, n in zip(old, new)])
    if bool(reset.any()):
        backend.pulse(reset, v_reset, w_reset)
    if bool(set_.any()):
        backend.pulse(set_, v_set, w_set, compliance_a=pulses.compliance_a)
    return Deployment(reset, set_)


def backend_linear(
    backend: Backend, mapping: WeightMapping, x: Tensor, v_in: float = 0.2
) -> Tensor:
    """x @ (G+ - G-) in S x (x units), computed by the array: inputs scaled per sample to
    at most ``v_in`` volts on the rows, differential column currents rescaled back."""
    s = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    v = torch.zeros(x.shape[0], backend.shape[1], dtype=torch.float32)
    v[:, mapping.rows] = (x / s * v_in).float()
    i = backend.mvm(v, tile=mapping.tile).float().cpu()
    return mapping.combine(i[:, mapping.cols]) * s / v_in


# -- edge-popup primitives -----------------------------------------------------------------
def top_k_mask(scores: Tensor, keep_fraction: float) -> Tensor:
    """1.0 on the ``keep_fraction`` largest |scores| of the tensor, else 0.0."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    flat = scores.detach().abs().flatten()
    k = max(1, round(keep_fraction * flat.numel()))
    mask = torch.zeros_like(flat)
    mask[flat.topk(k, sorted=False).indices] = 1.0
    return mask.view_as(scores)


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """``hard`` in the forward pass, gradient passed unchanged to ``soft`` (dL/dsoft = dL/dhard)."""
    return hard + soft - soft.detach()


def switch_limited_mask(
    candidate: Tensor, previous: Tensor, scores: Tensor, scores_ref: Tensor, threshold: float
) -> tuple[Tensor, Tensor]:
    """Keep a bit's previous value unless its score moved by at least ``threshold``
    relative to the reference score (|S_ref - S| / |S_ref| >= threshold); returns the
    mask and the boolean map of the bits that flipped."""
    if threshold > 0:
        rel = (scores_ref - scores).abs() / scores_ref.abs().clamp_min(1e-12)
        candidate = torch.where(rel >= threshold, candidate, previous)
    return candidate, candidate != previous


@dataclass
class ThresholdSchedule:
    """Switch-limiting threshold: starts at ``start``, lowered by one of ``steps`` equal
    steps toward ``end`` each time validation accuracy improves."""

    start: float = 0.01
    end: float = 0.007
    steps: int = 15
    taken: int = 0

    @property
    def value(self) -> float:
        return self.start + (self.end - self.start) * min(self.taken, self.steps) / self.steps

    def improved(self) -> None:
        self.taken += 1


class _QuantizeActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits):
        dims = tuple(range(1, x.dim())) if x.dim() > 1 else (0,)
        lo = x.detach().amin(dims, keepdim=True)
        hi = x.detach().amax(dims, keepdim=True)
        step = (hi - lo).clamp_min(1e-12) / (2**bits - 1)
        return torch.round((x - lo) / step) * step + lo

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def quantize_activations(x: Tensor, bits: int | None) -> Tensor:
    """Min-max uniform quantization to ``bits`` bits over each sample (each index of the
    first axis; a 1-D tensor is one sample), with a straight-through gradient (None: no
    quantization). Per sample, so a prediction never depends on the other samples of a
    batch: one range over a whole test set let its most extreme sample set the step for
    all (a CRNN whose rare state outlier quantized every other state to 0)."""
    return x if bits is None else _QuantizeActivation.apply(x, bits)


def _truncated_gain(shape, rel_sigma: float, gen: torch.Generator) -> Tensor:
    """Multiplicative factors N(1, rel_sigma^2) truncated at +-2 sigma."""
    return 1.0 + rel_sigma * torch.randn(shape, generator=gen).clamp_(-2.0, 2.0)


# -- weight sources: what a layer multiplies with -----------------------------------------
class WeightSource(nn.Module):
    """A layer's (out, in) weight matrix in Kaiming units; ``read_index`` picks the
    readout for this forward pass (sources without readouts ignore it)."""

    read_index: int = 0

    def weight(self) -> Tensor:
        raise NotImplementedError

    def kaiming_sigma(self, fan_in: int, gain: float, keep_fraction: float = 1.0) -> float:
        return gain / math.sqrt(keep_fraction * fan_in)


class MaskedWeight(WeightSource):
    """Edge-popup over hardware weights: frozen magnitudes from readout banks, a trainable
    score per weight, a top-k mask refreshed after each optimizer step (optionally switch
    limited) with every flip counted and given reprogramming noise."""

    sign: Tensor
    keep: Tensor
    prune: Tensor
    mask: Tensor
    scores_ref: Tensor
    keep_gain: Tensor
    prune_gain: Tensor

    def __init__(
        self,
        sign: Tensor,
        keep: Tensor,
        prune: Tensor,
        *,
        gain: float = math.sqrt(2),
        keep_fraction: float = 0.5,
        reprogram_noise_rel: float = 0.15,
        seed: int = 0,
    ):
        super().__init__()
        if keep.shape != prune.shape or keep.shape[1:] != sign.shape:
            raise ValueError(
                f"banks {tuple(keep.shape)}/{tuple(prune.shape)} do not match signs "
                f"{tuple(sign.shape)}"
            )
        self.keep_fraction = keep_fraction
        self.reprogram_noise_rel = reprogram_noise_rel
        self._gen = torch.Generator().manual_seed(seed)
        self.register_buffer("sign", sign.float())
        self.register_buffer("keep", keep.float())
        self.register_buffer("prune", prune.float())
        self.scale = float(keep.mean()) / self.kaiming_sigma(sign.shape[1], gain, keep_fraction)
        scores = torch.empty(sign.shape)
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=self._gen)
        self.scores = nn.Parameter(scores)
        self.register_buffer("mask", top_k_mask(scores, keep_fraction))
        self.register_buffer("scores_ref", scores.clone())
        self.register_buffer("keep_gain", torch.ones(sign.shape))
        self.register_buffer("prune_gain", torch.ones(sign.shape))
        self.flips = 0

    def weight(self) -> Tensor:
        r = self.read_index % self.keep.shape[0]
        m = straight_through(self.mask, self.scores.abs())
        g = self.keep[r] * self.keep_gain * m + self.prune[r] * self.prune_gain * (1 - m)
        return self.sign * g / self.scale

    @torch.no_grad()
    def refresh_mask(self, threshold: float = 0.0) -> int:
        """New top-k mask from the scores, switch limited at ``threshold`` (0: off);
        flipped cells get reprogramming noise; returns the number of flips."""
        cand = top_k_mask(self.scores, self.keep_fraction)
        new, flipped = switch_limited_mask(cand, self.mask, self.scores, self.scores_ref, threshold)
        if self.reprogram_noise_rel > 0 and bool(flipped.any()):
            noise = _truncated_gain(self.mask.shape, self.reprogram_noise_rel, self._gen)
            self.keep_gain.copy_(torch.where(flipped & (new > 0), noise, self.keep_gain))
            self.prune_gain.copy_(torch.where(flipped & (new == 0), noise, self.prune_gain))
        self.mask.copy_(new)
        self.scores_ref.copy_(self.scores)
        n = int(flipped.sum())
        self.flips += n
        return n

    @torch.no_grad()
    def use_readout(self, magnitude: Tensor) -> None:
        """Replace the banks by measured magnitudes (R, out, in) of the deployed array:
        the mask is then in the conductances (pruned cells read their RESET residual)."""
        self.keep = magnitude.float().clone()
        self.prune = magnitude.float().clone()
        self.keep_gain.fill_(1.0)
        self.prune_gain.fill_(1.0)


class FixedWeight(WeightSource):
    """Untrained hardware weights, every connection kept (the readout-only baseline's
    random layers): sign0 * |G| / scale, readout bank cycled per forward pass."""

    sign: Tensor
    keep: Tensor

    def __init__(self, sign: Tensor, keep: Tensor, *, gain: float = math.sqrt(2)):
        super().__init__()
        self.register_buffer("sign", sign.float())
        self.register_buffer("keep", keep.float())
        self.scale = float(keep.mean()) / self.kaiming_sigma(sign.shape[1], gain)

    def weight(self) -> Tensor:
        return self.sign * self.keep[self.read_index % self.keep.shape[0]] / self.scale


class FloatWeight(WeightSource):
    """Trainable float weights, Kaiming-normal init (ideal software training)."""

    def __init__(self, shape: tuple[int, int], *, gain: float = math.sqrt(2), seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(
            torch.randn(shape, generator=gen) * self.kaiming_sigma(shape[1], gain)
        )

    def weight(self) -> Tensor:
        return self.w


class ProgrammedWeight(WeightSource):
    """Float weights programmed onto differential pairs with write noise and read with
    relative read noise (the noisy-programmed baseline): each cell's target G in
    [g_lo_s, g_hi_s] becomes N(G, sigma^2) once, sigma = write_noise_rel * G
    (``noise_reference="target"``) or write_noise_rel * (g_hi_s - g_lo_s) ("window", the
    full-scale convention), and every forward pass reads it with a fresh N(1,
    read_noise_rel^2) factor."""

    g: Tensor

    def __init__(
        self,
        w: Tensor,
        *,
        write_noise_rel: float = 0.3,
        read_noise_rel: float = 0.03,
        g_lo_s: float = 1e-6,
        g_hi_s: float = 40e-6,
        noise_reference: str = "target",
        seed: int = 0,
    ):
        super().__init__()
        if noise_reference not in ("target", "window"):
            raise ValueError(
                f"noise_reference must be 'target' or 'window', got {noise_reference!r}"
            )
        w = w.detach().float()
        self.mapping = WeightMapping(
            w.shape[1], w.shape[0], g_lo_s, g_hi_s, w_max=float(w.abs().max().clamp_min(1e-12))
        )
        self._gen = torch.Generator().manual_seed(seed)
        g = self.mapping.targets(w)
        sigma = write_noise_rel * (g if noise_reference == "target" else g_hi_s - g_lo_s)
        g = (g + sigma * torch.randn(g.shape, generator=self._gen)).clamp_min(0.0)
        self.register_buffer("g", g)
        self.read_noise_rel = read_noise_rel

    def weight(self) -> Tensor:
        g = self.g * (1 + self.read_noise_rel * torch.randn(self.g.shape, generator=self._gen))
        return self.mapping.weights_from_conductance(g)


# -- training -----------------------------------------------------------------------------
def weight_sources(model: nn.Module) -> list[WeightSource]:
    return [m for m in model.modules() if isinstance(m, WeightSource)]


def set_read_index(model: nn.Module, index: int) -> None:
    """Advance every source to readout ``index`` (a new chip readout per batch)."""
    for src in weight_sources(model):
        src.read_index = index


def refresh_masks(model: nn.Module, threshold: float = 0.0) -> int:
    """Refresh every masked layer; returns the flips of this step."""
    return sum(
        src.refresh_mask(threshold)
        for src in weight_sources(model)
        if isinstance(src, MaskedWeight)
    )


def masks_of(model: nn.Module) -> list[Tensor]:
    return [src.mask.clone() for src in weight_sources(model) if isinstance(src, MaskedWeight)]


@dataclass
class TrainConfig:
    """SGD with momentum, weight decay and a cosine schedule (Li et al., arXiv 2311.07164);
    ``switch_limit`` None disables the rule (every flip allowed)."""

    epochs: int = 30
    batch_size: int = 60
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = 5.0
    switch_limit: ThresholdSchedule | None = None
    seed: int = 0


@dataclass
class TrainResult:
    val_history: list[float] = field(default_factory=list)
    flips_per_epoch: list[int] = field(default_factory=list)

    @property
    def flips(self) -> int:
        return sum(self.flips_per_epoch)


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    cfg: TrainConfig,
    *,
    validate: Callable[[nn.Module], float] | None = None,
    extra_inputs: Callable[[Tensor], dict] | None = None,
) -> TrainResult:
    """Train scores (masked layers) or weights (float layers): one readout index per
    batch, masks refreshed after every step with the current switch-limit threshold, and
    the threshold lowered one step whenever ``validate(model)`` (run after each epoch)
    improves. ``extra_inputs(batch_index)`` gives extra forward kwargs (e.g. lengths)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = x.shape[0]
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    result, best, read = TrainResult(), -math.inf, 0
    for _ in range(cfg.epochs):
        model.train()
        flips = 0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            set_read_index(model, read)
            read += 1
            kw = extra_inputs(idx) if extra_inputs is not None else {}
            loss = loss_fn(model(x[idx], **kw), y[idx])
            opt.zero_grad()
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            flips += refresh_masks(model, cfg.switch_limit.value if cfg.switch_limit else 0.0)
        result.flips_per_epoch.append(flips)
        if validate is not None:
            score = validate(model)
            result.val_history.append(score)
            if score > best:
                best = score
                if cfg.switch_limit is not None:
                    cfg.switch_limit.improved()
    return result


def accuracy(model: nn.Module, x: Tensor, y: Tensor, read_index: int = 0, **kw) -> float:
    """Classification accuracy in eval mode with readout ``read_index``."""
    model.eval()
    set_read_index(model, read_index)
    with torch.no_grad():
        return float((model(x, **kw).argmax(-1) == y).float().mean())


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def load_deployed(model: nn.Module, magnitudes: Iterable[Tensor]) -> None:
    """Point every masked layer of ``model`` at readouts of the deployed array."""
    masked = [s for s in weight_sources(model) if isinstance(s, MaskedWeight)]
    mags = list(magnitudes)
    if len(mags) != len(masked):
        raise ValueError(f"{len(mags)} readouts for {len(masked)} masked layers")
    for src, mag in zip(masked, mags):
        src.use_readout(mag)


# -- one call from layer shapes to hardware random weights ---------------------------------
@dataclass
class HardwareWeights:
    """Random weights formed on a backend: layer regions, fixed signs and readout banks."""

    mappings: list[WeightMapping]
    signs: list[Tensor]
    states: PairStates

    def masked_factory(
        self, *, keep_fraction: float = 0.5, reprogram_noise_rel: float = 0.15, seed: int = 0
    ) -> Callable[[str, tuple[int, int], float], WeightSource]:
        """Source factory for the pruned random network (layers taken in build order)."""
        counter = self._counter()

        def make(name: str, shape: tuple[int, int], gain: float) -> WeightSource:
            i = counter(name, shape)
            return MaskedWeight(
                self.signs[i],
                self.states.keep[i],
                self.states.prune[i],
                gain=gain,
                keep_fraction=keep_fraction,
                reprogram_noise_rel=reprogram_noise_rel,
                seed=seed + 7919 * i,
            )

        return make

    def readout_only_factory(
        self, seed: int = 0
    ) -> Callable[[str, tuple[int, int], float], WeightSource]:
        """Every layer fixed at its formed weights except the one named ``readout``,
        which is a trainable float layer."""
        counter = self._counter()

        def make(name: str, shape: tuple[int, int], gain: float) -> WeightSource:
            i = counter(name, shape)
            if name == "readout":
                return FloatWeight(shape, gain=gain, seed=seed)
            return FixedWeight(self.signs[i], self.states.keep[i], gain=gain)

        return make

    def _counter(self) -> Callable[[str, tuple[int, int]], int]:
        """Hands out layer indices in build order, checking each layer's shape."""
        taken = [0]

        def next_layer(name: str, shape: tuple[int, int]) -> int:
            i = taken[0]
            if i >= len(self.signs):
                raise ValueError(
                    f"layer {i} ({name}) has no hardware region: only {len(self.signs)} drawn"
                )
            have = tuple(self.signs[i].shape)
            if have != tuple(shape):
                raise ValueError(
                    f"layer {i} ({name}) wants {tuple(shape)}, the hardware holds {have}"
                )
            taken[0] += 1
            return i

        return next_layer


def draw_hardware_weights(
    backend: Backend,
    shapes: Sequence[tuple[int, int]],
    *,
    sign_seed: int = 0,
    recipe: FormingRecipe = FormingRecipe(),
    n_reads: int = 8,
    pulses: SwitchPulses = SwitchPulses(),
) -> HardwareWeights:
    """Lay the layers out on ``backend``, form one cell per weight pair (fixed random
    sign), and measure the pruned and kept readout banks (:func:`measure_pair_states`)."""
    mappings = layout_layers(shapes, backend.shape)
    signs = random_signs(shapes, sign_seed)
    form_random_weights(backend, active_cells_all(mappings, signs, backend.shape), recipe)
    states = measure_pair_states(backend, mappings, signs, n_reads, pulses)
    return HardwareWeights(mappings, signs, states)
