"""e-prop as an experiment file (``algorithm: eprop``): a LIF network whose three weight
matrices sit on device pairs of the backend learns online, its e-prop gradients written
through an update scheme (mixed precision: accumulate, then transfer whole SET pulses;
Nandakumar et al., Front. Neurosci. 2020) after every sequence, so training happens with
the devices in the loop on whatever backend the file names (``docs/algorithms.md#e-prop``).

``prepare`` RESETs the network's devices, measures their mean SET response on them and
writes the initial weights open loop; there is nothing left to deploy after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor

from memhil.algorithms.deployment import check_deploy_settings
from memhil.algorithms.eprop.lif import LIFParams, readout, run_lif
from memhil.algorithms.eprop.training import (
    EpropConfig,
    EpropNetwork,
    place_matrices,
    task_loss,
)
from memhil.algorithms.experiment import (
    Experiment,
    ExperimentConfig,
    Step,
    TrainConfig,
    Work,
    no_steps,
    register_algorithm,
)
from memhil.analog.updates.schemes import available_update_schemes, build_update_scheme
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError
from memhil.datasets.containers import ClassificationData
from memhil.datasets.spike_tasks import SpikePatternTask

_NON_NEGATIVE = (
    "lr_in",
    "lr_rec",
    "lr_out",
    "lr_bias",
    "reg",
    "f0_hz",
    "grad_clip",
    "init_std_in",
    "init_std_rec",
    "init_std_out",
    "wait_s",
)


@dataclass(frozen=True)
class EpropModel:
    """``model:`` of an e-prop experiment: network size, neuron constants, learning rule
    and update scheme (``memhil.algorithms.eprop.training.EpropConfig``, whose docstring
    gives the defaults' sources); input and output sizes come from the dataset."""

    n_rec: int = 3
    """Recurrent LIF neurons."""
    scheme: str = "mixed_precision"
    """Update scheme writing the gradients: ideal (float), sign, stochastic, multi,
    mixed_precision."""
    scheme_params: dict[str, Any] = field(default_factory=dict)
    """Options of the scheme (its ``Params`` fields)."""
    n_devices: int = 1
    """Device pairs per weight (``multi`` needs > 1)."""
    response_pulses: int = 20
    """SET pulses of the response measurement whose mean step is the schemes' quantum."""
    w_max: float = 1.0
    """Weight encoded by the whole conductance window (w = w_max (G+ - G-) / window): below
    1, one SET step and its noise are smaller in weight units and weights clip at ±w_max."""
    dt_s: float = 1e-3
    """Simulation time step (s)."""
    tau_rec_s: float = 30e-3
    """Membrane time constant (s)."""
    tau_out_s: float = 30e-3
    """Readout time constant (s)."""
    thr: float = 1.0
    """Firing threshold (weight units)."""
    gamma_pd: float = 0.3
    """Height of the pseudo-derivative."""
    lr_in: float = 1e-4
    """Learning rate of W_in."""
    lr_rec: float = 3e-5
    """Learning rate of W_rec."""
    lr_out: float = 2e-5
    """Learning rate of W_out."""
    lr_bias: float = 3e-5
    """Learning rate of the (digital) output bias."""
    reg: float = 30.0
    """Firing-rate regulariser."""
    f0_hz: float = 12.0
    """Target firing rate (Hz)."""
    grad_clip: float = 100.0
    """Clamp of the per-sequence gradient."""
    feedback: Literal["random", "symmetric"] = "random"
    """Learning-signal weights: fixed random, or the output weights."""
    loss: Literal["mse", "ce"] = "mse"
    """Regression of the target trace, or classification from the last ``ce_window`` steps."""
    ce_window: int = 20
    """Steps the classification reads."""
    init_std_in: float = 0.1
    """Std of the initial W_in."""
    init_std_rec: float = 0.03
    """Std of the initial W_rec."""
    init_std_out: float = 0.05
    """Std of the initial W_out."""
    wait_s: float = 38.6
    """Device time between updates (s): PCM drift acts in it."""

    def __post_init__(self) -> None:
        for key in ("n_rec", "n_devices", "response_pulses", "ce_window"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("dt_s", "tau_rec_s", "tau_out_s", "thr", "gamma_pd", "w_max"):
            require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        for key in _NON_NEGATIVE:
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        known = available_update_schemes()
        require(self.scheme in known, "scheme", f"{self.scheme!r} is not one of {known}")
        params = {k: v for k, v in self.scheme_params.items() if k != "grad_threshold"}
        try:  # the scheme's own Params check its options now, not at the first update
            build_update_scheme(self.scheme, **params)
        except ConfigError as exc:
            raise ConfigError(f"scheme_params.{exc.key.split('.', 1)[-1]}", exc.reason) from None
        require(
            "grad_threshold" not in self.scheme_params or self.scheme == "sign",
            "scheme_params.grad_threshold",
            f"applies to the sign scheme, not {self.scheme!r}",
        )

    def network_config(self, n_in: int, n_out: int, seed: int) -> EpropConfig:
        """The ``EpropConfig`` of a network with ``n_in`` inputs and ``n_out`` outputs."""
        lif = LIFParams(self.dt_s, self.tau_rec_s, self.tau_out_s, self.thr, self.gamma_pd)
        rates = {k: getattr(self, k) for k in _NON_NEGATIVE}
        return EpropConfig(
            n_in=n_in,
            n_rec=self.n_rec,
            n_out=n_out,
            lif=lif,
            feedback=self.feedback,
            loss=self.loss,
            ce_window=self.ce_window,
            seed=seed,
            **rates,
        )


@dataclass(frozen=True)
class EpropTrain(TrainConfig):
    """``train:`` of an e-prop experiment: one device update per mini-batch."""

    batch_size: int = 1
    """Sequences per update (srnn-pcm: 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class EpropDeploy:
    """``deploy:`` of an e-prop experiment: how the weights sit on the devices (they are
    trained there, so nothing is programmed after training)."""

    g_window_s: tuple[float, float] | None = None
    """Conductance window (S) of one weight unit; None: the backend's range."""
    set_pulse: tuple[float, float] | None = None
    """SET pulse (amplitude V, width s) of the updates; None: the backend's nominal one."""
    reset_pulse: tuple[float, float] | None = None
    """RESET pulse (amplitude V, width s); None: the backend's nominal one."""

    def __post_init__(self) -> None:
        if self.g_window_s is not None:
            require(
                len(self.g_window_s) == 2 and 0 <= self.g_window_s[0] < self.g_window_s[1],
                "g_window_s",
                f"need [g_lo, g_hi] with 0 <= g_lo < g_hi S, got {list(self.g_window_s)}",
            )


@register_algorithm
class EpropExperiment(Experiment):
    """e-prop on device pairs, trained online with the devices in the loop."""

    name = "eprop"
    model_config = EpropModel
    train_config = EpropTrain
    deploy_config = EpropDeploy
    headline = "loss"
    description = "e-prop spiking RNN trained online on the devices"

    def __init__(self, config: ExperimentConfig, data: Any, backend: Backend):
        super().__init__(config, data, backend)
        m: EpropModel = config.model
        if isinstance(data, SpikePatternTask):
            if m.loss != "mse":
                raise ConfigError("model.loss", f"{data.name} is a regression task: use 'mse'")
            n_out = int(data.train.y.shape[-1])
        elif isinstance(data, ClassificationData) and data.train.x.dim() == 3:
            if m.loss != "ce":
                raise ConfigError("model.loss", f"{data.name} is a classification task: use 'ce'")
            n_out = data.n_classes
        else:
            raise ConfigError(
                "dataset",
                f"needs spike sequences (a SpikePatternTask or sequence classification set), "
                f"got {type(data).__name__}",
            )
        if len(data.train) == 0 or len(data.test) == 0:
            sizes = f"{len(data.train)} training and {len(data.test)} test sequences"
            raise ConfigError("dataset", f"needs both splits non-empty, got {sizes}")
        self.train_split, self.test_split = data.train, data.test
        self.net_config = m.network_config(int(data.train.x.shape[-1]), n_out, config.train.seed)
        self.net: EpropNetwork | None = None

    # -- helpers --------------------------------------------------------------------------
    def _build(self, state: Mapping[str, Any] | None = None) -> EpropNetwork:
        m: EpropModel = self.config.model
        d: EpropDeploy = self.config.deploy
        return EpropNetwork(
            self.backend,
            self.net_config,
            m.scheme,
            dict(m.scheme_params),
            n_devices=m.n_devices,
            g_window_s=d.g_window_s,
            set_pulse=d.set_pulse,
            reset_pulse=d.reset_pulse,
            response_pulses=m.response_pulses,
            w_max=m.w_max,
            response=None if state is None else EpropNetwork.response_from_state(state),
        )

    def _network(self) -> EpropNetwork:
        if self.net is None:
            raise RuntimeError("the network is not on the devices yet: run prepare() first")
        return self.net

    def _metrics(self, y: Tensor, target: Tensor) -> dict[str, float]:
        c = self.net_config
        n = y.shape[0] * c.ce_window if c.loss == "ce" else y.numel() / 2.0
        out = {"loss": float(task_loss(y, target, c.loss, c.ce_window)) / n}
        if c.loss == "ce":
            pred = self._network().predict(y)
            out["accuracy"] = float((pred == target).double().mean())
        return out

    # -- phases ---------------------------------------------------------------------------
    def preflight(self) -> None:
        c, m = self.net_config, cast(EpropModel, self.config.model)
        d: EpropDeploy = self.config.deploy
        window = d.g_window_s or self.backend.capabilities.conductance_range_s
        try:
            place_matrices(
                self.backend.shape, c.n_in, c.n_rec, c.n_out, m.n_devices, window, m.w_max
            )
        except ValueError as exc:
            raise ConfigError("model.n_rec", f"the network does not fit the array: {exc}") from None
        check_deploy_settings(self.backend, d.set_pulse, d.reset_pulse, g_window_s=d.g_window_s)

    def prepare(self) -> Work:
        yield Step(0, 1)
        self.net = self._build()
        return {"set_step_s": self.net.response.granularity_s}

    def train_epoch(self, epoch: int) -> Work:
        net = self._network()
        b = cast(EpropTrain, self.config.train).batch_size
        x, y = self.train_split.x, self.train_split.y
        n = math.ceil(len(x) / b)
        losses = []
        for i in range(n):
            loss = net.train_step(x[i * b : (i + 1) * b], y[i * b : (i + 1) * b])
            losses.append(loss)
            yield Step(i, n, {"loss": loss})
        out = {"train_loss": sum(losses) / len(losses), "updates": float(net.updates)}
        _, y_test = net.forward(self.test_split.x)
        out.update({f"test_{k}": v for k, v in self._metrics(y_test, self.test_split.y).items()})
        return out

    def deploy(self) -> Work:
        return (yield from no_steps())

    def evaluate(self) -> dict[str, float]:
        """The test split's metrics, and ``train_*`` on the training split: for a pattern
        generator (each target its own random trace) the trained patterns are the task."""
        return self._evaluate(lambda x: self._network().forward(x)[1])

    def _evaluate(self, run: Callable[[Tensor], Tensor]) -> dict[str, float]:
        out = self._metrics(run(self.test_split.x), self.test_split.y)
        train = self._metrics(run(self.train_split.x), self.train_split.y)
        out.update({f"train_{k}": v for k, v in train.items()})
        return out

    @torch.no_grad()
    def evaluate_float(self) -> dict[str, float]:
        net = self._network()
        w = {k: net.read_weight(k).float() for k in ("w_in", "w_rec", "w_out")}
        lif = self.net_config.lif

        def run(x: Tensor) -> Tensor:
            record = run_lif(x.float() @ w["w_in"].t(), lambda z: z @ w["w_rec"].t(), lif)
            return readout(record.z @ w["w_out"].t() + net.bias, lif)

        return self._evaluate(run)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"network": None if self.net is None else self._network().state_dict()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        saved = state["network"]
        if saved is None:
            self.net = None
            return
        self.net = self._build(saved)
        self.net.load_state_dict(saved)
