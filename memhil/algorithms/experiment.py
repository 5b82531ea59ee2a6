"""The one interface every learning algorithm implements so that an experiment file
(``algorithm: NAME``) trains, deploys and evaluates it on any backend, and a registry of
the algorithms by name (like the protocol registry).

The runner (``memhil.runs.experiment_run``), not the algorithm, owns progress with ETA,
checkpoints, resume, recording into the run store, pulse tallies, conductance snapshots
and the safe state; an algorithm module imports none of runs, store or cli (import-linter
contract). How the runner drives an :class:`Experiment` subclass ``A``::

    config = A.configure(model, train, deploy, source=FILE)  # typed, file:key errors
    torch.manual_seed(config.train.seed)
    exp = A(config, data, backend)       # digital build only: NO pulse, read or mvm
    exp.preflight()                      # on a dry backend (no instrument), then the real one
    if fresh run:  run(exp.prepare())    # one-off device work: forming, initial programming
    else:          exp.load_state(saved) # resume: state_dict() of the last checkpoint
    for epoch in range(start, config.train.epochs):
        metrics = run(exp.train_epoch(epoch))       # -> per-epoch metrics
        every train.checkpoint_every epochs: state_dict() + device state + snapshot
    run(exp.deploy())                    # -> deployment metrics (e.g. verify residual)
    final = exp.evaluate(); final_float = exp.evaluate_float()

``run(work)`` drives a :data:`Work` generator: each yielded :class:`Step` advances the
progress bar (``index`` of ``total``, for the ETA) and, when it carries ``metrics``, is
recorded as a per-step point; the generator's ``return`` value (a ``dict[str, float]``) is
the phase's result. A phase without steps is ``return (yield from no_steps({...}))``.

``data`` is what the experiment file's ``dataset: {name: ..., <options>}`` returns from
the ``memhil.datasets`` function of that name (``ClassificationData``,
``SpikePatternTask`` ...); an algorithm that needs another kind raises
``ConfigError("dataset", ...)`` in ``__init__``.

Rules an implementation keeps, so a resumed run equals an uninterrupted one:

- ``__init__`` is deterministic given ``config`` (seeds in ``config.train.seed`` and the
  model config) and touches the backend only through its properties (``shape``,
  ``limits``, ``capabilities``, ``device_model()``): it runs on a ``DryBackend`` in the
  pre-flight and again on resume, where the device must not be pulsed a second time.
- Device work before training (forming, initial programming) goes in ``prepare``; the
  runner calls it once per run, never on resume.
- Every piece of state that changes during training and is not on the device (weights,
  masks, optimizer state, schedules, and the state of each ``torch.Generator`` the
  algorithm owns) is in ``state_dict()`` (tensors and plain data; saved with
  ``torch.save``) and restored by ``load_state``. The runner saves and restores torch's
  and numpy's global RNG states itself, and on the simulator the device state.
- Algorithms talk to the chip only through the ``Backend`` contract
  (``mvm``/``mvm_t``/``read_conductance``/``pulse``), so the same code trains on the
  simulator, the mock lab or a bench; where the paper trains with the devices in the loop
  (EqProp, e-prop, pruning's fresh readouts and mask flips), ``train_epoch`` does so on
  ``self.backend``; where it trains in software and then deploys (MARS, CMRU),
  ``train_epoch`` is digital and ``deploy`` programs the backend.
- Pulse tallies (SET/RESET device-pulses and worst-case energy) are counted by the
  backend (``Backend.tally``) and recorded by the runner; algorithm-specific counts (mask
  flips, program-and-verify iterations) are metrics.
- Metric names are plain identifiers; fractions such as ``accuracy`` lie in [0, 1];
  physical quantities carry their SI suffix (``residual_s``, ``energy_j``). ``headline``
  names the metric a summary leads with.
- Errors about the configuration or the data are ``ConfigError(key, reason)`` with the
  file's dotted key (``model.hidden``, ``dataset``); the runner adds the file name.
  Requests beyond the backend's limits raise ``LimitError`` from ``preflight`` (set its
  ``param`` to the config key, e.g. ``deploy.v_set_v``).

A minimal implementation::

    @dataclass(frozen=True)
    class MyModel:
        hidden: int = 32
        def __post_init__(self): require(self.hidden > 0, "hidden", "must be > 0")

    @register_algorithm
    class MyExperiment(Experiment):
        name = "mine"
        model_config = MyModel
        train_config = TrainConfig          # or a subclass with more fields
        deploy_config = MyDeploy
        headline = "accuracy"

        def __init__(self, config, data, backend):
            super().__init__(config, data, backend)
            self.w = torch.zeros(...)
        def train_epoch(self, epoch):
            for i, batch in enumerate(batches):
                ...
                yield Step(i, len(batches), {"loss": loss})
            return {"loss": mean_loss, "accuracy": acc}
        def deploy(self): return (yield from no_steps({}))
        def evaluate(self): return {"accuracy": ...}        # on self.backend
        def evaluate_float(self): return {"accuracy": ...}  # the same model in float
        def state_dict(self): return {"w": self.w.clone()}
        def load_state(self, state): self.w = state["w"].clone()

and a line ``"mine"`` in :data:`BUILTIN_ALGORITHMS` when the class lives in
``memhil/algorithms/mine/experiment.py``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from memhil.backends.base import Backend
from memhil.core.config import from_mapping, require
from memhil.core.errors import ConfigError

__all__ = [
    "BUILTIN_ALGORITHMS",
    "Experiment",
    "ExperimentConfig",
    "Step",
    "TrainConfig",
    "Work",
    "algorithm_names",
    "check_pulse_request",
    "check_program_settings",
    "get_algorithm",
    "no_steps",
    "register_algorithm",
]


@dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` keys every algorithm has; an algorithm adds its own in a subclass
    (learning rate, batch size ...) and names it in ``Experiment.train_config``."""

    epochs: int = 1
    """Training epochs (passes over the training split)."""
    seed: int = 0
    """Seed of the run: torch's global RNG is seeded with it before the build, and an
    algorithm seeds its own generators from it."""
    checkpoint_every: int = 1
    """Epochs between checkpoints (and conductance snapshots); the last epoch always
    checkpoints."""

    def __post_init__(self) -> None:
        require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        require(
            self.checkpoint_every >= 1,
            "checkpoint_every",
            f"must be >= 1 epoch, got {self.checkpoint_every}",
        )


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment's validated sections: ``model`` (``Experiment.model_config``),
    ``train`` (``Experiment.train_config``) and ``deploy`` (``Experiment.deploy_config``)."""

    model: Any
    train: Any  # an instance of ``train_config`` (a TrainConfig subclass): epochs, seed ...
    deploy: Any
    dataset: Mapping[str, Any] = field(default_factory=dict)
    """The file's ``dataset:`` as a mapping (name and options; empty when built without a
    file), for an algorithm that regenerates its data at other settings."""


@dataclass(frozen=True)
class Step:
    """One unit of work done inside a phase: step ``index`` (0-based) of ``total`` (the
    progress bar's ETA), with optional per-step ``metrics`` that the runner records."""

    index: int
    total: int
    metrics: Mapping[str, float] = field(default_factory=dict)


Work = Generator[Step, None, dict[str, float]]
"""A phase (prepare, one training epoch, deploy): yields :class:`Step` s, returns the
phase's metrics."""


def no_steps(metrics: Mapping[str, float] | None = None) -> Work:
    """A phase with no steps that returns ``metrics``: ``return (yield from no_steps())``."""
    return dict(metrics or {})
    yield  # pragma: no cover  (makes this a generator)


class Experiment(ABC):
    """An algorithm built from an :class:`ExperimentConfig` on a backend, trained epoch by
    epoch, deployed and evaluated; its digital state checkpoints through ``state_dict`` and
    ``load_state``. See the module docstring for the order of calls and the rules."""

    name: ClassVar[str] = ""
    """The ``algorithm:`` value of an experiment file."""
    model_config: ClassVar[type]
    train_config: ClassVar[type[TrainConfig]] = TrainConfig
    deploy_config: ClassVar[type]
    headline: ClassVar[str] = "accuracy"
    """The metric (of ``evaluate``) a run summary leads with."""
    description: ClassVar[str] = ""

    def __init__(self, config: ExperimentConfig, data: Any, backend: Backend):
        self.config = config
        self.data = data
        self.backend = backend

    # -- configuration ------------------------------------------------------------------
    @classmethod
    def configure(
        cls,
        model: Mapping[str, Any] | None,
        train: Mapping[str, Any] | None,
        deploy: Mapping[str, Any] | None,
        *,
        source: str | None = None,
        dataset: Mapping[str, Any] | None = None,
    ) -> ExperimentConfig:
        """The typed sections from an experiment file's mappings (and its ``dataset:``
        spec, kept as given); unknown keys, wrong types and values refused by a
        ``__post_init__`` raise ConfigError naming ``source`` and ``model.<key>`` /
        ``train.<key>`` / ``deploy.<key>``."""
        return ExperimentConfig(
            model=from_mapping(cls.model_config, model, source=source, prefix="model"),
            train=from_mapping(cls.train_config, train, source=source, prefix="train"),
            deploy=from_mapping(cls.deploy_config, deploy, source=source, prefix="deploy"),
            dataset=dict(dataset or {}),
        )

    # -- the phases ---------------------------------------------------------------------
    def preflight(self) -> None:
        """Check, without touching the device, that every request this experiment will
        make fits ``self.backend`` (tiles/rows/cols needed, pulse amplitudes and widths
        against ``backend.limits``): ConfigError / LimitError naming the config key. Runs
        on a dry backend built from the configuration files before any instrument is
        contacted. Default: nothing to check."""

    def prepare(self) -> Work:
        """One-off device work before training (forming, initial programming); called on
        a fresh run only, never on resume. Default: none."""
        return (yield from no_steps())

    @abstractmethod
    def train_epoch(self, epoch: int) -> Work:
        """Train one epoch (0-based ``epoch``); yield a Step per step, return the epoch's
        metrics (``loss``, ``accuracy`` ...). Digital for algorithms that train in software
        and deploy; on ``self.backend`` for those whose paper trains in the loop."""

    @abstractmethod
    def deploy(self) -> Work:
        """Map, program (program-and-verify per ``config.deploy``) and read settings: put
        the trained model on ``self.backend``; return deployment metrics (verify
        residuals, pulses, cells programmed). An in-the-loop algorithm whose weights are
        already on the device returns ``no_steps()``."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Test metrics of the deployed model read from ``self.backend``."""

    @abstractmethod
    def evaluate_float(self) -> dict[str, float]:
        """Test metrics of the same trained model in float (no device): the reference the
        backend result is compared with."""

    # -- checkpoints --------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Every piece of digital state that training changes (tensors and plain data,
        ``torch.save``-able), including the states of the algorithm's own generators."""

    @abstractmethod
    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` into a freshly built experiment (resume)."""

    def snapshot_tiles(self) -> list[int] | None:
        """The tiles whose conductances a checkpoint snapshot reads (None: all tiles)."""
        return None


def check_program_settings(deploy: Any) -> None:
    """Validate the programming settings a ``deploy:`` config has, naming the key: the
    verify band ``tolerance_s`` (S, None for the adapter's default), ``max_iterations``,
    and where present ``v_read`` (V), ``g_window_s`` ([g_lo, g_hi] S) and the
    ``set_pulse`` / ``reset_pulse`` pairs (amplitude V, width s)."""
    tol = deploy.tolerance_s
    require(tol is None or tol > 0, "tolerance_s", f"must be > 0 S or null, got {tol}")
    n = deploy.max_iterations
    require(n >= 1, "max_iterations", f"must be >= 1, got {n}")
    v = getattr(deploy, "v_read", None)
    require(v is None or v > 0, "v_read", f"must be > 0 V, got {v}")
    g = getattr(deploy, "g_window_s", None)
    require(
        g is None or 0 <= g[0] < g[1],
        "g_window_s",
        f"need [g_lo, g_hi] with 0 <= g_lo < g_hi S, got {g}",
    )
    for key in ("set_pulse", "reset_pulse"):
        pulse = getattr(deploy, key, None)
        require(
            pulse is None or len(pulse) == 2, key, f"expected [amplitude V, width s], got {pulse}"
        )


def check_pulse_request(
    backend: Backend,
    key: str,
    amplitude_v: float,
    width_s: float,
    count: int = 1,
    compliance_a: float | None = None,
) -> None:
    """For ``preflight``: refuse a pulse request beyond ``backend.limits`` before it is
    sent, with a LimitError whose ``param`` is the config ``key`` (``deploy.set_v``)."""
    backend.limits.check_pulse_spec(
        amplitude_v, width_s, count, compliance_a=compliance_a, param=key
    )


# -- registry ---------------------------------------------------------------------------

BUILTIN_ALGORITHMS = ("mars", "cmru", "eprop", "eqprop", "pruning")
"""Algorithms whose ``memhil.algorithms.<name>.experiment`` module registers an
Experiment at import."""

E = TypeVar("E", bound=type[Experiment])

_REGISTRY: dict[str, type[Experiment]] = {}


def register_algorithm(cls: E) -> E:
    """Class decorator: make ``cls`` the experiment of ``algorithm: cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__}.name is empty: an algorithm needs a name")
    for attr in ("model_config", "deploy_config"):
        if not hasattr(cls, attr):
            raise ValueError(f"{cls.__qualname__} declares no {attr} dataclass")
    _REGISTRY[cls.name] = cls
    return cls


def _builtin() -> None:
    for name in BUILTIN_ALGORITHMS:
        if name in _REGISTRY:
            continue
        module = f"memhil.algorithms.{name}.experiment"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # an algorithm package without an experiment module offers no experiment;
            # any other missing import is a real error and is raised
            if exc.name != module:
                raise


def algorithm_names() -> list[str]:
    """The names an experiment file's ``algorithm:`` accepts."""
    _builtin()
    return sorted(_REGISTRY)


def get_algorithm(name: str, *, source: str | None = None) -> type[Experiment]:
    """The Experiment class of ``algorithm: name``; ConfigError naming ``source`` and the
    key ``algorithm`` when unknown."""
    _builtin()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(
            "algorithm", f"unknown algorithm {name!r} (known: {algorithm_names()})", source
        )
    return _REGISTRY[name]
