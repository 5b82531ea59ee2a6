"""e-prop on memristive crossbars: online training of a spiking RNN (``docs/algorithms.md#e-prop``).

The network is the LIF layer of ``memhil.algorithms.eprop.lif``. Its three weight matrices
(input, recurrent, output) sit on differential device pairs of any Backend; forward
currents are the backend's ``mvm`` (through ``AnalogWeights`` / the update scheme's
``matvec``), and every weight change goes through one of the shared update schemes of
``memhil.analog.updates.schemes`` (ideal = float e-prop, sign, stochastic, multi,
mixed_precision). One update per sequence; the backend's clock advances ``wait_s``
between updates so PCM drift acts.

e-prop (Bellec et al., Nat. Commun. 2020; Demirağ et al., arXiv 2108.01804, 2021) with the
gradient of E = 1/2 sum_{b,t,k} (y - y*)^2 + reg/2 (B T) sum_j (f_j - f0)^2, f_j the mean
spike count per step of neuron j::

    eps_ji,t   = F_alpha(pre_i)_t                     presynaptic trace (pre = x, or z_{t-1})
    e_ji,t     = psi_j,t eps_ji,t                     eligibility trace
    L_j,t      = sum_k B_kj err_k,t                   learning signal (random or symmetric B)
    grad W_ji  = sum_t L_j,t F_kappa(e_ji)_t + reg (f_j - f0) sum_t e_ji,t
    grad W_out = sum_t err_t F_kappa(z)_t

The sum over t of a filtered trace is evaluated as sum_t (anticausal F_kappa L)_t e_t (the
same number, computed without the (T, N, N_in) trace tensor); ``eligibility_traces`` builds
the explicit traces for checking. The rate regulariser multiplies the unfiltered
eligibility (it is not read out through the leaky output), so its gradient is exact; the
formula of Demirağ et al. filters it too, which for a slowly varying rate
term mostly rescales ``reg`` by ~1/(1 - kappa). Classification (``loss="ce"``) replaces
the squared error by the readout cross-entropy on the last ``ce_window`` steps.
``bptt_gradients`` gives the surrogate-gradient BPTT reference of the same loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from memhil.algorithms.eprop.lif import (
    LIFParams,
    LIFRecord,
    low_pass,
    low_pass_reverse,
    pseudo_derivative,
    readout,
    run_lif,
)
from memhil.analog.mapping import WeightMapping
from memhil.analog.placement import one_per_tile
from memhil.analog.pulse_response import PulseResponse, measure_set_response
from memhil.analog.updates.schemes import SignUpdate, UpdateScheme, build_update_scheme
from memhil.analog.weights import AnalogWeights, PulseSpec, PulseTally
from memhil.backends.base import Backend

LossKind = Literal["mse", "ce"]
MATRICES = ("w_in", "w_rec", "w_out")
# RESET pulses that bring a gradual (bipolar) device to the bottom of its window before and
# after the network's SET-curve calibration
_N_RESET = 80


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class EpropConfig:
    """Network size, neuron constants, learning rates and the device-time cadence.

    Learning rates multiply the per-sequence gradient (a sum over time steps), which is
    clamped to ±``grad_clip`` first (srnn-pcm). ``f0_hz`` is the target rate of the
    regulariser. ``init_std_*`` are the std of the Gaussian initial weights (weight units,
    clipped to ±1) programmed onto the devices. ``wait_s``: device time between updates
    (srnn-pcm's 38.6 s write cadence). ``ce_window``: classification reads the last
    ``ce_window`` steps. Defaults: tuned on float e-prop for the pattern task (thr = 1,
    100 Poisson inputs at 50 Hz: ~25 Hz initial rates); ``reg`` multiplies f - f0 in spikes
    per step, so it is ~1000x srnn-pcm's per-Hz value.
    """

    n_in: int = 100
    n_rec: int = 100
    n_out: int = 1
    lif: LIFParams = field(default_factory=LIFParams)
    lr_in: float = 1e-4
    lr_rec: float = 1e-4
    lr_out: float = 3e-5
    lr_bias: float = 3e-5
    reg: float = 30.0
    f0_hz: float = 12.0
    grad_clip: float = 100.0
    feedback: Literal["random", "symmetric"] = "random"
    loss: LossKind = "mse"
    ce_window: int = 20
    init_std_in: float = 0.1
    init_std_rec: float = 0.03
    init_std_out: float = 0.05
    wait_s: float = 38.6
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_in", "n_rec", "n_out", "ce_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"EpropConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
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
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"EpropConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.feedback not in ("random", "symmetric"):
            raise ValueError(
                f"EpropConfig.feedback must be 'random' or 'symmetric', got {self.feedback!r}"
            )
        if self.loss not in ("mse", "ce"):
            raise ValueError(f"EpropConfig.loss must be 'mse' or 'ce', got {self.loss!r}")


# -- losses ----------------------------------------------------------------------------------
def _ce_mask(y: Tensor, window: int) -> Tensor:
    mask = torch.zeros_like(y[..., :1])
    mask[:, -window:] = 1.0
    return mask


def task_error(y: Tensor, target: Tensor, kind: LossKind = "mse", window: int = 20) -> Tensor:
    """dE/dy (batch, T, K): y - y* for ``mse`` (target (batch, T, K)); softmax(y_t) -
    onehot on the last ``window`` steps for ``ce`` (target: labels (batch,))."""
    if kind == "mse":
        return y - target
    onehot = torch.nn.functional.one_hot(target.long(), y.shape[-1]).to(y.dtype).unsqueeze(1)
    return (torch.softmax(y, -1) - onehot) * _ce_mask(y, window)


def task_loss(y: Tensor, target: Tensor, kind: LossKind = "mse", window: int = 20) -> Tensor:
    """E_task: 1/2 sum (y - y*)^2 for ``mse``; summed cross-entropy over the window for ``ce``."""
    if kind == "mse":
        return 0.5 * ((y - target) ** 2).sum()
    logp = torch.log_softmax(y, -1)
    picked = logp.gather(-1, target.long().view(-1, 1, 1).expand(-1, y.shape[1], 1))
    return -(picked * _ce_mask(y, window)).sum()


def rate_loss(z: Tensor, reg: float, f0_per_step: float) -> Tensor:
    """reg/2 (B T) sum_j (f_j - f0)^2, f_j the mean spikes per step of neuron j."""
    batch, steps = z.shape[:2]
    f = z.mean((0, 1))
    return 0.5 * reg * batch * steps * ((f - f0_per_step) ** 2).sum()


# -- the learning rule ------------------------------------------------------------------------
@dataclass
class EpropGradients:
    """Per-sequence gradients of the loss: (out, in) matrices and the output bias."""

    w_in: Tensor
    w_rec: Tensor
    w_out: Tensor
    bias: Tensor

    def clamp(self, limit: float) -> EpropGradients:
        return EpropGradients(
            *(g.clamp(-limit, limit) for g in (self.w_in, self.w_rec, self.w_out, self.bias))
        )

    def as_dict(self) -> dict[str, Tensor]:
        return {"w_in": self.w_in, "w_rec": self.w_rec, "w_out": self.w_out, "bias": self.bias}


def eprop_gradients(
    x: Tensor,
    record: LIFRecord,
    err: Tensor,
    feedback: Tensor,
    params: LIFParams,
    reg: float = 0.0,
    f0_hz: float = 0.0,
) -> EpropGradients:
    """e-prop gradients of one batch of sequences.

    ``x`` (batch, T, N_in) input spikes, ``record`` the forward pass, ``err`` = dE/dy
    (batch, T, K), ``feedback`` B (K, N) the learning-signal weights (W_out for symmetric
    e-prop). Vectorized over batch, time and synapses: two scans and one contraction per
    matrix. The recurrent diagonal is zero (no self-connections).
    """
    psi = pseudo_derivative(record.v, params)
    f0 = f0_hz * params.dt_s
    rate_term = reg * (record.z.mean((0, 1)) - f0)
    l_bar = low_pass_reverse(err @ feedback, params.kappa) + rate_term
    h = l_bar * psi  # (B, T, N): learning signal times pseudo-derivative
    g_in = torch.einsum("btj,bti->ji", h, low_pass(x.to(h.dtype), params.alpha))
    g_rec = torch.einsum("btj,bti->ji", h, low_pass(record.z_prev, params.alpha))
    g_rec.fill_diagonal_(0.0)
    g_out = torch.einsum("btk,btj->kj", err, low_pass(record.z, params.kappa))
    g_bias = (err * low_pass(torch.ones_like(err[..., :1]), params.kappa)).sum((0, 1))
    return EpropGradients(g_in, g_rec, g_out, g_bias)


def eligibility_traces(pre: Tensor, v: Tensor, params: LIFParams) -> tuple[Tensor, Tensor]:
    """Explicit eligibility traces (batch, T, N, N_pre): e_ji,t = psi_j,t F_alpha(pre_i)_t
    and its readout-filtered version F_kappa(e)_t. Memory grows as T N N_pre: for checks
    and small networks; training uses the factorized form of ``eprop_gradients``."""
    e = pseudo_derivative(v, params).unsqueeze(-1) * low_pass(pre, params.alpha).unsqueeze(-2)
    return e, low_pass(e, params.kappa, dim=1)


def eprop_gradient_from_traces(
    e: Tensor,
    e_filtered: Tensor,
    err: Tensor,
    feedback: Tensor,
    z: Tensor,
    params: LIFParams,
    reg: float = 0.0,
    f0_hz: float = 0.0,
) -> Tensor:
    """grad W_ji = sum_t L_j,t F_kappa(e_ji)_t + reg (f_j - f0) sum_t e_ji,t, read straight
    off explicit traces (the textbook form of the rule)."""
    learning = err @ feedback
    rate_term = reg * (z.mean((0, 1)) - f0_hz * params.dt_s)
    return torch.einsum("btj,btji->ji", learning, e_filtered) + rate_term.unsqueeze(-1) * e.sum(
        (0, 1)
    )


def bptt_gradients(
    x: Tensor,
    target: Tensor,
    w_in: Tensor,
    w_rec: Tensor,
    w_out: Tensor,
    bias: Tensor,
    params: LIFParams,
    *,
    reg: float = 0.0,
    f0_hz: float = 0.0,
    loss: LossKind = "mse",
    ce_window: int = 20,
    reset_grad: bool = False,
) -> tuple[EpropGradients, Tensor]:
    """BPTT of the same loss through the time loop (pseudo-derivative as the surrogate);
    returns the gradients and the loss. ``reset_grad`` lets the gradient flow through the
    reset term as well (e-prop always drops it)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (w_in, w_rec, w_out, bias)]
    a_in, a_rec, a_out, a_b = leaves
    off_diag = 1.0 - torch.eye(a_rec.shape[0], dtype=a_rec.dtype)
    w_rec_eff = a_rec * off_diag
    with torch.enable_grad():
        record = run_lif(
            x.to(a_in.dtype) @ a_in.t(), lambda z: z @ w_rec_eff.t(), params, reset_grad=reset_grad
        )
        y = readout(record.z @ a_out.t() + a_b, params)
        total = task_loss(y, target, loss, ce_window) + rate_loss(
            record.z, reg, f0_hz * params.dt_s
        )
        grads = torch.autograd.grad(total, leaves)
    return EpropGradients(*grads), total.detach()


# -- placement on a backend ---------------------------------------------------------------------
def place_matrices(
    shape: tuple[int, int, int],
    n_in: int,
    n_rec: int,
    n_out: int,
    n_devices: int,
    g_window_s: tuple[float, float],
    w_max: float = 1.0,
) -> dict[str, WeightMapping]:
    """Mappings of W_in (n_rec, n_in), W_rec (n_rec, n_rec), W_out (n_out, n_rec), placed by
    ``memhil.analog.placement.one_per_tile``: with three or more tiles each matrix gets its
    own (a per-step recurrent read then touches only the recurrent tile), otherwise the
    three sit side by side along the columns of tile 0 (one chip of the mock lab or a
    bench). Raises ValueError naming the sizes when they do not fit.
    """
    g_lo, g_hi = g_window_s
    kw: dict[str, Any] = {"g_lo_s": g_lo, "g_hi_s": g_hi, "w_max": w_max, "n_devices": n_devices}
    sizes = {"w_in": (n_in, n_rec), "w_rec": (n_rec, n_rec), "w_out": (n_rec, n_out)}
    regions = one_per_tile(
        [(rows, 2 * outs * n_devices) for rows, outs in sizes.values()], shape, names=list(sizes)
    )
    maps = {
        k: WeightMapping(rows, outs, tile=r.tile, row_offset=r.row, col_offset=r.col, **kw)
        for (k, (rows, outs)), r in zip(sizes.items(), regions)
    }
    for m in maps.values():
        m.check_fits(shape)
    return maps


def required_shape(n_in: int, n_rec: int, n_out: int, n_devices: int = 1) -> tuple[int, int, int]:
    """A (tiles, rows, cols) that holds the network with one tile per matrix."""
    return (3, max(n_in, n_rec), 2 * max(n_rec, n_out) * n_devices)


# -- the network on devices ------------------------------------------------------------------------
class EpropNetwork:
    """The LIF network with its weights on a backend, trained online by e-prop.

    ``scheme`` names the update scheme (``ideal`` = float e-prop; ``sign``, ``stochastic``,
    ``multi``, ``mixed_precision``), ``scheme_params`` its options (plus ``grad_threshold``
    for ``sign``: srnn-pcm's threshold on the gradient, converted per matrix to the scheme's
    threshold in quanta; a float, or a dict per matrix name); ``n_devices`` pairs per weight
    (``multi`` needs > 1).

    The devices are RESET, their mean SET response over ``response_pulses`` pulses is
    measured on the network's own cells (its mean step is the schemes' quantum: ~0.44 µS
    for 20 pulses on Nandakumar PCM, whose first steps from RESET are ~1.9 µS and whose
    late ones approach saturation), and Gaussian initial weights are written
    open loop (SET counts from the response); the float ``ideal`` scheme starts from the
    weights read back. ``g_window_s`` (default: the backend's conductance range) and
    ``w_max`` set the weight scale, w = w_max (G+ - G-) / (g_hi - g_lo) (the conductance-to-
    weight factor of Nandakumar et al., Front. Neurosci. 2020): a smaller w_max makes one SET
    step, its programming noise and its read noise smaller in weight units and clips the
    weights at ±w_max. Given ``response`` (that
    measurement, from ``state_dict``), the devices are taken to hold the network already
    and nothing is pulsed: restore the rest with ``load_state_dict`` (a resumed run).
    """

    def __init__(
        self,
        backend: Backend,
        config: EpropConfig,
        scheme: str = "mixed_precision",
        scheme_params: dict[str, Any] | None = None,
        *,
        n_devices: int = 1,
        g_window_s: tuple[float, float] | None = None,
        set_pulse: tuple[float, float] | None = None,
        reset_pulse: tuple[float, float] | None = None,
        response_pulses: int = 20,
        response: PulseResponse | None = None,
        w_max: float = 1.0,
    ):
        self.backend, self.config = backend, config
        caps = backend.capabilities
        window = g_window_s if g_window_s is not None else caps.conductance_range_s
        sp = set_pulse if set_pulse is not None else caps.set_pulse
        rp = reset_pulse if reset_pulse is not None else caps.reset_pulse
        if sp is None or rp is None:
            raise ValueError(
                "set_pulse and reset_pulse are needed: the backend names no nominal pulses"
            )
        self.set_pulse, self.reset_pulse = PulseSpec(*sp), PulseSpec(*rp)
        maps = place_matrices(
            backend.shape, config.n_in, config.n_rec, config.n_out, n_devices, window, w_max
        )
        self.weights = {
            k: AnalogWeights(backend, m, self.set_pulse, self.reset_pulse) for k, m in maps.items()
        }
        gen = torch.Generator().manual_seed(config.seed)
        if response is None:
            self.response = self._measure_response(response_pulses)
            self._program_initial(gen)
        else:  # the devices already hold the network (a resumed run): no pulse here
            self.response = response
        self.init_tally = {k: replace(w.tally) for k, w in self.weights.items()}
        self.schemes: dict[str, UpdateScheme] = {}
        lrs = self._learning_rates()
        for k, w in self.weights.items():
            params = dict(scheme_params or {})
            grad_threshold = params.pop("grad_threshold", None)
            if scheme == "ideal":
                params.setdefault("init", "read")
            elif scheme == "stochastic":
                params.setdefault("seed", config.seed + MATRICES.index(k))
            s = build_update_scheme(scheme, **params)
            self.schemes[k] = s.bind(w, None if scheme == "ideal" else self.response)
            if grad_threshold is not None:
                if scheme != "sign":
                    raise ValueError(f"grad_threshold applies to the sign scheme, not {scheme!r}")
                if isinstance(grad_threshold, dict):
                    grad_threshold = grad_threshold[k]
                # srnn-pcm thresholds the gradient itself: |grad| > thr  <=>  |ΔW| > lr thr
                assert isinstance(s, SignUpdate)  # scheme == "sign" (checked above)
                s.threshold = grad_threshold * lrs[k] / s.quantum
        self.bias = torch.zeros(config.n_out)
        self.random_feedback = (
            torch.randn(config.n_out, config.n_rec, generator=gen) / config.n_rec**0.5
        )
        self.scheme_name = scheme
        self.updates = 0

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The digital state training changes (tensors and plain data): the measured SET
        response, the schemes' accumulators, the output bias, the feedback weights and
        the pulse tallies; the devices hold the weights."""
        r = self.response
        return {
            "response": {
                "amplitude_v": r.amplitude_v,
                "width_s": r.width_s,
                "g_curve_s": r.g_curve_s.clone(),
                "spread_s": None if r.spread_s is None else r.spread_s.clone(),
            },
            "schemes": {k: s.state_dict() for k, s in self.schemes.items()},
            "bias": self.bias.clone(),
            "random_feedback": self.random_feedback.clone(),
            "updates": self.updates,
            "tally": {k: asdict(w.tally) for k, w in self.weights.items()},
            "init_tally": {k: asdict(t) for k, t in self.init_tally.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` into a network built with ``response`` from it."""
        for k, s in self.schemes.items():
            s.load_state_dict(state["schemes"][k])
        self.bias = state["bias"].clone()
        self.random_feedback = state["random_feedback"].clone()
        self.updates = int(state["updates"])
        for k, w in self.weights.items():
            w.tally = PulseTally(**state["tally"][k])
        self.init_tally = {k: PulseTally(**t) for k, t in state["init_tally"].items()}

    @staticmethod
    def response_from_state(state: Mapping[str, Any]) -> PulseResponse:
        """The SET response saved by ``state_dict`` (the ``response`` of a resumed network)."""
        r = state["response"]
        return PulseResponse(r["amplitude_v"], r["width_s"], r["g_curve_s"], r["spread_s"])

    # -- setup ---------------------------------------------------------------------------------
    def _all_cells(self) -> Tensor:
        mask = torch.zeros(self.backend.shape, dtype=torch.bool)
        for w in self.weights.values():
            mask |= w.mapping.cell_mask(self.backend.shape)
        return mask.to(self.backend.torch_device)

    def _reset_all(self, cells: Tensor) -> None:
        n = 1 if not self.backend.capabilities.bipolar else _N_RESET
        r = self.reset_pulse
        self.backend.pulse(cells, r.amplitude_v, r.width_s, n)

    def _measure_response(self, n_pulses: int) -> PulseResponse:
        """Mean SET response of all the network's devices (RESET before and after)."""
        cells = self._all_cells()
        self._reset_all(cells)
        return measure_set_response(
            self.backend, cells, self.set_pulse, self.reset_pulse, n_pulses, n_reset=_N_RESET
        )

    def _program_initial(self, gen: torch.Generator) -> None:
        """Open-loop SET counts from RESET to the targets of Gaussian initial weights."""
        c = self.config
        stds = {"w_in": c.init_std_in, "w_rec": c.init_std_rec, "w_out": c.init_std_out}
        g0 = self.response.g_curve_s[0]
        cap = self.backend.limits.count_max
        for k, w in self.weights.items():
            m = w.mapping
            w0 = torch.randn(m.out_features, m.in_features, generator=gen) * stds[k]
            if k == "w_rec":
                w0.fill_diagonal_(0.0)
            target = m.targets(w0).double()
            n = self.response.pulses_between(g0.expand_as(target), target).round().clamp(0, cap)
            w.set_region(n.to(torch.int64))

    # -- compute --------------------------------------------------------------------------------
    def read_weight(self, name: str) -> Tensor:
        """The (out, in) weight the scheme holds (float shadow) or the devices encode (one read)."""
        s = self.schemes[name]
        w = s.effective_weight()
        assert s.weights is not None  # every scheme is bound in __init__
        return (w if w is not None else s.weights.read_weights()).detach().clone()

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[LIFRecord, Tensor]:
        """Spikes and readout for input spikes ``x`` (batch, T, n_in): input and output currents
        in one batched array read each, the recurrent current one read per step."""
        batch, steps, _ = x.shape
        s = self.schemes
        x = x.float()
        i_in = s["w_in"].matvec(x.reshape(batch * steps, -1)).reshape(batch, steps, -1)
        record = run_lif(i_in, s["w_rec"].matvec, self.config.lif)
        i_out = s["w_out"].matvec(record.z.reshape(batch * steps, -1)).reshape(batch, steps, -1)
        y = readout(i_out + self.bias, self.config.lif)
        return record, y

    def feedback(self) -> Tensor:
        """B (K, N): fixed random, or the current output weights (symmetric e-prop)."""
        if self.config.feedback == "random":
            return self.random_feedback
        return self.read_weight("w_out")

    def gradients(self, x: Tensor, target: Tensor) -> tuple[EpropGradients, Tensor, Tensor]:
        """Forward pass and e-prop gradients: (gradients, readout y, task loss)."""
        c = self.config
        record, y = self.forward(x)
        err = task_error(y, target, c.loss, c.ce_window)
        grads = eprop_gradients(x.float(), record, err, self.feedback(), c.lif, c.reg, c.f0_hz)
        return grads, y, task_loss(y, target, c.loss, c.ce_window)

    # -- learning -------------------------------------------------------------------------------
    @torch.no_grad()
    def train_step(self, x: Tensor, target: Tensor) -> float:
        """One sequence (batch): e-prop gradients, clamped, written through the update
        scheme; then ``wait_s`` of device time passes. Returns the task loss before the update
        (mean squared error per step and output for ``mse``)."""
        c = self.config
        grads, y, loss = self.gradients(x, target)
        grads = grads.clamp(c.grad_clip)
        lrs = self._learning_rates()
        for k, s in self.schemes.items():
            s.apply(-lrs[k] * getattr(grads, k))
        self.bias -= c.lr_bias * grads.bias
        self.backend.wait(c.wait_s)
        self.updates += 1
        return self._report_loss(loss, y)

    def _learning_rates(self) -> dict[str, float]:
        c = self.config
        return {"w_in": c.lr_in, "w_rec": c.lr_rec, "w_out": c.lr_out}

    @torch.no_grad()
    def evaluate(self, x: Tensor, target: Tensor) -> tuple[float, Tensor]:
        """Loss (as ``train_step`` reports it) and readout y, without updating."""
        c = self.config
        _, y = self.forward(x)
        return self._report_loss(task_loss(y, target, c.loss, c.ce_window), y), y

    def _report_loss(self, loss: Tensor, y: Tensor) -> float:
        if self.config.loss == "mse":
            return float(2.0 * loss / y.numel())
        return float(loss / (y.shape[0] * self.config.ce_window))

    def predict(self, y: Tensor) -> Tensor:
        """Class per sequence: argmax of the readout averaged over the last ``ce_window`` steps."""
        return y[:, -self.config.ce_window :].mean(1).argmax(-1)

    def training_pulses(self) -> PulseTally:
        """Device pulses issued by the updates (and refreshes) since initialization."""
        t = PulseTally()
        for k, w in self.weights.items():
            t0 = self.init_tally[k]
            t.set_pulses += w.tally.set_pulses - t0.set_pulses
            t.reset_pulses += w.tally.reset_pulses - t0.reset_pulses
            t.calls += w.tally.calls - t0.calls
            t.refreshes += w.tally.refreshes - t0.refreshes
        return t


# -- the variants of the benchmark ----------------------------------------------------------------
def pcm_device(
    mode: Literal["nandakumar", "ideal", "no_noise", "no_drift"] = "nandakumar", **overrides: Any
) -> dict[str, Any]:
    """PCM device settings for the simulator: the Nandakumar model; ``ideal`` = srnn-pcm's
    "perf mode" (ideal 4-bit memory: constant step G_max/16 = 0.75 µS, no programming or
    read noise, no drift); ``no_noise`` keeps the state-dependent mean step and drift but
    zeroes programming, RESET and read noise; ``no_drift`` sets nu = 0."""
    quiet = {"m2": 0.0, "c2_s": 0.0, "a2_s": 0.0, "m3": 0.0, "c3_s": 0.0, "g_reset_std": 0.0}
    modes: dict[str, dict[str, Any]] = {
        "nandakumar": {},
        "ideal": dict(m1=0.0, c1_s=0.75e-6, a1_s=0.0, nu=0.0, **quiet),
        "no_noise": quiet,
        "no_drift": {"nu": 0.0},
    }
    if mode not in modes:
        raise ValueError(f"unknown PCM mode {mode!r} (known: {', '.join(modes)})")
    return {"model": "pcm", **modes[mode], **overrides}


@dataclass(frozen=True)
class Variant:
    """One benchmark arm: update scheme, its options, pairs per weight, PCM mode, and the
    arm's own hyperparameters: ``config`` overrides ``EpropConfig`` fields (learning rates,
    regulariser, initial weights) and ``response_pulses`` sets the SET-response window whose
    mean step is the schemes' quantum (``EpropNetwork``). ``source`` says where the values
    come from."""

    scheme: str
    params: dict[str, Any] = field(default_factory=dict)
    n_devices: int = 1
    device: str = "nandakumar"
    config: dict[str, Any] = field(default_factory=dict)
    response_pulses: int = 20
    source: str = "EpropConfig defaults (tuned on float e-prop)"

    def __post_init__(self) -> None:
        unknown = set(self.config) - set(EpropConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Variant.config names unknown EpropConfig fields: {sorted(unknown)}")


# Per-variant hyperparameters. The float defaults of EpropConfig (tuned on float e-prop) are
# not transferable to the device schemes: on Nandakumar PCM the first SET pulse from RESET
# moves a device by ~2 µS (0.17 in weight units at 11.9 µS per unit), 4.5x the 20-pulse
# mean step the schemes take as their quantum (0.44 µS, 0.037), so every write to a weight
# near zero overshoots. srnn-pcm's tuned mixed-precision values (lr_in 3.3e-4, lr_rec
# 3.9e-4, lr_out 1.7e-5, reg 8.4e-4, w_init_gain 0.24) are in its own units (thr 0.1, reg
# per Hz); scaled by their ratio to its float values (lr_in x16.5, lr_rec x7.8, lr_out
# x0.85, reg x8.4, init x2.4) they silenced the network (0 Hz, zero-output MSE) on all
# three validation seeds, so the values below come from a small validation-only search:
# pattern_generation(seed=100, 101, 102) (network seeds alike), 25-30 epochs, mean of the
# last 5 epochs' training MSE; the benchmark's tasks (seeds 0, 1) were not used.
VARIANTS: dict[str, Variant] = {
    "float": Variant("ideal"),
    "ideal_device": Variant(
        "mixed_precision",
        device="ideal",
        response_pulses=15,
        source="EpropConfig defaults; 15-pulse response: perf-mode PCM steps 0.75 µS up to "
        "G_max = 12 µS, so 15 pulses measure the true step (20 pulses hit G_max and "
        "gave 0.595 µS, transferring 26 % more than asked)",
    ),
    "sign": Variant(
        "sign",
        {"grad_threshold": {"w_in": 99.0, "w_rec": math.inf, "w_out": 99.0}},
        source="validation search: srnn-pcm's grad_thr 0.9 pulses every weight at every "
        "update here (per-sequence gradients: median 20-2400, clipped at 100) and "
        "blew up (MSE ~1e3-1e4, then silent); 99 pulses only clipped gradients, and "
        "W_rec is not written (with 99 on W_rec the recurrent overshoots drove the "
        "network to ~280 Hz, MSE ~600)",
    ),
    "stochastic": Variant(
        "stochastic",
        config={"lr_in": 1e-5, "lr_rec": 1e-5, "lr_out": 3e-6},
        source="validation search: the pulse probability is |ΔW| / quantum, so lr sets "
        "srnn-pcm's prob_scale (= quantum / lr; its 120 / 780 are in its own units); "
        "lr / 10 gave final MSE 0.47 / 0.31 / 2.1 (seeds 100-102) against 0.26 / "
        "0.38 / 13.5 with only lr_rec lowered to 3e-5 (runaway to ~60-130 Hz)",
    ),
    "multi": Variant(
        "multi",
        {"refresh_threshold_s": 9e-6, "refresh_every": 10},
        n_devices=4,
        config={"lr_rec": 3e-5, "lr_out": 3e-4},
        source="refresh 9 µS (srnn-pcm); validation search: n = round(|ΔW| / (quantum / N)) "
        "drops every |ΔW| < quantum / 2N = 0.0046, so the float lr_out 3e-5 (|ΔW| <= "
        "3e-3 at the clip) never wrote W_out; lr_out 3e-4 writes it (final MSE 0.158 / "
        "0.169 vs 0.181 / 0.186 at 3e-5, seeds 100 / 101) and lr_rec 3e-5 as for mixed "
        "precision; multi still stays near the zero-output MSE (rates < 2 Hz)",
    ),
    "mixed_precision": Variant(
        "mixed_precision",
        config={"lr_rec": 3e-5, "lr_out": 2e-5},
        source="validation search: lr_rec 1e-4 -> 3e-5 (30 epochs: final MSE 0.113 vs float "
        "0.095, mean of 3 seeds; at 1e-4 one seed ran away to ~250 Hz, MSE ~1500, from "
        "the first transfers' overshoot on W_rec); lr_out 3e-5 -> 2e-5 (60 epochs: "
        "0.076 vs 0.081, float 0.051; within seed noise); srnn-pcm's ratios: see above",
    ),
}


def variant_config(name: str | Variant, config: EpropConfig) -> EpropConfig:
    """``config`` with the variant's own hyperparameters (``Variant.config``) applied."""
    v = VARIANTS[name] if isinstance(name, str) else name
    return replace(config, **v.config)
