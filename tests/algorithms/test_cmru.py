"""BMRU / CMRU / αCMRU / FQ cells: scan equals the sequential loop (values and gradients),
quantized states, surrogate gradients, ε handling, learning a retention task, and deployment
of the projections on the simulator and on the mock-lab hardware backend."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from memhil.algorithms.cmru.backbone import RecurrentBackbone
from memhil.algorithms.cmru.deploy import (
    deploy_to_backend,
    gaussian_candidate_noise,
    noise_robustness,
    perturbed_weights,
)
from memhil.algorithms.cmru.training import TrainConfig, evaluate, train
from memhil.algorithms.cmru.units import EpsSchedule, MemoryRecurrentUnit, heaviside, sign
from memhil.backends.sim import SimBackend
from memhil.datasets import copy_first_input
from memhil.mock_hw.lab import MockLab
from memhil.nn.scan import linear_scan
from tests.backends import _mock_station

CELLS = [  # (variant, eps, learn_eps)
    ("signed", 0.0, False),
    ("signed", 0.5, False),
    ("signed", 1.0, False),
    ("signed", 0.9, True),
    ("fq", 0.0, False),
    ("fq", 1.0, False),
    ("fq", 0.5, True),
]


def _cell(variant: str, eps: float, learn: bool, seed: int = 0) -> MemoryRecurrentUnit:
    cell = MemoryRecurrentUnit(
        6,
        9,
        4,
        eps=eps,
        learn_eps=learn,
        variant=variant,
        threshold_bias_init=0.6,
        generator=torch.Generator().manual_seed(seed),
    )
    return cell.double()


@pytest.mark.parametrize("variant, eps, learn", CELLS)
def test_scan_equals_loop_values_and_gradients(variant, eps, learn):
    cell = _cell(variant, eps, learn)
    x = torch.randn(3, 57, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    probe = torch.randn(3, 57, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z, _ = cell.gates(x)
    assert 0.05 < float(z.detach().mean()) < 0.95  # the test sees switches and holds
    outputs, grads = [], []
    for run in (cell.forward, cell.forward_loop):
        cell.zero_grad()
        x.grad = None
        y = run(x)
        (y * probe).sum().backward()
        outputs.append(y.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in cell.parameters()])
    # float64: the scan only reorders products/sums of O(1) numbers over <= 57 steps
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
    for g_scan, g_loop in zip(grads[0], grads[1]):
        assert torch.allclose(g_scan, g_loop, rtol=1e-8, atol=1e-10)
    assert any(float(g.abs().max()) > 0 for g in grads[0][1:])


def test_quantized_states():
    x = torch.randn(4, 200, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s_cmru = _cell("signed", 1.0, False).states(x).detach()
    assert torch.equal(s_cmru, s_cmru.round())  # ε = 1: integer counters
    assert float(s_cmru.abs().max()) >= 3  # and they really count beyond ±1
    s_bmru = _cell("signed", 0.0, False).states(x).detach()
    assert set(s_bmru.unique().tolist()) <= {-1.0, 1.0}  # ε = 0: a ±1 latch
    s_fq = _cell("fq", 0.0, False).states(x).detach()
    assert set(s_fq.unique().tolist()) <= {0.0, 1.0}  # FQ latch: binary currents
    s_fq_counter = _cell("fq", 1.0, False).states(x).detach()
    assert torch.equal(s_fq_counter, s_fq_counter.round()) and float(s_fq_counter.min()) >= 0


def test_surrogate_gradients_are_nonzero_where_the_step_is_flat():
    a = 2.0
    x = torch.tensor([-1.5, -0.3, 0.2, 2.0], requires_grad=True)
    heaviside(x, a).sum().backward()
    expected = a / (1 + (math.pi * a * x.detach()) ** 2)
    assert torch.allclose(x.grad, expected) and bool((x.grad > 0).all())
    x.grad = None
    out = sign(x, a)
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0]
    out.sum().backward()
    assert torch.allclose(x.grad, 2 * expected)


def test_bmru_blocks_the_gradient_through_a_switch_and_cmru_does_not():
    x = torch.randn(2, 30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for eps, expected in ((0.0, 0.0), (1.0, 1.0)):
        cell = _cell("signed", eps, False)
        z, _ = cell.gates(x)
        s0 = torch.ones(2, 9, dtype=torch.float64, requires_grad=True)
        a, b = cell.coefficients(x)
        s = linear_scan(a, b, s0, dim=1)
        s[:, -1].sum().backward()
        switched = z.detach().amax(1) > 0  # units that switched at least once
        assert bool(switched.any())
        assert torch.all(s0.grad[switched] == expected)


def test_eps_learnable_schedule_and_errors():
    cell = _cell("signed", 0.7, True)
    assert torch.allclose(cell.eps, torch.full((9,), 0.7, dtype=torch.float64))
    cell(torch.randn(2, 20, 6, dtype=torch.float64)).sum().backward()
    assert cell.eps_logit.grad is not None and float(cell.eps_logit.grad.abs().sum()) > 0
    sched = EpsSchedule(hold_steps=10, decay_steps=20)
    assert [sched(0), sched(10), sched(20), sched(30), sched(99)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    model = RecurrentBackbone(3, 2, cell="cmru", d_model=8, d_state=4, depth=2)
    assert sched.apply(model, 20) == 0.5
    assert all(float(c.eps) == 0.5 for c in model.cells)
    with pytest.raises(ValueError, match="eps=1.5"):
        MemoryRecurrentUnit(3, 4, eps=1.5)
    with pytest.raises(RuntimeError, match="learns"):
        cell.set_eps(0.2)


# ---------------------------------------------------------------------------------------
# Learning and deployment (one tiny trained model shared by the tests below)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A tiny CMRU trained on copy-first-input at T = 20 (~3 s on one core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add contention
    try:
        data = copy_first_input(20, n_train=256, n_test=64, seed=0)
        model = RecurrentBackbone(
            data.n_features,
            data.n_classes,
            cell="cmru",
            d_model=8,
            d_state=8,
            mlp_ratio=2,
            dropout=0.0,
            seed=1,
        )
        result = train(
            model, data.train, TrainConfig(steps=150, batch_size=32, lr=1e-2, seed=0), data.test
        )
    finally:
        torch.set_num_threads(threads)
    return model, data, result


def test_tiny_cmru_learns_copy_first_input(trained):
    _, _, result = trained
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.test_accuracy >= 0.9  # chance is 0.25 (4 symbols)


def test_noise_injection_leaves_the_model_intact(trained):
    model, data, _ = trained
    clean = evaluate(model, data.test)
    table = noise_robustness(
        model, data.test, candidate_stds=(0.0, 0.5), weight_stds=(0.0, 0.3), n_draws=2
    )
    assert table[("candidate", 0.0)] == clean and table[("weight", 0.0)] == clean
    assert evaluate(model, data.test) == clean  # perturbed_weights restored the weights
    before = [p.detach().clone() for p in model.parameters()]
    with perturbed_weights(model, 0.1, torch.Generator().manual_seed(0)):
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    c = torch.ones(1000)
    noisy = gaussian_candidate_noise(0.2, torch.Generator().manual_seed(0))(c)
    assert abs(float((noisy - c).std()) - 0.2) < 0.02  # 1000 draws: std error ~0.0045


def _deployed_accuracy(model, data, backend) -> tuple[float, list]:
    deployed = copy.deepcopy(model)
    layers = deploy_to_backend(
        deployed, backend, program_kw={"calibration_pulses": 8, "max_iterations": 10}
    )
    return evaluate(deployed, data.test), layers


def test_deployed_on_the_simulator_matches_the_float_model(trained):
    model, data, _ = trained
    backend = SimBackend(
        {"rows": 8, "cols": 56, "device": "neurosim", "seed": 0, "read": {"read_noise_rel": 0.01}}
    )
    acc, layers = _deployed_accuracy(model, data, backend)
    assert len(layers) == 3  # [W_c; W_β], W_out, head readout
    for layer in layers:  # programmed within ~10 % of each matrix's w_max (verify tolerance 5 %)
        w_max = layer.weights.mapping.w_max
        assert float((layer.read_weights() - layer.weight.detach()).abs().max()) < 0.15 * w_max
    # stated accuracy drop: at most 0.1 (programming error ~5 % of w_max, 1 % read noise)
    assert acc >= evaluate(model, data.test) - 0.1


def test_deployed_on_the_mock_lab_matches_the_float_model(trained):
    model, _, _ = trained
    backend = MockLab.open_backend(_mock_station("parallel", 8, 56), strategy="parallel")
    try:
        small = copy_first_input(20, n_train=1, n_test=24, seed=5)  # mock-lab MVMs are slow
        deployed = copy.deepcopy(model)
        deploy_to_backend(
            deployed, backend, program_kw={"calibration_pulses": 8, "max_iterations": 10}
        )
        acc = evaluate(deployed, small.test)
    finally:
        backend.close()
    # stated accuracy drop: at most 0.15 over 24 sequences (one or two flips cost 0.04 each)
    assert acc >= evaluate(model, small.test) - 0.15
