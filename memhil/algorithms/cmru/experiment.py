"""Memory recurrent units as an experiment file (``algorithm: cmru``): the backbone is
trained in float with this package's recipe (``docs/algorithms.md#backbone-and-training``),
then the memory units' input projections [W_c; W_β] (and, as configured, their output maps
and the final readout) are programmed onto the backend by program-and-verify and the model
is evaluated there (``docs/algorithms.md#deployment``); the states stay digital.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from memhil.algorithms.cmru.backbone import Readout, RecurrentBackbone
from memhil.algorithms.cmru.deploy import deploy_to_backend_steps, plan_placement
from memhil.algorithms.cmru.training import TrainConfig as RecipeConfig
from memhil.algorithms.cmru.training import Trainer, evaluate, scores
from memhil.algorithms.deployment import (
    check_deploy_settings,
    deploy_metrics,
    deploy_step,
    sequence_data,
)
from memhil.algorithms.experiment import (
    Experiment,
    ExperimentConfig,
    Step,
    TrainConfig,
    Work,
    register_algorithm,
)
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError


@dataclass(frozen=True)
class CMRUModel:
    """``model:`` of a CMRU experiment: the residual backbone around one memory-unit kind
    (``memhil.algorithms.cmru.backbone.RecurrentBackbone``)."""

    cell: Literal["bmru", "cmru", "acmru", "acmru_learned", "fq_bmru", "fq_cmru"] = "cmru"
    """Memory unit: BMRU latch (ε = 0), CMRU counter (ε = 1), αCMRU, or the FQ variants."""
    d_model: int = 4
    """Width of the residual stream."""
    d_state: int = 2
    """Memory units per block."""
    depth: int = 1
    """Residual blocks."""
    mlp_ratio: int = 2
    """Hidden width of each block's GLU-MLP, in units of d_model."""
    dropout: float = 0.0
    """Dropout in the MLPs during training."""
    readout: Readout = "last"
    """Classify from the last step or the mean over steps."""
    positional_dims: int = 0
    """Sinusoidal position channels mixed into the input (0: none; even)."""
    eps: float | None = None
    """ε of αCMRU (the initial value when learned); None: the cell's default."""
    slope: float = 1.0
    """Slope of the surrogate gradients."""

    def __post_init__(self) -> None:
        for key in ("d_model", "d_state", "depth", "mlp_ratio"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must lie in [0, 1), got {self.dropout}")
        require(
            self.positional_dims >= 0 and self.positional_dims % 2 == 0,
            "positional_dims",
            f"must be 0 or an even number, got {self.positional_dims}",
        )
        require(
            self.eps is None or 0.0 <= self.eps <= 1.0, "eps", f"must lie in [0, 1], got {self.eps}"
        )
        require(self.slope > 0, "slope", f"must be > 0, got {self.slope}")


@dataclass(frozen=True)
class CMRUTrain(TrainConfig):
    """``train:`` of a CMRU experiment: AdamW mini-batches with a cosine schedule over all
    ``epochs * steps_per_epoch`` updates (``memhil.algorithms.cmru.training``)."""

    steps_per_epoch: int = 50
    """Mini-batch updates per epoch."""
    batch_size: int = 32
    """Sequences per mini-batch."""
    lr: float = 3e-3
    """Peak learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay (none on recurrent parameters)."""
    clip: float = 1.0
    """Gradient-norm clip."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("steps_per_epoch", "batch_size"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "clip"):
            require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class CMRUDeploy:
    """``deploy:`` of a CMRU experiment: the memory units' input projections always go on
    the array; ``outputs`` and ``readout`` add their output maps and the final readout."""

    outputs: bool = True
    """Also program each memory unit's output map W_out."""
    readout: bool = True
    """Also program the model's final readout Linear."""
    program: Literal["verify", "open_loop"] = "verify"
    """Program-and-verify, or open-loop pulse counts from the measured response."""
    tolerance_s: float | None = None
    """Verify band (S); None: 5 % of the programmed conductance window."""
    max_iterations: int = 50
    """Most verify iterations per matrix."""
    g_window_s: tuple[float, float] | None = None
    """Conductance window (S) the weights map onto; None: the backend's range, 2 % inside
    each end."""
    v_read: float | None = None
    """Read voltage (V) of the input encoding; None: the backend's own."""
    set_pulse: tuple[float, float] | None = None
    """SET pulse (amplitude V, width s); None: the backend's nominal one."""
    reset_pulse: tuple[float, float] | None = None
    """RESET pulse (amplitude V, width s); None: the backend's nominal one."""

    def __post_init__(self) -> None:
        require(
            self.tolerance_s is None or self.tolerance_s > 0,
            "tolerance_s",
            f"must be > 0 S or null, got {self.tolerance_s}",
        )
        require(
            self.max_iterations >= 1, "max_iterations", f"must be >= 1, got {self.max_iterations}"
        )
        require(
            self.v_read is None or self.v_read > 0, "v_read", f"must be > 0 V, got {self.v_read}"
        )
        require(
            self.g_window_s is None or 0 <= self.g_window_s[0] < self.g_window_s[1],
            "g_window_s",
            f"need [g_lo, g_hi] with 0 <= g_lo < g_hi S, got {self.g_window_s}",
        )


@register_algorithm
class CMRUExperiment(Experiment):
    """A BMRU / CMRU / αCMRU backbone trained in float, its projections deployed by
    program-and-verify and evaluated on the backend."""

    name = "cmru"
    model_config = CMRUModel
    train_config = CMRUTrain
    deploy_config = CMRUDeploy
    headline = "accuracy"
    description = "memory recurrent units, trained in float, projections deployed in memory"

    def __init__(self, config: ExperimentConfig, data: Any, backend: Backend):
        super().__init__(config, data, backend)
        m: CMRUModel = config.model
        t = cast(CMRUTrain, config.train)
        self.split = sequence_data(data)
        cell_kw: dict[str, Any] = {"slope": m.slope}
        if m.eps is not None:
            cell_kw["eps"] = m.eps
        self.model = RecurrentBackbone(
            self.split.n_features,
            self.split.n_classes,
            cell=m.cell,
            d_model=m.d_model,
            d_state=m.d_state,
            depth=m.depth,
            mlp_ratio=m.mlp_ratio,
            dropout=m.dropout,
            readout=m.readout,
            positional_dims=m.positional_dims,
            seed=t.seed,
            **cell_kw,
        )
        recipe = RecipeConfig(
            steps=max(1, t.epochs * t.steps_per_epoch),
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            clip=t.clip,
            seed=t.seed,
        )
        self.trainer = Trainer(self.model, recipe)
        self.float_model: RecurrentBackbone | None = None  # the trained model, once deployed

    def preflight(self) -> None:
        d: CMRUDeploy = self.config.deploy
        try:
            plan_placement(self.model, self.backend.shape, readout=d.readout, outputs=d.outputs)
        except ValueError as exc:
            key = "deploy.outputs" if d.outputs or d.readout else "model.d_state"
            raise ConfigError(key, str(exc)) from None
        check_deploy_settings(self.backend, d.set_pulse, d.reset_pulse, d.v_read, d.g_window_s)

    def train_epoch(self, epoch: int) -> Work:
        t = cast(CMRUTrain, self.config.train)
        losses, accs = [], []
        for i in range(t.steps_per_epoch):
            loss, acc = self.trainer.step(self.split.train)
            losses.append(loss)
            accs.append(acc)
            yield Step(i, t.steps_per_epoch, {"loss": loss})
        return {
            "loss": sum(losses) / len(losses),
            "batch_accuracy": sum(accs) / len(accs),
            "test_accuracy": evaluate(self.model, self.split.test),
        }

    def deploy(self) -> Work:
        d: CMRUDeploy = self.config.deploy
        self.float_model = copy.deepcopy(self.model)
        self.model.eval()
        analog_kw: dict[str, Any] = {}
        for key in ("g_window_s", "v_read", "set_pulse", "reset_pulse"):
            if getattr(d, key) is not None:
                analog_kw[key] = getattr(d, key)
        program_kw: dict[str, Any] = {}
        if d.tolerance_s is not None:
            program_kw["tolerance_s"] = d.tolerance_s
        if d.program == "verify":
            program_kw["max_iterations"] = d.max_iterations
        places = [
            p.name
            for p in plan_placement(self.model, self.backend, readout=d.readout, outputs=d.outputs)
        ]
        steps = deploy_to_backend_steps(
            self.model,
            self.backend,
            readout=d.readout,
            outputs=d.outputs,
            program_method=d.program,
            seed=self.config.train.seed,
            program_kw=program_kw,
            **analog_kw,
        )
        while True:
            try:
                name, progress = next(steps)
            except StopIteration as done:
                layers = done.value
                break
            yield deploy_step(places.index(name), len(places), progress, d.max_iterations)
        return deploy_metrics([report for _, report in layers])

    def evaluate(self) -> dict[str, float]:
        if self.float_model is None:
            raise RuntimeError("nothing is deployed yet: run deploy() first")
        return scores(self.model, self.split.test)  # accuracy and the collapse flag

    def evaluate_float(self) -> dict[str, float]:
        model = self.float_model if self.float_model is not None else self.model
        return {"accuracy": evaluate(model, self.split.test)}

    def state_dict(self) -> dict[str, Any]:
        model = self.float_model if self.float_model is not None else self.model
        return {
            "model": copy.deepcopy(model.state_dict()),
            "trainer": copy.deepcopy(self.trainer.state_dict()),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(dict(state["trainer"]))
        self.float_model = None


__all__ = ["CMRUDeploy", "CMRUExperiment", "CMRUModel", "CMRUTrain"]
