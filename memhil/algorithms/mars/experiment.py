"""MARS as an experiment file (``algorithm: mars``): reservoir features and the closed-form
ridge readout are computed in float, then the readout (and, with ``deploy.projections``,
every layer's input projection W_in) is programmed onto the backend by program-and-verify
and the classifier is evaluated there as ``mvm`` (``docs/algorithms.md#mars``).

Training is one pass: the reservoir is fixed and random, only the readout is fitted, so
``train.epochs`` is 1. The model's random state comes from ``train.seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor

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
    register_algorithm,
)
from memhil.algorithms.mars.deploy import (
    DeployedMARS,
    deploy_mars_steps,
    place_regions,
    region_size,
)
from memhil.algorithms.mars.layer import MARS, SKIPS, Method, Skip
from memhil.algorithms.mars.readout import LAMBDAS, RidgeClassifier, fit_ridge
from memhil.algorithms.mars.reservoirs import MFDevice, check_decay_range
from memhil.analog.mapping import Layout
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError
from memhil.datasets.containers import Split
from memhil.nn.pooling import Pooling


@dataclass(frozen=True)
class MARSModel:
    """``model:`` of a MARS experiment: the reservoir stack and its readout features
    (``memhil.algorithms.mars.layer.MARS``)."""

    n_units: int = 16
    """Units per layer."""
    depth: int = 1
    """Stacked layers."""
    skip: Skip = "temporal"
    """Subtractive skip between layers: input, temporal, equilibrium or none."""
    dt: float | tuple[float, float] = (0.001, 0.09)
    """Step of the MF unit update (one value, or a log-uniform per-unit range)."""
    input_scale: float = 1.0
    """W_in ~ U(-input_scale, input_scale) in the first layer."""
    bias_scale: float = 0.1
    """b ~ U(-bias_scale, bias_scale)."""
    gamma: float = 1.0
    """Leak factor of the MF state, in (0, 1]."""
    p: float = 5.0
    """Gain of the drive-voltage sigmoid."""
    upper_input_scale: float = 1.0
    """Scale of the upper layers' W_in (times sqrt(3 / n_units))."""
    normalize: bool = True
    """Scale each sample's inter-layer signal to unit RMS."""
    pool: Pooling = "mean_last"
    """Readout features per layer: last state, mean state or both."""
    layers: Literal["all", "last"] = "all"
    """Pool every layer's states, or the last layer's only."""
    method: Method = "scan"
    """Evaluation of the recurrence (scan, chunked, loop: identical states)."""
    validation_fraction: float = 0.2
    """Stratified share of the training split on which the ridge penalty is chosen."""
    lambdas: tuple[float, ...] = LAMBDAS
    """Ridge penalties tried on the validation split (on standardised features)."""

    def __post_init__(self) -> None:
        require(self.n_units >= 1, "n_units", f"must be >= 1, got {self.n_units}")
        require(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
        require(self.skip in SKIPS, "skip", f"must be one of {list(SKIPS)}, got {self.skip!r}")
        require(
            0.0 < self.validation_fraction < 1.0,
            "validation_fraction",
            f"must lie in (0, 1), got {self.validation_fraction}",
        )
        require(len(self.lambdas) >= 1, "lambdas", "needs at least one penalty")
        require(all(v >= 0 for v in self.lambdas), "lambdas", f"must be >= 0, got {self.lambdas}")
        steps = self.dt if isinstance(self.dt, tuple) else (self.dt,)
        require(len(steps) in (1, 2), "dt", f"one step or a [min, max] range, got {self.dt}")
        require(0 < steps[0] <= steps[-1], "dt", f"need 0 < dt_min <= dt_max, got {list(steps)}")
        for dt in steps:
            try:  # the scan is stable only for a decay in (0, 1): refuse at load, not mid-run
                check_decay_range(self.gamma, dt, MFDevice())
            except ValueError as exc:
                raise ConfigError("dt" if "dt" in str(exc) else "gamma", str(exc)) from None

    @property
    def n_features(self) -> int:
        """Length of the pooled feature vector the readout sees."""
        per_layer = self.n_units * (2 if self.pool == "mean_last" else 1)
        return per_layer * (self.depth if self.layers == "all" else 1)


@dataclass(frozen=True)
class MARSTrain(TrainConfig):
    """``train:`` of a MARS experiment: one closed-form pass."""

    batch_size: int = 256
    """Sequences per reservoir evaluation (one progress step each)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.epochs == 1,
            "epochs",
            f"MARS fits its ridge readout in closed form in one pass: must be 1, got {self.epochs}",
        )
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class MARSDeploy:
    """``deploy:`` of a MARS experiment: what goes on the array and how it is programmed
    (``memhil.algorithms.mars.deploy.deploy_mars``)."""

    projections: bool = True
    """Also program every layer's input projection W_in (else only the readout)."""
    program: Literal["verify", "open_loop"] = "verify"
    """Program-and-verify, or open-loop pulse counts from the measured response."""
    tolerance_s: float | None = None
    """Verify band (S); None: 2 % of the programmed conductance window."""
    max_iterations: int = 50
    """Most verify iterations per matrix."""
    layout: Layout = "differential"
    """Differential pairs or one reference column per matrix."""
    n_devices: int = 1
    """Devices per side of a weight."""
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
        require(self.n_devices >= 1, "n_devices", f"must be >= 1, got {self.n_devices}")


@register_algorithm
class MARSExperiment(Experiment):
    """MARS reservoirs with a ridge readout, trained in float, deployed by
    program-and-verify and evaluated on the backend."""

    name = "mars"
    model_config = MARSModel
    train_config = MARSTrain
    deploy_config = MARSDeploy
    headline = "accuracy"
    description = "MARS reservoirs + ridge readout, deployed in memory"

    def __init__(self, config: ExperimentConfig, data: Any, backend: Backend):
        super().__init__(config, data, backend)
        m: MARSModel = config.model
        full = sequence_data(data)
        self.split, self.val = full.with_validation(m.validation_fraction, seed=config.train.seed)
        self.reservoir = MARS(
            full.n_features,
            m.n_units,
            m.depth,
            skip=m.skip,
            input_scale=m.input_scale,
            bias_scale=m.bias_scale,
            gamma=m.gamma,
            p=m.p,
            dt=m.dt,
            upper_input_scale=m.upper_input_scale,
            normalize=m.normalize,
            seed=config.train.seed,
        )
        self.readout: RidgeClassifier | None = None
        self.deployed: DeployedMARS | None = None

    # -- helpers --------------------------------------------------------------------------
    def _features(self, split: Split) -> Tensor:
        m: MARSModel = self.config.model
        return self.reservoir.features(
            split.x, split.lengths, pool=m.pool, layers=m.layers, method=m.method
        )

    def _matrix_sizes(self) -> list[tuple[str, int, int]]:
        """(name, rows, cols) of each region ``deploy_mars`` places, in its order."""
        m: MARSModel = self.config.model
        d: MARSDeploy = self.config.deploy
        mats = []
        if d.projections:
            n_in = self.split.n_features
            mats += [
                (f"w_in[{i}]", n_in if i == 0 else m.n_units, m.n_units) for i in range(m.depth)
            ]
        mats.append(("readout", m.n_features, self.split.n_classes))
        return [
            (name, *region_size(rows, outs, d.layout, d.n_devices)) for name, rows, outs in mats
        ]

    def _require_readout(self) -> RidgeClassifier:
        if self.readout is None:
            raise RuntimeError("the readout is not fitted yet: run train_epoch(0) first")
        return self.readout

    # -- phases ---------------------------------------------------------------------------
    def preflight(self) -> None:
        sizes = self._matrix_sizes()
        try:
            place_regions([(r, c) for _, r, c in sizes], self.backend.shape)
        except ValueError as exc:
            key = "deploy.projections" if self.config.deploy.projections else "model.n_units"
            raise ConfigError(key, f"{exc} (regions {sizes})") from None
        d: MARSDeploy = self.config.deploy
        check_deploy_settings(self.backend, d.set_pulse, d.reset_pulse, d.v_read, d.g_window_s)

    def train_epoch(self, epoch: int) -> Work:
        train = cast(MARSTrain, self.config.train)
        b = train.batch_size
        splits = (self.split.train, self.val)
        total = sum(-(-len(s) // b) for s in splits) + 1
        feats: list[Tensor] = []
        k = 0
        for split in splits:
            parts = []
            for start in range(0, len(split), b):
                parts.append(
                    self._features(split.subset(torch.arange(start, min(start + b, len(split)))))
                )
                yield Step(k, total)
                k += 1
            feats.append(torch.cat(parts))
        m: MARSModel = self.config.model
        self.readout = fit_ridge(
            feats[0],
            self.split.train.y,
            self.split.n_classes,
            val_features=feats[1],
            val_labels=self.val.y,
            lambdas=m.lambdas,
        )
        yield Step(k, total)
        return {
            "train_accuracy": self.readout.accuracy(feats[0], self.split.train.y),
            "val_accuracy": max(self.readout.val_accuracy.values()),
            "ridge_lambda": self.readout.lam,
        }

    def deploy(self) -> Work:
        d: MARSDeploy = self.config.deploy
        m: MARSModel = self.config.model
        layer_kw: dict[str, Any] = {"layout": d.layout, "n_devices": d.n_devices}
        for key in ("g_window_s", "v_read", "set_pulse", "reset_pulse"):
            if getattr(d, key) is not None:
                layer_kw[key] = getattr(d, key)
        steps = deploy_mars_steps(
            self.reservoir,
            self._require_readout(),
            self.backend,
            pool=m.pool,
            layers=m.layers,
            deploy_projections=d.projections,
            method=m.method,
            program=d.program,
            tolerance_s=d.tolerance_s,
            program_kw={"max_iterations": d.max_iterations} if d.program == "verify" else None,
            **layer_kw,
        )
        names = [name for name, _, _ in self._matrix_sizes()]
        while True:
            try:
                name, progress = next(steps)
            except StopIteration as done:
                self.deployed = done.value
                break
            yield deploy_step(names.index(name), len(names), progress, d.max_iterations)
        return deploy_metrics(list(self.deployed.reports.values()))

    def evaluate(self) -> dict[str, float]:
        if self.deployed is None:
            raise RuntimeError("nothing is deployed yet: run deploy() first")
        test = self.split.test
        out = {"accuracy": self.deployed.accuracy(test.x, test.y, test.lengths)}
        if self.config.deploy.projections:
            # float features into the array readout: how much the readout alone loses
            out["readout_accuracy"] = self.deployed.accuracy_from_features(
                self._features(test), test.y
            )
        return out

    def evaluate_float(self) -> dict[str, float]:
        test = self.split.test
        return {"accuracy": self._require_readout().accuracy(self._features(test), test.y)}

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        r = self.readout
        readout = None
        if r is not None:
            readout = {
                "weight": r.weight.clone(),
                "bias": r.bias.clone(),
                "mean": r.mean.clone(),
                "scale": r.scale.clone(),
                "lam": r.lam,
                "val_accuracy": dict(r.val_accuracy),
            }
        return {"reservoir": self.reservoir.state_dict(), "readout": readout}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.reservoir.load_state_dict(state["reservoir"])
        r = state["readout"]
        self.readout = (
            None
            if r is None
            else RidgeClassifier(
                r["weight"].clone(),
                r["bias"].clone(),
                r["mean"].clone(),
                r["scale"].clone(),
                float(r["lam"]),
                dict(r["val_accuracy"]),
            )
        )
        self.deployed = None
