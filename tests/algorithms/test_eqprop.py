"""Equilibrium propagation in a resistive network: the solver obeys Kirchhoff, the local
EqProp rule is the loss gradient as beta -> 0, ideal training learns Iris, device updates
go through the Backend, and a tiny network trains on the mock-lab hardware backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memhil.algorithms.eqprop.devices import (
    MEMRISTOR_MODELS,
    local_slope,
    memristor_device_config,
    memristor_store,
    place_layers,
    plan_pulses,
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
from memhil.backends.sim import SimBackend
from memhil.datasets import iris
from memhil.devices import build_device_model
from memhil.mock_hw.lab import MockLab
from tests.backends import _mock_station

G_MAX = 1e-4  # S; the circuit is scale-invariant, any value works


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and contend on a shared CI box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return iris()


def _random_g(spec: NetworkSpec, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        G_MAX * (0.05 + 0.95 * torch.rand(s, generator=gen, dtype=torch.float64))
        for s in spec.layer_shapes()
    ]


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.flatten() for t in ts])


def test_free_and_nudged_equilibria_satisfy_kcl(data):
    spec = NetworkSpec((4, 10, 3))
    net = ResistiveNetwork(spec, G_MAX)
    g = _random_g(spec)
    x, y = data.train.x[:40], data.train.y[:40]
    for beta in (0.0, 0.05):
        v = net.solve(g, x, beta, y)
        kcl = net.kcl_residual_a(g, v, x, beta, y)
        # The solver stops when every node's residual / (its total conductance) is below
        # tol_v = 1e-9 V. A hidden node sees at most 10 input + 6 output conductances (the
        # amplifier maps G A^2 / A^2 back) + the diode pair's 2 x 10 g_max = 36 g_max; an
        # output node 12 g_max. So |KCL residual| <= 1e-9 V * 36 g_max = 3.6e-12 A, a pA
        # against branch currents of ~0.1 V x 1e-4 S = 10 uA.
        assert float(kcl.abs().max()) <= 1e-9 * 36 * G_MAX
    # and the hidden nodes really use the diode nonlinearity (not a linear network)
    assert float(v[:, :10].abs().max()) > spec.diode_v_th


def test_eqprop_gradient_matches_implicit_gradient(data):
    spec = NetworkSpec((4, 10, 3))
    net = ResistiveNetwork(spec, G_MAX)
    g = _random_g(spec, seed=1)
    x, y = data.train.x[:32], data.train.y[:32]
    ref = _flat(net.implicit_gradient(g, x, y))
    # the reference itself against central finite differences of the loss, on 3 cells
    for layer, i, j in ((0, 2, 3), (0, 9, 0), (1, 4, 5)):
        eps = 1e-6 * G_MAX
        plus = [t.clone() for t in g]
        minus = [t.clone() for t in g]
        plus[layer][i, j] += eps
        minus[layer][i, j] -= eps
        fd = (
            (net.loss(net.solve(plus, x), y).mean() - net.loss(net.solve(minus, x), y).mean())
            / (2 * eps)
            * G_MAX
        )
        implicit = net.implicit_gradient(g, x, y)[layer][i, j]
        # float64 solves to 1e-9 V: the FD quotient is good to ~1e-6 relative
        assert float(fd) == pytest.approx(float(implicit), rel=1e-5)
    cos = {}
    for beta in (0.1, 0.01, 0.001):
        for centered in (False, True):
            est = _flat(net.eqprop_gradient(g, x, y, beta, centered)[0])
            cos[beta, centered] = float(F.cosine_similarity(est, ref, dim=0))
    print("cosine(EqProp, implicit gradient):", {k: round(v, 10) for k, v in cos.items()})
    # one-sided EqProp has an O(beta) bias, the centred one O(beta^2): both -> 1
    assert cos[0.01, False] > 0.99999 and cos[0.001, False] > 0.999999
    assert cos[0.01, True] > 0.9999999
    assert 1 - cos[0.001, False] < 1 - cos[0.1, False]
    assert 1 - cos[0.01, True] < 1 - cos[0.01, False]


def test_sgd_step_caps_relative_change_and_clips_to_range():
    g = [torch.tensor([[1e-5, 5e-5, 9e-5]], dtype=torch.float64)]
    grads = [torch.tensor([[-10.0, 10.0, -10.0]], dtype=torch.float64)]  # huge steps
    d = sgd_step(grads, g, lr=1.0, g_min_s=1e-6, g_max_s=1e-4, max_rel_change=0.5)[0]
    assert torch.allclose(d, torch.tensor([[0.5e-5, -2.5e-5, 1e-5]], dtype=torch.float64))


def test_ideal_eqprop_learns_iris(data):
    """Ideal conductance updates, Iris 4-10-3, 40 epochs (~3 s): >= 90 % test accuracy."""
    spec = NetworkSpec((4, 10, 3))
    g_min = G_MAX / 100
    store = IdealConductances(init_conductances(spec, g_min, G_MAX, seed=0), g_min, G_MAX)
    trainer = EqPropTrainer(ResistiveNetwork(spec, G_MAX), store, EqPropConfig(), seed=0)
    loss0, _ = trainer.evaluate(data.train.x, data.train.y)
    for _ in range(40):
        trainer.train_epoch(data.train.x, data.train.y)
    loss1, _ = trainer.evaluate(data.train.x, data.train.y)
    acc = trainer.evaluate(data.test.x, data.test.y)[1]
    print(f"ideal EqProp Iris: test accuracy {acc:.3f}")
    assert acc >= 0.90
    assert loss1 < 0.5 * loss0


def test_layers_pack_on_tiles_or_columns():
    shapes = [(10, 10), (12, 6)]
    assert [p.tile for p in place_layers((2, 12, 10), shapes)] == [0, 1]
    packed = place_layers((1, 12, 16), shapes)
    assert [(p.tile, p.col) for p in packed] == [(0, 0), (0, 10)]
    with pytest.raises(ValueError, match="do not fit"):
        place_layers((1, 12, 15), shapes)


@pytest.mark.parametrize("model", MEMRISTOR_MODELS)
def test_device_models_selectable_with_resistance_ratio(model):
    cfg = memristor_device_config(model, 30.0, variability=False)
    g_min, g_max = usable_range(cfg, 30.0)
    assert g_max / g_min == pytest.approx(30.0)
    if model != "yakopcic":  # Yakopcic has no R_on/R_off parameter (see eqprop_devices)
        assert cfg["r_off_ohm"] / cfg["r_on_ohm"] == pytest.approx(30.0)
    up = local_slope(cfg, 1.0 if model != "vteam" else 0.21, 1e-6)
    assert bool((up.slope >= 0).all()) and float(up.slope.max()) > 0


def test_device_update_realises_requested_change_through_backend():
    """Deterministic HP devices (ratio 10) in the simulator: small requested changes come
    out with the right direction and size; the model (not the request) decides."""
    spec = NetworkSpec((2, 3, 2))
    cfg = memristor_device_config("hp", 10.0, variability=False)
    with SimBackend(
        {
            "tiles": 2,
            "rows": 6,
            "cols": 4,
            "device": cfg,
            "seed": 0,
            "limits": {
                "compliance_max_a": 0.05,
                "compliance_default_a": 0.05,
                "width_max_s": 100.0,
            },
        }
    ) as backend:
        store = memristor_store(backend, spec.layer_shapes(), cfg, 10.0)
        targets = init_conductances(spec, store.g_min_s, store.g_max_s, seed=3, low=0.2, high=0.6)
        store.program(targets)
        g0 = store.read()
        # the trajectory inverse of a deterministic model programs to within 1 %
        assert float(max(((a - b).abs() / b).max() for a, b in zip(g0, targets))) < 0.01
        gen = torch.Generator().manual_seed(0)
        want = [
            0.05 * g * (2 * torch.rand(g.shape, generator=gen, dtype=torch.float64) - 1) for g in g0
        ]
        store.apply(want)
        store.read()
        cos, ratio = store.update_fidelity[-1]
        # local linearisation of a smooth model over a +-5 % step: a few % error at most
        assert cos > 0.99 and ratio == pytest.approx(1.0, abs=0.05)


def test_shortest_pulse_odds_follow_the_trajectory_not_the_slope():
    """VTEAM at its 0.21 V SET with a 1 us shortest pulse (a bench's floor): one such pulse
    crosses much of the window, so a small request is sent as that pulse with some odds.
    Odds from the mean trajectory make the expected change the requested one; the slope's
    linear extrapolation (dose / width_min) missed it by ~10x on VTEAM."""
    cfg = memristor_device_config("vteam", 20.0, variability=False)
    model = build_device_model(cfg)
    up, down = (local_slope(cfg, v, w) for v, w in (model.nominal_set_pulse, (-0.03, 1e-6)))
    p = model.p
    g0, want, width_min, n = 2.0e-3, 2.0e-4, 1e-6, 20000
    # what one shortest pulse really does to the deterministic device at g0
    x0 = (1.0 / g0 - p.r_on_ohm) / (p.r_off_ohm - p.r_on_ohm)
    gen = torch.Generator().manual_seed(0)
    d2d = model.sample_d2d((1,), gen, dtype=torch.float64)
    x1 = model.step(
        torch.full((1, 1), x0, dtype=torch.float64),
        d2d,
        torch.full((1,), model.nominal_set_pulse[0], dtype=torch.float64),
        torch.full((1,), width_min, dtype=torch.float64),
        torch.ones(1, dtype=torch.int64),
        0.0,
        gen,
    )
    one_pulse_s = float(model.conductance(x1, d2d, 0.2, 0.0)[0]) - g0
    assert one_pulse_s > 5 * want  # a coarse quantum: the case the odds are for
    plan = plan_pulses(
        torch.full((n,), g0, dtype=torch.float64),
        torch.full((n,), want, dtype=torch.float64),
        up,
        down,
        width_min_s=width_min,
        max_dose=(1.0, 1.0),
        generator=torch.Generator().manual_seed(1),
    )
    assert bool((plan.width_s == width_min).all())  # every dose is below the floor
    expected = float(plan.count.double().mean()) * one_pulse_s
    # n = 20000 draws at odds ~0.07: the binomial mean's relative sd is ~2.7 %; 12 %
    # allows 4 sd plus the trajectory table's interpolation error (~1 %)
    assert expected == pytest.approx(want, rel=0.12)


def test_training_through_mock_lab_hardware_backend(data):
    """A tiny 4-3-3 network on the mock lab's array board (NeuroSim devices, pulse-count
    updates, 1 % read noise): 2 epochs of 3 batches each. Training accuracy must beat chance
    (1/3) clearly and the loss must fall: the whole path (read, solve, pulses, device
    response, read back) works on the hardware backend."""
    spec = NetworkSpec((4, 3, 3))
    backend = MockLab.open_backend(_mock_station("parallel", 10, 9), strategy="parallel")
    try:
        store = memristor_store(backend, spec.layer_shapes(), "neurosim", mode="count", seed=0)
        store.program(init_conductances(spec, store.g_min_s, store.g_max_s, seed=0), rounds=3)
        trainer = EqPropTrainer(
            ResistiveNetwork(spec, store.g_max_s),
            store,
            EqPropConfig(lr=20.0, batch_size=35),
            seed=0,
        )
        loss0, acc0 = trainer.evaluate(data.train.x, data.train.y)
        for _ in range(2):
            trainer.train_epoch(data.train.x, data.train.y)
        loss1, acc1 = trainer.evaluate(data.train.x, data.train.y)
        print(
            f"mock lab: loss {loss0:.4f} -> {loss1:.4f}, accuracy {acc0:.2f} -> {acc1:.2f}, "
            f"{store.pulses} pulses in {store.pulse_calls} calls"
        )
        assert loss1 < 0.5 * loss0
        assert acc1 > 0.5
        assert store.pulse_calls >= 6
    finally:
        backend.close()
