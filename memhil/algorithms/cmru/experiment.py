"""Memory recurrent units as an experiment file (``algorithm: cmru``): the backbone is
trained in float with this package's recipe (``docs/algorithms.md#backbone-and-training``),
then the memory units' input projections [W_c; W_β] (and, as configured, their output maps
and the final readout) are programmed onto the backend by program-and-verify and the model
is evaluated there (``docs/algorithms.md#deployment``); the states stay digital.

The same file runs the float comparison of ``benchmarks/cmru.py``: the LRU and minGRU
baselines at the parameter count of a memory-unit cell (``model.match_params_of``), early
stopping and steps-to-converge, a constant learning rate (a run capped at B steps is then
the first B steps of one capped at 2B), a length curriculum, memory-unit diagnostics, and
``deploy.program: none`` to keep the model in float.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import memhil.datasets
from memhil.algorithms.cmru.backbone import (
    Readout,
    RecurrentBackbone,
    build_cell,
    count_parameters,
    state_size_for_budget,
)
from memhil.algorithms.cmru.deploy import deploy_to_backend_steps, plan_placement
from memhil.algorithms.cmru.training import TrainConfig as RecipeConfig
from memhil.algorithms.cmru.training import Trainer, evaluate, reached, scores
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
    check_program_settings,
    no_steps,
    register_algorithm,
)
from memhil.algorithms.metrics import steps_to_converge
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError
from memhil.datasets.containers import ClassificationData

CellKind = Literal["bmru", "cmru", "acmru", "acmru_learned", "fq_bmru", "fq_cmru", "lru", "mingru"]


@dataclass(frozen=True)
class CMRUModel:
    """``model:`` of a CMRU experiment: the residual backbone around one memory-unit kind
    (``memhil.algorithms.cmru.backbone.RecurrentBackbone``)."""

    cell: CellKind = "cmru"
    """Memory unit: BMRU latch (ε = 0), CMRU counter (ε = 1), αCMRU, the FQ variants, or a
    baseline: LRU (Orvieto et al., ICML 2023) or minGRU (Feng et al., arXiv 2410.01201)."""
    d_model: int = 4
    """Width of the residual stream."""
    d_state: int = 2
    """Memory units per block (with ``match_params_of``: those of the reference cell)."""
    match_params_of: CellKind | None = None
    """Equal parameter counts: the cell gets the state size whose parameter count is the
    closest to that of a ``match_params_of`` cell with ``d_state`` units (None: ``d_state``
    units of ``cell``)."""
    mingru_max_timescale: float | None = None
    """minGRU chrono gate bias: timescales up to this many steps (Tallec & Ollivier, ICLR
    2018); None: the training sequence length."""
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
class CMRUCurriculum:
    """``train.curriculum:`` ``steps`` updates (their own cosine schedule, early stop at
    ``train.stop_accuracy``) on ``dataset`` (e.g. the task at a shorter T) before the run's
    own training."""

    steps: int = 300
    """Most updates on the curriculum task."""
    dataset: dict[str, Any] | None = None
    """``{name: GENERATOR, options...}`` of a ``memhil.datasets`` generator."""

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(
            isinstance(self.dataset, dict) and isinstance(self.dataset.get("name"), str),
            "dataset",
            f"expected {{name: GENERATOR, options...}}, got {self.dataset!r}",
        )


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
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning rate: cosine to 1 % over all updates, or constant (the budget is then a cap
    only: doubling it changes nothing for a run that stopped before it)."""
    stop_accuracy: float | None = None
    """Stop once the mean mini-batch accuracy of the last ``window`` updates reaches this
    (None: train every step); the remaining epochs then make no update."""
    window: int = 20
    """Updates in the mean of ``stop_accuracy`` and ``converge_accuracy``."""
    converge_accuracy: float = 0.95
    """``steps_to_converge``: the first update after which the ``window`` mean mini-batch
    accuracy stays at or above this."""
    diagnostics_every: int = 0
    """Record memory-unit diagnostics (units switching on blank steps, |s_T|, gradient
    norms per group) every this many updates (0: never)."""
    curriculum: CMRUCurriculum | None = None
    """Train on another task first (None: no curriculum)."""
    length_test_factors: tuple[int, ...] = ()
    """Length generalisation: also test the final model on the dataset's generator called
    again at ``seq_len`` = factor x the training T (e.g. [2, 10]: 2T and 10T), reported as
    ``length_x<factor>_accuracy`` with its collapse metrics (empty: none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("stop_accuracy", "converge_accuracy"):
            v = getattr(self, key)
            require(v is None or 0.0 < v <= 1.0, key, f"must lie in (0, 1], got {v}")
        require(self.window >= 1, "window", f"must be >= 1, got {self.window}")
        require(
            self.diagnostics_every >= 0,
            "diagnostics_every",
            f"must be >= 0, got {self.diagnostics_every}",
        )
        for key in ("steps_per_epoch", "batch_size"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "clip"):
            require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        for f in self.length_test_factors:
            require(f >= 1, "length_test_factors", f"factors must be >= 1, got {f}")


@dataclass(frozen=True)
class CMRUDeploy:
    """``deploy:`` of a CMRU experiment: the memory units' input projections always go on
    the array; ``outputs`` and ``readout`` add their output maps and the final readout."""

    outputs: bool = True
    """Also program each memory unit's output map W_out."""
    readout: bool = True
    """Also program the model's final readout Linear."""
    program: Literal["verify", "open_loop", "none"] = "verify"
    """Program-and-verify, open-loop pulse counts from the measured response, or none: the
    model stays in float (``evaluate`` then scores the float model; no device is touched)."""
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
        check_program_settings(self)


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
        per_step = self.split.train.y.dim() == 3  # per-step bit targets (flip-flop)
        cell_kw: dict[str, Any] = {"slope": m.slope}
        if m.eps is not None:
            cell_kw["eps"] = m.eps
        if m.cell == "mingru":
            timescale = m.mingru_max_timescale
            cell_kw["mingru_max_timescale"] = (
                max(float(self.split.seq_len), 3.0) if timescale is None else timescale
            )
        self.d_state = m.d_state
        if m.match_params_of is not None:
            reference = count_parameters(build_cell(m.match_params_of, m.d_model, m.d_state))
            self.d_state = state_size_for_budget(m.cell, m.d_model, reference)
        self.model = RecurrentBackbone(
            self.split.n_features,
            int(self.split.train.y.shape[-1]) if per_step else self.split.n_classes,
            cell=m.cell,
            d_model=m.d_model,
            d_state=self.d_state,
            depth=m.depth,
            mlp_ratio=m.mlp_ratio,
            dropout=m.dropout,
            readout="all" if per_step else m.readout,
            positional_dims=m.positional_dims,
            seed=t.seed,
            **cell_kw,
        )
        self.curriculum = None
        if t.curriculum is not None:
            self.curriculum = _generated(t.curriculum.dataset or {}, "train.curriculum.dataset")
        if t.length_test_factors:
            self._length_spec(1)  # the dataset spec regenerates: checked before any training
        self.trainer = Trainer(self.model, self._recipe(max(1, t.epochs * t.steps_per_epoch)))
        self.batch_accuracies: list[float] = []  # every update's, for steps-to-converge
        self.curriculum_steps = 0  # updates made on the curriculum task
        self.float_model: RecurrentBackbone | None = None  # the trained model, once deployed

    def _recipe(self, steps: int, *, curriculum: bool = False) -> RecipeConfig:
        t = cast(CMRUTrain, self.config.train)
        return RecipeConfig(
            steps=steps,
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            clip=t.clip,
            schedule="cosine" if curriculum else t.schedule,
            seed=t.seed,
            diagnostics_every=0 if curriculum else t.diagnostics_every,
        )

    @property
    def stopped(self) -> bool:
        """Whether the early-stopping criterion (``train.stop_accuracy``) has been met."""
        t = cast(CMRUTrain, self.config.train)
        return reached(self.batch_accuracies, t.stop_accuracy, t.window)

    def preflight(self) -> None:
        d: CMRUDeploy = self.config.deploy
        if d.program == "none":
            return  # nothing goes on the device
        if self.config.model.cell in ("lru", "mingru"):
            raise ConfigError(
                "model.cell",
                f"{self.config.model.cell} has no memory units to deploy: a baseline runs "
                "with deploy.program: none",
            )
        try:
            plan_placement(self.model, self.backend.shape, readout=d.readout, outputs=d.outputs)
        except ValueError as exc:
            key = "deploy.outputs" if d.outputs or d.readout else "model.d_state"
            raise ConfigError(key, str(exc)) from None
        check_deploy_settings(self.backend, d.set_pulse, d.reset_pulse, d.v_read, d.g_window_s)

    def _train_curriculum(self, total: int) -> Work:
        """The curriculum's updates (a trainer of their own), before the first epoch."""
        t = cast(CMRUTrain, self.config.train)
        assert t.curriculum is not None and self.curriculum is not None
        trainer = Trainer(self.model, self._recipe(t.curriculum.steps, curriculum=True))
        accs: list[float] = []
        for i in range(t.curriculum.steps):
            loss, acc = trainer.step(self.curriculum.train)
            accs.append(acc)
            yield Step(i, total, {"curriculum_loss": loss, "curriculum_batch_accuracy": acc})
            if reached(accs, t.stop_accuracy, t.window):
                break
        trainer.close()
        self.curriculum_steps = len(accs)
        return {}

    def train_epoch(self, epoch: int) -> Work:
        t = cast(CMRUTrain, self.config.train)
        curriculum = self.curriculum is not None and epoch == 0 and not self.curriculum_steps
        offset = t.curriculum.steps if curriculum and t.curriculum is not None else 0
        if curriculum:
            yield from self._train_curriculum(offset + t.steps_per_epoch)
        losses, accs = [], []
        for i in range(t.steps_per_epoch):
            if self.stopped:
                break
            n_diag = len(self.trainer.diagnostics)
            loss, acc = self.trainer.step(self.split.train)
            losses.append(loss)
            accs.append(acc)
            self.batch_accuracies.append(acc)
            metrics = {"loss": loss, "batch_accuracy": acc}
            for record in self.trainer.diagnostics[n_diag:]:
                metrics.update({k: v for k, v in record.items() if k != "step"})
            yield Step(offset + i, offset + t.steps_per_epoch, metrics)
        test = scores(self.model, self.split.test)
        out = {"steps": float(self.trainer.steps)}
        if losses:
            out |= {"loss": sum(losses) / len(losses), "batch_accuracy": sum(accs) / len(accs)}
        return out | {
            "test_accuracy": test["accuracy"],
            "test_collapsed": test["collapsed"],
            "test_classes_never_predicted": test["classes_never_predicted"],
        }

    def _training_metrics(self) -> dict[str, float]:
        """The budget a run used: updates made, steps-to-converge (NaN: never), and the
        curriculum's updates."""
        t = cast(CMRUTrain, self.config.train)
        conv = None
        if self.batch_accuracies:
            conv = steps_to_converge(
                self.batch_accuracies,
                target=1.0,
                margin=1.0 - t.converge_accuracy,
                window=t.window,
            )
        return {
            "steps": float(self.trainer.steps),
            "steps_to_converge": float("nan") if conv is None else float(conv),
            "curriculum_steps": float(self.curriculum_steps),
            "d_state": float(self.d_state),
            "parameters": float(count_parameters(self.model)),
        }

    def deploy(self) -> Work:
        d: CMRUDeploy = self.config.deploy
        self.trainer.close()
        self.float_model = copy.deepcopy(self.model)
        self.model.eval()
        if d.program == "none":
            return (yield from no_steps())
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

    def _length_spec(self, factor: int) -> dict[str, Any]:
        """The dataset spec at ``factor`` x the training length, one training sequence."""
        spec = dict(self.config.dataset)
        key = "train.length_test_factors"
        if not isinstance(spec.get("name"), str):
            raise ConfigError(key, "needs the experiment's dataset spec (run from a file)")
        extra = sorted(set(spec) & {"standardize", "features", "classes"})
        if extra:
            raise ConfigError(key, f"cannot regenerate a dataset with options {extra}")
        return spec | {"seq_len": factor * self.split.seq_len, "n_train": 1}

    def length_scores(self) -> dict[str, float]:
        """Accuracy and collapse metrics at each ``train.length_test_factors`` x T: test
        sets drawn anew from the generator at that length (train at T, test at 2T, 10T)."""
        out: dict[str, float] = {}
        for f in cast(CMRUTrain, self.config.train).length_test_factors:
            test = _generated(self._length_spec(f), "train.length_test_factors").test
            out |= {f"length_x{f}_{k}": v for k, v in scores(self.model, test).items()}
        return out

    def evaluate(self) -> dict[str, float]:
        """Accuracy and the collapse flag on the backend (``deploy.program: none``: of the
        float model), with the training budget used (``_training_metrics``) and the
        length tests (``length_scores``)."""
        if self.float_model is None:
            raise RuntimeError("nothing is deployed yet: run deploy() first")
        # accuracy and the collapse flag from one pass
        return scores(self.model, self.split.test) | self._training_metrics() | self.length_scores()

    def evaluate_float(self) -> dict[str, float]:
        model = self.float_model if self.float_model is not None else self.model
        return {"accuracy": evaluate(model, self.split.test)}

    def state_dict(self) -> dict[str, Any]:
        model = self.float_model if self.float_model is not None else self.model
        return {
            "model": copy.deepcopy(model.state_dict()),
            "trainer": copy.deepcopy(self.trainer.state_dict()),
            "batch_accuracies": list(self.batch_accuracies),
            "curriculum_steps": self.curriculum_steps,
            "diagnostics": copy.deepcopy(self.trainer.diagnostics),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(dict(state["trainer"]))
        self.batch_accuracies = list(state.get("batch_accuracies", []))
        self.curriculum_steps = int(state.get("curriculum_steps", 0))
        self.trainer.diagnostics = list(state.get("diagnostics", []))
        self.float_model = None


def _generated(spec: dict[str, Any], key: str) -> ClassificationData:
    """The sequence set of ``{name: GENERATOR, options...}`` (a public ``memhil.datasets``
    function, as an experiment file's ``dataset:`` names one); errors name ``key``."""
    name = spec.get("name")
    fn = getattr(memhil.datasets, str(name), None) if name in memhil.datasets.__all__ else None
    if not callable(fn):
        raise ConfigError(f"{key}.name", f"unknown generator {name!r} in memhil.datasets")
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        data = fn(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, f"{name}({options}): {exc}") from None
    return sequence_data(data, key)


__all__ = ["CMRUCurriculum", "CMRUDeploy", "CMRUExperiment", "CMRUModel", "CMRUTrain"]
