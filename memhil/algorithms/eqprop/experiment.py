"""``algorithm: eqprop``: equilibrium propagation on a resistive network whose
conductances live on the backend's devices, updated in the loop (Scellier & Bengio,
Front. Comput. Neurosci. 2017; Kendall et al., arXiv 2006.01981, 2020; Oh et al., EBANA,
2023; ``docs/algorithms.md#eqprop``).

``prepare`` programs random initial conductances (a few read-and-pulse rounds). Each
training step reads the array, relaxes the network freely and nudged, and turns the
clipped SGD step on the conductances into one ``pulse`` call through the nominal device
model's inverse: the device decides what change happens, and the next step reads it back.
The weights are on the devices throughout, so ``deploy`` has nothing to program. The float
reference evaluates the conductances the rule asked for (last read + requested change),
what an ideal device would hold. ``deploy.updates: exact`` trains the reference itself:
the same clipped steps held as numbers in the same window (``IdealConductances``), no
pulse sent, the ideal-device row of a device study (Oh et al. 2023).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from memhil.algorithms.eqprop.devices import (
    DeviceConductances,
    local_slope,
    usable_range,
)
from memhil.algorithms.eqprop.network import NetworkSpec, ResistiveNetwork
from memhil.algorithms.eqprop.training import (
    EqPropConfig,
    EqPropTrainer,
    IdealConductances,
    init_conductances,
    sgd_step,
)
from memhil.algorithms.experiment import (
    Experiment,
    ExperimentConfig,
    Step,
    TrainConfig,
    Work,
    check_pulse_request,
    no_steps,
    register_algorithm,
)
from memhil.algorithms.metrics import prediction_summary
from memhil.backends.base import Backend
from memhil.core.config import require
from memhil.core.errors import ConfigError

__all__ = ["EqPropDeploy", "EqPropExperiment", "EqPropModel", "EqPropTrain"]


@dataclass(frozen=True)
class EqPropModel:
    """The network (``NetworkSpec``) and the conductance window the rule uses."""

    sizes: tuple[int, ...] = (2, 2, 3)
    """(features, hidden..., classes); layer l takes (inputs + bias pair) rows and its
    outputs' columns (``NetworkSpec.layer_shapes``)."""
    input_scale_v: float = 0.3
    gain: float = 8.0
    target_v: float = 0.2
    device: str | None = None
    """The nominal device model the update inverse uses (None: the backend's)."""
    g_min_s: float | None = None
    """Lower end of the conductance window (S; None: the device model's)."""
    g_max_s: float | None = None
    """Upper end (S; None: the device model's). Below the compliance-limited SET level."""
    init_high: float = 0.5
    """Initial conductances uniform in [0, init_high] of the window."""

    def spec(self) -> NetworkSpec:
        return NetworkSpec(
            tuple(self.sizes),
            input_scale_v=self.input_scale_v,
            gain=self.gain,
            target_v=self.target_v,
        )

    def __post_init__(self) -> None:
        require(0 < self.init_high <= 1, "init_high", f"must lie in (0, 1], got {self.init_high}")
        self.spec()  # NetworkSpec's own checks, named model.<key>
        if self.g_min_s is not None and self.g_max_s is not None:
            require(
                0 < self.g_min_s < self.g_max_s,
                "g_min_s",
                f"need 0 < g_min_s ({self.g_min_s}) < g_max_s ({self.g_max_s}) S",
            )


@dataclass(frozen=True)
class EqPropTrain(TrainConfig):
    """The learning rule (``EqPropConfig``): nudge, learning rate, batch, step cap."""

    beta_rel: float = 0.05
    lr: float = 5.0
    batch_size: int = 16
    max_rel_change: float = 0.5
    centered: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        EqPropConfig(self.beta_rel, self.centered, self.lr, self.batch_size, self.max_rel_change)


@dataclass(frozen=True)
class EqPropDeploy:
    """How a requested change becomes pulses (the inverse, its SET/RESET pulses) and how
    the initial conductances are programmed."""

    set_v: float | None = None
    """SET amplitude (V); None: the backend's nominal SET pulse (``capabilities.set_pulse``,
    a station's ``chip.set_pulse``), else the device model's (with its width)."""
    set_width_s: float | None = None
    reset_v: float | None = None
    reset_width_s: float | None = None
    mode: Literal["width", "count"] = "width"
    """Dose by pulse width, or by the count of fixed pulses."""
    inverse: Literal["local", "trajectory"] = "local"
    program_rounds: int = 6
    """Read-and-pulse rounds of the initial programming."""
    v_read_v: float = 0.2
    """Read voltage of the inverse's tabulation (V)."""
    updates: Literal["devices", "exact"] = "devices"
    """``devices``: every step pulses the devices and reads them back; ``exact``: the
    steps are held as numbers (an ideal linear device, the reference row), nothing is
    pulsed."""

    def __post_init__(self) -> None:
        for a, b in (("set_v", "set_width_s"), ("reset_v", "reset_width_s")):
            require(
                (getattr(self, a) is None) == (getattr(self, b) is None),
                a,
                f"give {a} and {b} together (or neither: the nominal pulse)",
            )
        require(self.program_rounds >= 1, "program_rounds", "must be >= 1")


@register_algorithm
class EqPropExperiment(Experiment):
    name = "eqprop"
    description = "equilibrium propagation with conductances on the devices"
    model_config = EqPropModel
    train_config = EqPropTrain
    deploy_config = EqPropDeploy
    headline = "accuracy"

    def __init__(self, config: ExperimentConfig, data: Any, backend: Backend):
        super().__init__(config, data, backend)
        from memhil.datasets import ClassificationData
        from memhil.devices import build_device_model

        m: EqPropModel = config.model
        t: EqPropTrain = config.train
        d: EqPropDeploy = config.deploy
        if not isinstance(data, ClassificationData) or data.train.x.dim() != 2:
            raise ConfigError("dataset", "eqprop takes tabular classification data (N, D)")
        if m.sizes[0] != data.n_features or m.sizes[-1] != data.n_classes:
            raise ConfigError(
                "model.sizes",
                f"{list(m.sizes)} must start with the dataset's {data.n_features} features "
                f"and end with its {data.n_classes} classes",
            )
        self.spec = m.spec()
        # The backend's device model with its configured parameters (R_off, x0, ...), not
        # the defaults of the model's name: the inverse and the window follow the cells.
        device: Any = m.device or backend.device_model() or backend.capabilities.device_model
        try:
            model = build_device_model(device)
        except (ConfigError, ValueError, KeyError) as exc:
            raise ConfigError("model.device", f"{device!r}: {exc}") from None
        device = model
        lo, hi = usable_range(model)
        self.g_min_s = lo if m.g_min_s is None else m.g_min_s
        self.g_max_s = hi if m.g_max_s is None else m.g_max_s
        pulses = []
        # The backend's nominal pulses (a station's chip.set_pulse: what its bench can send,
        # e.g. >= 1 us) before the model's (VTEAM's published 10 ns); equal on the simulator.
        caps = backend.capabilities
        set_nominal, reset_nominal = model.nominal_set_pulse, model.nominal_reset_pulse
        if m.device is None:  # the backend's own devices
            set_nominal = caps.set_pulse or set_nominal
            reset_nominal = caps.reset_pulse or reset_nominal
        for v, w, nominal, key in (
            (d.set_v, d.set_width_s, set_nominal, "deploy.set_v"),
            (d.reset_v, d.reset_width_s, reset_nominal, "deploy.reset_v"),
        ):
            if v is None:
                if nominal is None:
                    raise ConfigError(key, f"device model {model.name!r} has no nominal pulse")
                v, w = nominal
            pulses.append((float(v), float(w or 0.0), key))
        self.pulses = pulses
        if not pulses[0][0] > 0 > pulses[1][0]:
            raise ConfigError("deploy.set_v", "need a positive SET and a negative RESET amplitude")
        slopes = [
            local_slope(device, v, w, d.mode, v_read=d.v_read_v, seed=t.seed) for v, w, _ in pulses
        ]
        try:
            self.store = DeviceConductances(
                backend,
                self.spec.layer_shapes(),
                slopes[0],
                slopes[1],
                self.g_min_s,
                self.g_max_s,
                seed=t.seed,
                inverse=d.inverse,
            )
        except ValueError as exc:  # the layers do not fit the chip
            raise ConfigError("model.sizes", str(exc)) from None
        self.net = ResistiveNetwork(self.spec, self.g_max_s)
        self.rule = EqPropConfig(t.beta_rel, t.centered, t.lr, t.batch_size, t.max_rel_change)
        self.trainer = EqPropTrainer(self.net, self.store, self.rule, seed=t.seed)
        self.shadow: list[torch.Tensor] | None = None  # what an ideal device would hold
        self.exact: IdealConductances | None = None  # deploy.updates: exact

    def preflight(self) -> None:
        """The SET and RESET amplitudes at the shortest width the inverse sends (width
        mode: from the backend's minimum up to its maximum; count mode: the given width)."""
        lim = self.backend.limits
        width_mode = self.config.deploy.mode == "width"
        for v, w, key in self.pulses:
            check_pulse_request(self.backend, key, v, lim.width_min_s if width_mode else w)

    def prepare(self) -> Work:
        m: EqPropModel = self.config.model
        t: EqPropTrain = self.config.train
        targets = init_conductances(
            self.spec, self.g_min_s, self.g_max_s, seed=t.seed, high=m.init_high
        )
        if self.config.deploy.updates == "exact":  # the reference: nothing on the devices
            self.exact = IdealConductances(targets, self.g_min_s, self.g_max_s)
            self.shadow = [t.clone() for t in targets]
            yield Step(0, 1)
            return {}
        # DeviceConductances.program, a round at a time for the progress bar
        rounds = self.config.deploy.program_rounds
        for r in range(rounds):
            g = self.store.read()
            self.store.apply([tg - gl for tg, gl in zip(targets, g)], g, inverse="trajectory")
            yield Step(r, rounds)
        g = self.store.read()
        self.store.update_fidelity.clear()
        self.shadow = [t.clone() for t in targets]
        err = torch.cat([(a - b).abs().flatten() for a, b in zip(g, targets)])
        return {"program_error_mean_s": float(err.mean()), "program_error_max_s": float(err.max())}

    def _read(self) -> list[torch.Tensor]:
        """The conductances the rule sees: read from the devices, or the exact reference's."""
        return self.store.read() if self.exact is None else self.exact.read()

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One EqProp update on the devices (``EqPropTrainer.step``), keeping the float
        shadow of what the rule asked for."""
        g = self._read()
        grads, v_free = self.net.eqprop_gradient(g, x, y, self.rule.beta_rel, self.rule.centered)
        delta = sgd_step(
            grads, g, self.rule.lr, self.g_min_s, self.g_max_s, self.rule.max_rel_change
        )
        if self.exact is None:
            self.store.apply(delta, g)
        else:
            self.exact.apply(delta)
        self.shadow = [gi + di for gi, di in zip(g, delta)]
        return float(self.net.loss(v_free, y).mean())

    def train_epoch(self, epoch: int) -> Work:
        x, y = self.data.train.x.double(), self.data.train.y
        order = torch.randperm(x.shape[0], generator=self.trainer._gen)
        bs = self.rule.batch_size
        n = (x.shape[0] + bs - 1) // bs
        total = 0.0
        for i in range(n):
            idx = order[i * bs : (i + 1) * bs]
            loss = self._step(x[idx], y[idx])
            total += loss * idx.numel()
            yield Step(i, n, {"loss_v2": loss})
        fid = self.store.update_fidelity
        out = {"loss_v2": total / x.shape[0]}
        if fid:
            out["update_cosine"] = statistics.fmean(c for c, _ in fid[-n:])
        return out

    def deploy(self) -> Work:
        """Nothing to program: the conductances are on the devices since ``prepare``."""
        return (yield from no_steps())

    def _scores(self, g: Sequence[torch.Tensor]) -> dict[str, float]:
        x, y = self.data.test.x.double(), self.data.test.y
        v = self.net.solve(list(g), x)
        pred = self.net.outputs(v).argmax(1)
        acc = float((pred == y).double().mean())
        collapse = prediction_summary(pred, self.data.n_classes, y).metrics()
        return {"accuracy": acc, "loss_v2": float(self.net.loss(v, y).mean()), **collapse}

    def evaluate(self) -> dict[str, float]:
        """Test accuracy of the network on the conductances read from the backend."""
        return self._scores(self._read())

    def evaluate_float(self) -> dict[str, float]:
        if self.shadow is None:
            raise RuntimeError("evaluate_float before prepare or load_state")
        return self._scores(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {
            "trainer_gen": self.trainer._gen.get_state(),
            "store_gen": self.store._gen.get_state(),
            "shadow": None if self.shadow is None else [g.clone() for g in self.shadow],
            "fidelity": list(self.store.update_fidelity),
            "pulses": self.store.pulses,
            "pulse_calls": self.store.pulse_calls,
            "last_read": self.store._last_read,
            "pending": self.store._pending,
            "exact": None if self.exact is None else self.exact.read(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.trainer._gen.set_state(state["trainer_gen"])
        self.store._gen.set_state(state["store_gen"])
        self.shadow = None if state["shadow"] is None else [g.clone() for g in state["shadow"]]
        self.store.update_fidelity = list(state["fidelity"])
        self.store.pulses = int(state["pulses"])
        self.store.pulse_calls = int(state["pulse_calls"])
        self.store._last_read = state["last_read"]
        self.store._pending = state["pending"]
        if state.get("exact") is not None:
            self.exact = IdealConductances(state["exact"], self.g_min_s, self.g_max_s)
