"""``algorithm: pruning``: edge-popup pruning of random weights drawn on the backend, with
the devices in the training loop (Li et al., "Pruning random resistive memory for
optimizing analogue AI", arXiv 2311.07164, 2023; ``docs/algorithms.md#pruning``).

``prepare`` forms one cell of each differential pair (random sign, random magnitude) and
measures the kept and pruned states. Each training step then reads the array afresh (the
forward pass sees each weight as it is now, the gradient the difference between its kept
and pruned readouts), takes an SGD step on the scores, refreshes the top-k masks (switch
limited) and programs every mask flip on the backend: RESET to prune, SET to reinstate.
``train.in_loop: false`` trains on the measured readout banks in software instead (the
paper's simulation) and ``deploy`` programs the final masks. Evaluation runs the MLP's
layers through ``mvm`` on the array; the float reference uses the last readouts of each
cell without read noise.

``model.method: programmed`` is the baseline the paper compares with: the same MLP
trained in float, then written onto the backend by program-and-verify
(``memhil.analog.program``) and evaluated by ``mvm`` on the programmed array, so its
weight error is the residual the device model and the verify loop actually leave; or,
with ``deploy.write_noise``, the float weights given an assumed Gaussian write noise and
read noise in software (the usual percentage baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from memhil.algorithms.deployment import check_deploy_settings, deploy_metrics, deploy_step
from memhil.algorithms.experiment import (
    Experiment,
    ExperimentConfig,
    Step,
    TrainConfig,
    Work,
    check_program_settings,
    check_pulse_request,
    no_steps,
    register_algorithm,
)
from memhil.algorithms.metrics import prediction_summary
from memhil.algorithms.pruning.edge_popup import (
    FixedWeight,
    FloatWeight,
    FormingRecipe,
    HardwareWeights,
    MaskedWeight,
    PairStates,
    ProgrammedWeight,
    SwitchPulses,
    ThresholdSchedule,
    active_cells_all,
    deploy_masks,
    form_random_weights,
    layout_layers,
    masks_of,
    measure_pair_states,
    random_signs,
    read_magnitudes,
    refresh_masks,
    set_read_index,
    weight_sources,
)
from memhil.algorithms.pruning.models import (
    MLP,
    ConvRNN,
    DigitCNN,
    SourcedLinear,
    SourceFactory,
    UNet,
    attach_layers,
    layer_shapes,
    run_layers_on,
)
from memhil.analog.linear import AnalogLinear
from memhil.analog.program import program_weights_steps
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError
from memhil.datasets.containers import Split

__all__ = [
    "AssumedWriteNoise",
    "CNNShape",
    "CRNNShape",
    "UNetShape",
    "PruningDeploy",
    "PruningExperiment",
    "PruningModel",
    "PruningTrain",
]

#: Largest row voltage (V) of the analog inference (``edge_popup.backend_linear``'s default).
INFERENCE_V = 0.2


@dataclass(frozen=True)
class AssumedWriteNoise:
    """Write noise of the percentage baseline: each programmed conductance G becomes
    N(G, sigma^2) once, sigma = ``rel`` G (``reference: target``) or ``rel`` times the
    conductance window (``window``), and every read multiplies it by N(1,
    ``read_noise_rel``^2) (``edge_popup.ProgrammedWeight``)."""

    rel: float
    reference: Literal["target", "window"] = "target"
    read_noise_rel: float = 0.03

    def __post_init__(self) -> None:
        require(self.rel >= 0, "rel", f"must be >= 0, got {self.rel}")
        require(
            self.read_noise_rel >= 0, "read_noise_rel", f"must be >= 0, got {self.read_noise_rel}"
        )


@dataclass(frozen=True)
class CNNShape:
    """``model.kind: cnn`` (8 x 8 images, ``models.DigitCNN``): two 3 x 3 convolutions and
    a hidden fully connected layer before the readout."""

    channels: tuple[int, ...] = (32, 32)
    hidden: int = 64

    def __post_init__(self) -> None:
        require(
            len(self.channels) == 2 and all(c >= 1 for c in self.channels),
            "channels",
            f"need two channel counts >= 1, got {list(self.channels)}",
        )
        require(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")


@dataclass(frozen=True)
class CRNNShape:
    """``model.kind: crnn`` (sequences (N, T, D), ``models.ConvRNN``): a conv1d over time,
    a ReLU RNN and a readout of the state averaged over the valid steps."""

    channels: int = 32
    hidden: int = 64

    def __post_init__(self) -> None:
        require(self.channels >= 1, "channels", f"must be >= 1, got {self.channels}")
        require(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")


@dataclass(frozen=True)
class UNetShape:
    """``model.kind: unet`` (images (N, 1, H, W) with per-pixel masks, ``models.UNet``):
    ``depth`` downsamplings from ``base`` channels, doubling per level."""

    base: int = 8
    depth: int = 2

    def __post_init__(self) -> None:
        require(self.base >= 1, "base", f"must be >= 1, got {self.base}")
        require(1 <= self.depth <= 4, "depth", f"must lie in 1..4, got {self.depth}")


#: The networks of ``models`` an experiment file can name, and the shape section of each.
KINDS = ("mlp", "cnn", "crnn", "unet")


@dataclass(frozen=True)
class PruningModel:
    """The network and how its random weights are drawn on the chip."""

    method: Literal["pruned", "programmed", "readout_only"] = "pruned"
    """``pruned``: edge-popup on random weights formed on the chip; ``programmed``: the
    baseline, float training then programming the weights (``deploy.write_noise``);
    ``readout_only``: the formed random weights kept as they are and only the readout
    layer trained (in float), the baseline that shows what the pruning itself adds."""
    kind: Literal["mlp", "cnn", "crnn", "unet"] = "mlp"
    """The network (``memhil.algorithms.pruning.models``): ``mlp`` on tabular data
    (``sizes``), ``cnn`` on 8 x 8 images, ``crnn`` on sequences, ``unet`` on per-pixel
    segmentation; the last three read their section (``cnn:``, ``crnn:``, ``unet:``)."""
    sizes: tuple[int, ...] = (8, 4)
    """``kind: mlp``: (features, hidden..., classes); each layer (out, in) takes ``in``
    rows and ``2 out`` columns (differential pairs), placed side by side along a tile's
    columns (so does every layer of the other kinds, a convolution as (out, in_ch k k))."""
    cnn: CNNShape | None = None
    crnn: CRNNShape | None = None
    unet: UNetShape | None = None
    bits: int | None = 4
    """Activation quantization between layers (None: off)."""
    keep_fraction: float = 0.5
    """Fraction of the weights of each layer that stays connected (top-k of the scores)."""
    sign_seed: int | None = 0
    """Seed of the fixed random signs (which cell of each pair is formed); None: the
    training seed (a sweep's seeds then draw new sign patterns too)."""
    forming_method: Literal["pulse", "protocol"] = "pulse"
    """``pulse``: one pulse on every active cell; ``protocol``: the AutoFormer ramp."""
    forming_v: float = 2.8
    """Forming (or, on a device without forming, first SET) amplitude (V)."""
    forming_width_s: float = 1e-6
    forming_compliance_a: float = 2e-4
    bank_reads: int = 4
    """Readouts of each state (kept, pruned) measured in ``prepare``."""

    def __post_init__(self) -> None:
        require(
            len(self.sizes) >= 2 and all(s >= 1 for s in self.sizes),
            "sizes",
            f"need (features, ..., classes), each >= 1, got {list(self.sizes)}",
        )
        for other in KINDS[1:]:
            require(
                other == self.kind or getattr(self, other) is None,
                other,
                f"is the shape of model.kind {other}, but model.kind is {self.kind}",
            )
        require(
            0 < self.keep_fraction <= 1,
            "keep_fraction",
            f"must lie in (0, 1], got {self.keep_fraction}",
        )
        require(self.bits is None or self.bits >= 1, "bits", f"must be >= 1, got {self.bits}")
        require(self.bank_reads >= 1, "bank_reads", f"must be >= 1, got {self.bank_reads}")
        require(self.forming_width_s > 0, "forming_width_s", "must be > 0 s")


@dataclass(frozen=True)
class PruningTrain(TrainConfig):
    """SGD with momentum, weight decay and a cosine schedule on the scores; switch
    limiting lowers its threshold from ``switch_limit_start`` to ``switch_limit_end`` in
    ``switch_limit_steps`` steps, one per improvement of the validation accuracy."""

    batch_size: int = 60
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = 5.0
    switch_limit: bool = True
    switch_limit_start: float = 0.01
    switch_limit_end: float = 0.007
    switch_limit_steps: int = 15
    switch_limit_scale: float = 1.0
    """Both thresholds times this factor: 5 is the stricter rule of the ablation (5 % ->
    3.5 %), 0 turns the rule off like ``switch_limit: false`` (every flip allowed)."""
    validation_fraction: float = 0.2
    """Held-out share of the training split that drives the switch-limit schedule."""
    in_loop: bool = True
    """Fresh readouts and mask flips on the backend each step (False: on the readout banks
    in software, masks programmed by ``deploy``)."""
    select: Literal["last", "best_val"] = "last"
    """The network ``deploy`` programs and the test scores: the last epoch's, or
    (``best_val``) the epoch's with the best validation metric: early stopping on the
    validation split, never on the test set (Prechelt, "Early stopping - but when?",
    Neural Networks: Tricks of the Trade, 1998). Of equal scores (common on a small
    split: 54 JapaneseVowels sequences score in steps of 1.9 %) the last: trained longest,
    and a pruned network then reverts the fewest masks, which deploy programs anew (new
    random conductances; counted in ``cells_programmed_at_deploy``). The test scores name
    the epoch (``selected_epoch``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(
            self.switch_limit_scale >= 0,
            "switch_limit_scale",
            f"must be >= 0, got {self.switch_limit_scale}",
        )
        require(
            0 < self.validation_fraction < 1,
            "validation_fraction",
            f"must lie in (0, 1), got {self.validation_fraction}",
        )


@dataclass(frozen=True)
class PruningDeploy:
    """Pulses that prune (RESET) and reinstate (SET) a weight."""

    set_v: float | None = None
    """SET amplitude (V); None with ``set_width_s`` None: the device's nominal SET."""
    set_width_s: float | None = None
    reset_v: float | None = None
    reset_width_s: float | None = None
    compliance_a: float = 2e-4
    """SET compliance (A)."""
    write_noise: AssumedWriteNoise | None = None
    """``model.method: programmed`` only: None programs the trained weights by
    program-and-verify on the backend (the device's own residual error); a mapping
    ``{rel, reference, read_noise_rel}`` applies that assumed noise in software instead."""
    tolerance_s: float | None = None
    """Verify band (S) of program-and-verify; None: 2 % of the conductance window."""
    max_iterations: int = 50
    """Most verify iterations per layer."""

    def __post_init__(self) -> None:
        check_program_settings(self)
        for a, b in (("set_v", "set_width_s"), ("reset_v", "reset_width_s")):
            require(
                (getattr(self, a) is None) == (getattr(self, b) is None),
                a,
                f"give {a} and {b} together (or neither: the nominal pulse)",
            )
        require(self.set_v is None or self.set_v > 0, "set_v", f"must be > 0 V, got {self.set_v}")
        require(
            self.reset_v is None or self.reset_v < 0,
            "reset_v",
            f"must be < 0 V, got {self.reset_v}",
        )


@register_algorithm
class PruningExperiment(Experiment):
    name = "pruning"
    description = "edge-popup pruning of random weights formed on the chip"
    model_config = PruningModel
    train_config = PruningTrain
    deploy_config = PruningDeploy
    headline = "accuracy"

    def __init__(self, config: ExperimentConfig, data: Any, backend: Backend):
        super().__init__(config, data, backend)
        m: PruningModel = config.model
        t: PruningTrain = config.train
        d: PruningDeploy = config.deploy
        self.kind = m.kind
        self._check_data(data)
        self.train_data, self.val = self._validation_split(data, t)
        self.build = self._builder(data)
        self.shapes = [shape for _, shape, _ in layer_shapes(self.build)]
        try:
            self.mappings = layout_layers(self.shapes, backend.shape)
        except ValueError as exc:
            raise ConfigError(f"model.{'sizes' if m.kind == 'mlp' else m.kind}", f"{exc}") from None
        self.signs = random_signs(self.shapes, t.seed if m.sign_seed is None else m.sign_seed)
        self.recipe = FormingRecipe(
            method=m.forming_method,
            amplitude_v=m.forming_v,
            width_s=m.forming_width_s,
            compliance_a=m.forming_compliance_a,
        )
        self.pulses = SwitchPulses(
            set_pulse=None if d.set_v is None else (d.set_v, float(d.set_width_s or 0)),
            reset_pulse=None if d.reset_v is None else (d.reset_v, float(d.reset_width_s or 0)),
            compliance_a=d.compliance_a,
        )
        self.pruned = m.method == "pruned"
        # pruned and readout-only: the weights are formed on the chip
        self.on_hardware = m.method != "programmed"
        if self.on_hardware:
            # placeholder banks until ``prepare`` measures the chip (or ``load_state`` restores)
            ones = [torch.ones(m.bank_reads, *s) for s in self.shapes]
            self._build(PairStates(ones, [0.01 * o for o in ones]))
        else:
            self._build_float()
        self.gen = torch.Generator().manual_seed(t.seed)
        scale = t.switch_limit_scale
        self.schedule = (
            ThresholdSchedule(
                scale * t.switch_limit_start, scale * t.switch_limit_end, t.switch_limit_steps
            )
            if t.switch_limit and scale > 0
            else None
        )
        self.best_val = -math.inf
        # ``train.select: best_val``: the network at the best validation epoch (1-based)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.read_index = 0
        self.flips = 0
        self.on_chip = [torch.ones(s) for s in self.shapes]  # the masks programmed on the chip
        # ``programmed``: the layers as programmed by ``deploy`` (arrays or noisy copies)
        self.programmed: list[torch.nn.Module] = []
        self.write_error_window = math.nan

    # -- the network and its data -----------------------------------------------------
    def _check_data(self, data: Any) -> None:
        """The dataset fits ``model.kind`` (ConfigError naming ``dataset`` or the model key)."""
        from memhil.datasets import ClassificationData

        m: PruningModel = self.config.model
        if not isinstance(data, ClassificationData):
            raise ConfigError(
                "dataset", f"pruning takes a classification set, got {type(data).__name__}"
            )
        x, y = data.train.x, data.train.y
        shape = tuple(x.shape[1:])
        if m.kind == "mlp":
            if x.dim() != 2:
                raise ConfigError(
                    "dataset", f"model.kind mlp takes tabular data (N, D), got (N, {shape})"
                )
            if m.sizes[0] != data.n_features or m.sizes[-1] != data.n_classes:
                raise ConfigError(
                    "model.sizes",
                    f"{list(m.sizes)} must start with the dataset's {data.n_features} features "
                    f"and end with its {data.n_classes} classes",
                )
        elif m.kind == "cnn" and shape != (1, 8, 8):
            raise ConfigError(
                "dataset",
                f"model.kind cnn takes 8 x 8 one-channel images (N, 1, 8, 8) such as "
                f"digit_images, got (N, {shape})",
            )
        elif m.kind == "crnn" and x.dim() != 3:
            raise ConfigError(
                "dataset", f"model.kind crnn takes sequences (N, T, D), got (N, {shape})"
            )
        elif m.kind == "unet":
            depth = (m.unet or UNetShape()).depth
            if x.dim() != 4 or y.dim() != 3 or tuple(y.shape[1:]) != tuple(x.shape[2:]):
                raise ConfigError(
                    "dataset",
                    f"model.kind unet takes images (N, C, H, W) with masks (N, H, W) such as "
                    f"vessels, got x (N, {shape}), y (N, {tuple(y.shape[1:])})",
                )
            if x.shape[2] % 2**depth or x.shape[3] % 2**depth:
                raise ConfigError(
                    "model.unet.depth",
                    f"{depth} halvings need an image side divisible by {2**depth}, "
                    f"got {tuple(x.shape[2:])}",
                )

    def _validation_split(self, data: Any, t: PruningTrain) -> tuple[Any, Split]:
        """(data with the reduced training split, validation split): stratified by class,
        or, for segmentation, the last images of the training split."""
        if self.kind != "unet":
            return data.with_validation(t.validation_fraction, t.seed)
        n = len(data.train)
        n_val = min(max(1, round(t.validation_fraction * n)), n - 1)
        keep = torch.arange(n - n_val)
        return replace(data, train=data.train.subset(keep)), data.train.subset(
            torch.arange(n - n_val, n)
        )

    def _builder(self, data: Any) -> Callable[[SourceFactory], torch.nn.Module]:
        """The network of ``model.kind`` from a weight-source factory."""
        m: PruningModel = self.config.model
        if m.kind == "cnn":
            c = m.cnn or CNNShape()
            return lambda f: DigitCNN(
                f,
                channels=tuple(c.channels),
                hidden=c.hidden,
                n_classes=data.n_classes,
                bits=m.bits,
            )
        if m.kind == "crnn":
            r = m.crnn or CRNNShape()
            return lambda f: ConvRNN(
                f,
                n_in=data.n_features,
                channels=r.channels,
                hidden=r.hidden,
                n_classes=data.n_classes,
                bits=m.bits,
            )
        if m.kind == "unet":
            u = m.unet or UNetShape()
            n_in = int(data.train.x.shape[1])
            return lambda f: UNet(f, base=u.base, depth=u.depth, n_in=n_in, bits=m.bits)
        return lambda f: MLP(f, tuple(m.sizes), bits=m.bits)

    def _build(self, states: PairStates) -> None:
        """The network on readout banks ``states`` (keep/prune per layer), its optimizer
        and schedule; the last readout of each state is the float reference."""
        m: PruningModel = self.config.model
        t: PruningTrain = self.config.train
        hw = HardwareWeights(self.mappings, self.signs, states)
        if m.method == "readout_only":
            self.net = self.build(hw.readout_only_factory(seed=t.seed))
        else:
            self.net = self.build(
                hw.masked_factory(
                    keep_fraction=m.keep_fraction,
                    # in the loop the chip supplies the reprogramming noise
                    reprogram_noise_rel=0.0 if t.in_loop else 0.15,
                    seed=t.seed,
                )
            )
        self.bank_keep = [k[-1].clone() for k in states.keep]
        self.bank_prune = [p[-1].clone() for p in states.prune]
        self._optimizer()

    def _build_float(self) -> None:
        """The baseline: the same network with trainable float weights (Kaiming init)."""
        t: PruningTrain = self.config.train
        self.net = self.build(lambda name, shape, gain: FloatWeight(shape, gain=gain, seed=t.seed))
        self.bank_keep, self.bank_prune = [], []
        self._optimizer()

    def _optimizer(self) -> None:
        t: PruningTrain = self.config.train
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(
            self.params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
        steps = max(1, t.epochs * math.ceil(len(self.train_data.train) / t.batch_size))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps)

    def _sources(self) -> list[MaskedWeight]:
        return [s for s in weight_sources(self.net) if isinstance(s, MaskedWeight)]

    def _fixed(self) -> list[FixedWeight]:
        return [s for s in weight_sources(self.net) if isinstance(s, FixedWeight)]

    def _logits(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """The network's output; the CRNN pools its states over the valid steps."""
        if self.kind == "crnn" and lengths is not None:
            return self.net(x, lengths=lengths)
        return self.net(x)

    # -- phases -----------------------------------------------------------------------
    def preflight(self) -> None:
        m: PruningModel = self.config.model
        d: PruningDeploy = self.config.deploy
        be = self.backend
        if not self.on_hardware:
            if d.write_noise is None:  # programmed on the backend: its pulses and reads
                check_deploy_settings(be, *self._program_pulses())
                be.limits.check_read(torch.tensor([INFERENCE_V]))
            return
        check_pulse_request(
            be,
            "model.forming_v",
            m.forming_v,
            m.forming_width_s,
            compliance_a=m.forming_compliance_a,
        )
        try:
            (v_set, w_set), (v_reset, w_reset) = self.pulses.resolve(be)
        except ValueError as exc:
            raise ConfigError("deploy.set_v", str(exc)) from None
        check_pulse_request(be, "deploy.set_v", v_set, w_set, compliance_a=d.compliance_a)
        check_pulse_request(be, "deploy.reset_v", v_reset, w_reset)
        be.limits.check_read(torch.tensor([INFERENCE_V]))

    def _program_pulses(self) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """``deploy``'s SET and RESET pulses for program-and-verify (None: nominal)."""
        d: PruningDeploy = self.config.deploy
        return (
            None if d.set_v is None else (d.set_v, float(d.set_width_s or 0)),
            None if d.reset_v is None else (d.reset_v, float(d.reset_width_s or 0)),
        )

    def prepare(self) -> Work:
        m: PruningModel = self.config.model
        be = self.backend
        if not self.on_hardware:  # the baseline draws nothing on the chip
            yield Step(0, 1)
            return {}
        form_random_weights(be, active_cells_all(self.mappings, self.signs, be.shape), self.recipe)
        yield Step(0, 3)
        states = measure_pair_states(be, self.mappings, self.signs, m.bank_reads, self.pulses)
        self._build(states)
        yield Step(1, 3)
        n_reset = 0
        if self.pruned:
            # every weight is kept after the measurement: program the initial top-k masks
            masks = masks_of(self.net)
            dep = deploy_masks(be, self.mappings, self.signs, self.on_chip, masks, self.pulses)
            self.on_chip = [mk.clone() for mk in masks]
            n_reset = dep.n_reset
        yield Step(2, 3)
        keep = torch.cat([k.flatten() for k in self.bank_keep])
        prune = torch.cat([p.flatten() for p in self.bank_prune])
        return {
            "g_keep_mean_s": float(keep.mean()),
            "g_prune_mean_s": float(prune.mean()),
            "cells_pruned": float(n_reset),
        }

    def _fresh_readout(self) -> None:
        """Read the array once: each weight's current state updates its bank, and the
        layers see the chip as it is (kept weights their LRS, pruned their residual)."""
        fresh = read_magnitudes(self.backend, self.mappings, self.signs, 1)
        for i, (src, f) in enumerate(zip(self._sources(), fresh)):
            on = self.on_chip[i].bool()
            self.bank_keep[i] = torch.where(on, f[0], self.bank_keep[i])
            self.bank_prune[i] = torch.where(on, self.bank_prune[i], f[0])
            src.keep = self.bank_keep[i][None].clone()
            src.prune = self.bank_prune[i][None].clone()

    def _program_flips(self) -> None:
        masks = masks_of(self.net)
        deploy_masks(self.backend, self.mappings, self.signs, self.on_chip, masks, self.pulses)
        self.on_chip = [mk.clone() for mk in masks]

    def train_epoch(self, epoch: int) -> Work:
        t: PruningTrain = self.config.train
        split = self.train_data.train
        x, y, lengths = split.x.float(), split.y, split.lengths
        batches = torch.randperm(len(y), generator=self.gen).split(t.batch_size)
        losses, flips = [], 0
        self.net.train()
        for i, idx in enumerate(batches):
            if t.in_loop and self.pruned:
                self._fresh_readout()
            set_read_index(self.net, self.read_index)
            self.read_index += 1
            z = self._logits(x[idx], None if lengths is None else lengths[idx])
            loss = F.cross_entropy(z, y[idx])
            self.opt.zero_grad()
            loss.backward()
            if t.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
            self.opt.step()
            self.sched.step()
            n = refresh_masks(self.net, self.schedule.value if self.schedule else 0.0)
            if t.in_loop and n and self.pruned:
                self._program_flips()
            flips += n
            losses.append(float(loss.detach()) * len(idx))
            yield Step(i, len(batches), {"loss": float(loss.detach()), "flips": float(n)})
        self.flips += flips
        val = self._scores(self.val)[self._selection_metric]
        if t.select == "best_val" and val >= self.best_val:
            self.best_state, self.best_epoch = self._network_state(), epoch + 1
        if val > self.best_val:
            self.best_val = val
            if self.schedule is not None:
                self.schedule.improved()
        return {
            "loss": sum(losses) / len(y),
            f"val_{self._selection_metric}": val,
            "flips": float(flips),
        }

    def _network_state(self) -> dict[str, torch.Tensor]:
        """What training changes in the network (scores, masks, float weights, BatchNorm
        statistics), without the readout banks: those stay what the chip holds now."""
        return {
            k: v.detach().clone()
            for k, v in self.net.state_dict().items()
            if not k.endswith((".keep", ".prune"))
        }

    def _restore_best(self) -> None:
        """``train.select: best_val``: the network back to its best validation epoch."""
        if self.config.train.select == "best_val" and self.best_state is not None:
            self.net.load_state_dict(self.best_state, strict=False)

    @property
    def _selection_metric(self) -> str:
        """The validation metric that drives the switch-limit schedule: PR-AUC for the
        segmentation (vessel pixels are few), accuracy otherwise."""
        return "pr_auc" if self.kind == "unet" else "accuracy"

    def _scores(self, split: Split) -> dict[str, float]:
        """Accuracy and the collapse flag of the predictions on ``split``
        (metrics.prediction_summary); for the U-Net pixel accuracy, PR-AUC and ROC-AUC of
        the vessel class over all pixels."""
        self.net.eval()
        set_read_index(self.net, 0)
        with torch.no_grad():
            z = self._logits(split.x.float(), split.lengths)
        pred = z.argmax(1)
        accuracy = float((pred == split.y).float().mean())
        if self.kind == "unet":
            from sklearn.metrics import average_precision_score, roc_auc_score

            p = torch.softmax(z, 1)[:, 1].flatten().numpy()
            truth = split.y.flatten().numpy()
            return {
                "accuracy": accuracy,
                "pr_auc": float(average_precision_score(truth, p)),
                "roc_auc": float(roc_auc_score(truth, p)),
            }
        collapse = prediction_summary(pred, z.shape[-1], split.y).metrics()
        return {"accuracy": accuracy, **collapse}

    def deploy(self) -> Work:
        self._restore_best()
        if not self.on_hardware:
            return (yield from self._deploy_programmed())
        if not self.pruned:  # readout-only: the formed weights stay as they are
            return (yield from no_steps({}))
        masks = masks_of(self.net)
        changed = sum(int((a != b).sum()) for a, b in zip(self.on_chip, masks))
        if changed:  # trained in software: program the final masks now
            self._program_flips()
        yield Step(0, 1)
        return {"mask_flips": float(self.flips), "cells_programmed_at_deploy": float(changed)}

    def _deploy_programmed(self) -> Work:
        """The baseline's deployment: program-and-verify of every trained layer onto its
        region of the backend (a 2 %-inside window of the device range, as MARS and CMRU
        deploy), or the assumed write noise applied to copies in software."""
        d: PruningDeploy = self.config.deploy
        weights = [src.weight().detach() for src in weight_sources(self.net)]
        if d.write_noise is not None:
            noise = d.write_noise
            self.programmed = [
                SourcedLinear(
                    ProgrammedWeight(
                        w,
                        write_noise_rel=noise.rel,
                        noise_reference=noise.reference,
                        read_noise_rel=noise.read_noise_rel,
                        seed=self.config.train.seed * 31 + i,
                    )
                )
                for i, w in enumerate(weights)
            ]
            yield Step(0, 1)
            return {"write_noise_rel": noise.rel}
        set_pulse, reset_pulse = self._program_pulses()
        layers: list[AnalogLinear] = []
        reports = []
        for i, (w, mp) in enumerate(zip(weights, self.mappings)):
            layer = AnalogLinear.from_weights(
                w,
                None,
                self.backend,
                window_margin=0.02,
                tile=mp.tile,
                col_offset=mp.col_offset,
                set_pulse=set_pulse,
                reset_pulse=reset_pulse,
                v_read=INFERENCE_V,
            )
            gm = layer.weights.mapping
            tol = 0.02 * (gm.g_hi_s - gm.g_lo_s) if d.tolerance_s is None else d.tolerance_s
            steps = program_weights_steps(
                layer.weights,
                layer.weight.detach(),
                tolerance_s=tol,
                max_iterations=d.max_iterations,
            )
            while True:
                try:
                    progress = next(steps)
                except StopIteration as done:
                    reports.append(done.value)
                    break
                yield deploy_step(i, len(weights), progress, d.max_iterations)
            layers.append(layer)
        self.programmed = [*layers]
        # the residual error the verify loop leaves, in units of each layer's window:
        # the figure to hold against an assumed window-referred write noise
        rel = torch.cat(
            [
                r.error_s.double().flatten()
                / (ly.weights.mapping.g_hi_s - ly.weights.mapping.g_lo_s)
                for r, ly in zip(reports, layers)
            ]
        )
        self.write_error_window = float(rel.pow(2).mean().sqrt())
        return {**deploy_metrics(reports), "write_error_window": self.write_error_window}

    def evaluate(self) -> dict[str, float]:
        """Test metrics with every hardware layer computed by ``mvm`` on the array
        (inputs scaled per row to at most ``INFERENCE_V`` volts; a convolution as its
        im2col patches), with the mask flips of training; readout-only: its random layers
        on the array, the trained readout in float; the programmed baseline: by its
        programmed layers (with the RMS residual conductance error)."""
        if not self.on_hardware:
            if not self.programmed:
                raise RuntimeError("nothing is programmed yet: run deploy() first")
            run_layers_on(self.net, self.programmed)
            try:
                scores = self._scores(self.data.test)
            finally:
                run_layers_on(self.net, None)
            if not math.isnan(self.write_error_window):
                scores["write_error_window"] = self.write_error_window
            return self._with_selection(scores)
        sources = weight_sources(self.net)
        on_array = [
            None if isinstance(src, FloatWeight) else mp for src, mp in zip(sources, self.mappings)
        ]
        attach_layers(self.net, self.backend, on_array)
        try:
            scores = self._scores(self.data.test)
        finally:
            attach_layers(self.net, None, None)
        if self.pruned:
            scores["mask_flips"] = float(self.flips)
        return self._with_selection(scores)

    def _with_selection(self, scores: dict[str, float]) -> dict[str, float]:
        """``scores`` and, with ``train.select: best_val``, the epoch they come from."""
        if self.config.train.select == "best_val":
            scores["selected_epoch"] = float(self.best_epoch or self.config.train.epochs)
        return scores

    def evaluate_float(self) -> dict[str, float]:
        """Test metrics on the last readouts of each state, without read noise (the
        programmed baseline: its trained float weights)."""
        for i, src in enumerate(self._sources()):
            src.keep = self.bank_keep[i][None].clone()
            src.prune = self.bank_prune[i][None].clone()
        return self._scores(self.data.test)

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "net": {k: v.clone() for k, v in self.net.state_dict().items()},
            "scales": [s.scale for s in self._sources()],
            "fixed_scales": [s.scale for s in self._fixed()],
            "source_gens": [s._gen.get_state() for s in self._sources()],
            "source_flips": [s.flips for s in self._sources()],
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "gen": self.gen.get_state(),
            "schedule_taken": None if self.schedule is None else self.schedule.taken,
            "best_val": self.best_val,
            "best_state": self.best_state,
            "best_epoch": self.best_epoch,
            "read_index": self.read_index,
            "flips": self.flips,
            "bank_keep": [b.clone() for b in self.bank_keep],
            "bank_prune": [b.clone() for b in self.bank_prune],
            "on_chip": [b.clone() for b in self.on_chip],
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        sd = state["net"]  # the banks take the saved shapes before the load
        for name, src in self.net.named_modules():
            if isinstance(src, MaskedWeight):
                src.keep = sd[f"{name}.keep"].clone()
                src.prune = sd[f"{name}.prune"].clone()
        self.net.load_state_dict(sd)
        for src, scale, g, f in zip(
            self._sources(), state["scales"], state["source_gens"], state["source_flips"]
        ):
            src.scale, src.flips = float(scale), int(f)
            src._gen.set_state(g)
        for fixed, scale in zip(self._fixed(), state.get("fixed_scales", [])):
            fixed.scale = float(scale)
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])
        if self.schedule is not None:
            self.schedule.taken = int(state["schedule_taken"])
        self.best_val = float(state["best_val"])
        self.best_state = state.get("best_state")
        self.best_epoch = int(state.get("best_epoch", 0))
        self.read_index = int(state["read_index"])
        self.flips = int(state["flips"])
        self.bank_keep = [b.clone() for b in state["bank_keep"]]
        self.bank_prune = [b.clone() for b in state["bank_prune"]]
        self.on_chip = [b.clone() for b in state["on_chip"]]
