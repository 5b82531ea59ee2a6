"""Deploying a pruned random MLP on the HardwareBackend over the mock lab: forming by
the AutoFormer protocol, the right RESET/SET pulses on the right cells, and deployed
accuracy that reproduces the hardware-aware simulation and the simulator backend."""

from __future__ import annotations

import copy

import torch

from memhil.algorithms.pruning.edge_popup import (
    FormingRecipe,
    TrainConfig,
    accuracy,
    active_cells,
    cross_entropy,
    deploy_masks,
    draw_hardware_weights,
    masks_of,
    read_magnitudes,
    train,
)
from memhil.algorithms.pruning.models import MLP, layer_shapes
from memhil.backends.sim import SimBackend
from memhil.datasets import digits
from memhil.mock_hw.lab import MockLab
from tests.backends import _mock_station

HIDDEN = 32
COLS = 2 * HIDDEN + 2 * 10
N_EVAL = 150  # mvm over the mock board costs ~10 ms per input vector


def _build(factory):
    return MLP(factory, (64, HIDDEN, 10), bits=4)


def _mock_backend():
    st = copy.deepcopy(_mock_station("parallel", 64, COLS))
    st["chip"]["device"] = "rram_forming"
    st["mock"]["device"] = "rram_forming"
    st["mock"]["read"] = {"read_noise_rel": 0.03}
    return MockLab.open_backend(st, strategy="parallel")


def _pipeline(backend, recipe, data, spy_calls=None):
    """Form, measure, train (no switch limiting), deploy; accuracies before/after."""
    shapes = [s for _, s, _ in layer_shapes(_build)]
    hw = draw_hardware_weights(backend, shapes, sign_seed=0, recipe=recipe, n_reads=2)
    net = _build(hw.masked_factory(seed=0))
    train(net, data.train.x, data.train.y, cross_entropy, TrainConfig(epochs=15))
    x, y = data.test.x[:N_EVAL], data.test.y[:N_EVAL]
    simulated = accuracy(net, x, y)
    if spy_calls is not None:
        spy_calls.clear()
    ones = [torch.ones_like(s) for s in hw.signs]
    dep = deploy_masks(backend, hw.mappings, hw.signs, ones, masks_of(net))
    net.attach(backend, hw.mappings)
    deployed = accuracy(net, x, y)
    net.attach(None)
    return hw, net, dep, simulated, deployed


def test_mock_lab_deployment_pulses_and_accuracy(monkeypatch):
    data = digits()
    calls = []
    be = _mock_backend()
    try:
        real = be.pulse

        def spy(cells, amplitude, width_s, count=1, *, compliance_a=None):
            calls.append((be.cell_mask(cells).clone(), float(amplitude)))
            real(cells, amplitude, width_s, count, compliance_a=compliance_a)

        monkeypatch.setattr(be, "pulse", spy)
        # a two-step forming ramp (2.4 V, then 2.8 V for the cells still unformed; V_bd ~
        # N(2 V, 0.2 V)) keeps the protocol run brief
        recipe = FormingRecipe(method="protocol", v_start=2.4, v_step=0.4)
        hw, net, dep, simulated, deployed = _pipeline(be, recipe, data, calls)
        masks = masks_of(net)

        # first deployment from "all kept": one RESET call on exactly the pruned cells
        assert len(calls) == 1 and calls[0][1] < 0
        pruned = torch.zeros(be.shape, dtype=torch.bool)
        for m, s, k in zip(hw.mappings, hw.signs, masks):
            pruned |= active_cells(m, s, be.shape, k == 0)
        assert torch.equal(calls[0][0], pruned) and dep.n_set == 0
        assert dep.n_reset == sum(int((k == 0).sum()) for k in masks)
        g_now = be.read_conductance()
        g_pruned = g_now[pruned]  # the RESET state LogNormal(ln 1 uS, 0.5): small, not zero
        assert bool((g_pruned > 0.05e-6).all()) and 0.5e-6 < float(g_pruned.median()) < 2e-6
        mags = read_magnitudes(be, hw.mappings, hw.signs)
        for mag, keep, k in zip(mags, hw.states.keep, masks):
            kept, gone = mag[0][k > 0], mag[0][k == 0]
            assert float(gone.median()) < 0.2 * float(kept.median())
            # kept cells were not touched: equal to the training readouts within read noise
            # (two reads at 3 % each: 5 sigma of the difference is ~21 %)
            assert bool(((kept - keep[0][k > 0]).abs() <= 0.21 * kept).all())

        # redeploy: reinstate 3 pruned weights and prune 3 kept ones of layer 0 -> exact cells
        k0 = masks[0]
        on, off = (k0 == 0).nonzero()[:3], (k0 > 0).nonzero()[:3]
        new0 = k0.clone()
        new0[on[:, 0], on[:, 1]] = 1
        new0[off[:, 0], off[:, 1]] = 0
        calls.clear()
        dep2 = deploy_masks(be, hw.mappings, hw.signs, masks, [new0, masks[1]])
        (reset_mask, v_reset), (set_mask, v_set) = calls
        m0, s0 = hw.mappings[0], hw.signs[0]
        assert v_reset < 0 < v_set and dep2.n_reset == 3 and dep2.n_set == 3
        assert torch.equal(reset_mask, active_cells(m0, s0, be.shape, (k0 > 0) & (new0 == 0)))
        assert torch.equal(set_mask, active_cells(m0, s0, be.shape, (k0 == 0) & (new0 > 0)))
        g = read_magnitudes(be, hw.mappings, hw.signs)[0][0]
        assert bool((g[on[:, 0], on[:, 1]] > 3e-6).all())  # SET: back to a formed level
    finally:
        be.close()

    sim = SimBackend(
        {
            "tiles": 1,
            "rows": 64,
            "cols": COLS,
            "device": "rram_forming",
            "seed": 5,
            "read": {"read_noise_rel": 0.03},
        }
    )
    _, _, _, _, sim_deployed = _pipeline(sim, FormingRecipe(), data)

    # Margins: the deployed array differs from training only by read noise and the
    # fresh RESET draw of pruned cells; measured gaps over 3 seeds were <= 3 points, so
    # 6 points. Mock and simulator arrays are different random draws (and 200 test
    # digits, +-3 points of sampling error): measured gaps <= 7 points, so 12.
    assert deployed > 0.7 and sim_deployed > 0.7
    assert abs(deployed - simulated) <= 0.06
    assert abs(deployed - sim_deployed) <= 0.12
