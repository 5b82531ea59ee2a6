"""MF-ESN and leaky-ESN baselines: the MF equations against a hand-computed step, the
decay-range check, online pooling against the stored states."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.algorithms.mars.reservoirs import MFESN, LeakyESN, MFDevice, check_decay_range
from memhil.nn.pooling import pool_states


def test_mfesn_step_matches_a_hand_computed_update():
    cell = MFESN(1, 2, rho=0.5, gamma=0.95, p=5.0, dt=0.01, seed=0)
    with torch.no_grad():
        cell.w_in.copy_(torch.tensor([[0.3], [-1.2]]))
        cell.w.copy_(torch.tensor([[0.1, -0.4], [0.7, 0.2]]))
        cell.b.copy_(torch.tensor([0.05, -0.1]))
    h_prev = [0.2, 0.6]
    x = 0.8
    expected = []
    for i, (w_in, w_row, b) in enumerate([(0.3, (0.1, -0.4), 0.05), (-1.2, (0.7, 0.2), -0.1)]):
        z = w_in * x + w_row[0] * h_prev[0] + w_row[1] * h_prev[1] + b
        v = 0.35 + (1.15 - 0.35) / (1 + math.exp(-5.0 * z))
        kp = 1e-4 * math.exp(10.0 * 1.0 * v)
        kd = 0.5 * math.exp(-1.0 * 1.0 * v)
        h = h_prev[i]
        expected.append(0.95 * h + 0.01 * (kp * (1 - h) - kd * h))
    got = cell.step(torch.tensor([[x]]), torch.tensor([h_prev]))
    # float32 evaluation of exp/sigmoid: ~1e-7 relative, far below 1e-6
    assert torch.allclose(got.double(), torch.tensor([expected], dtype=torch.float64), atol=1e-6)


def test_leaky_esn_step_matches_the_formula():
    esn = LeakyESN(2, 3, leak=0.3, seed=1)
    x, h = torch.randn(4, 2), torch.randn(4, 3)
    want = 0.7 * h + 0.3 * torch.tanh(x @ esn.w_in.t() + h @ esn.w.t() + esn.b)
    assert torch.allclose(esn.step(x, h), want)


def test_rate_constants_and_decay_range():
    dev = MFDevice()
    kp, kd = dev.rates(torch.tensor([0.35, 1.15], dtype=torch.float64))
    # the reference's rate ranges: kp in [3.3e-3, 9.9], kd in [0.16, 0.35]
    assert kp[0] == pytest.approx(3.31e-3, rel=1e-2) and kp[1] == pytest.approx(9.87, rel=1e-2)
    assert kd[1] == pytest.approx(0.158, rel=1e-2) and kd[0] == pytest.approx(0.352, rel=1e-2)
    v = torch.linspace(dev.v_lo_v, dev.v_hi_v, 100001, dtype=torch.float64)
    total = sum(dev.rates(v))
    s_min, s_max = dev.rate_sum_range()
    assert s_min == pytest.approx(float(total.min()), rel=1e-9)
    assert s_max == pytest.approx(float(total.max()), rel=1e-12)
    a_min, a_max = check_decay_range(1.0, 0.01, dev)
    assert 0 < a_min < a_max < 1
    with pytest.raises(ValueError, match=r"reaches -?[0-9.e-]+ <= 0"):
        check_decay_range(1.0, 0.2, dev)
    with pytest.raises(ValueError, match="gamma"):
        MFESN(1, 4, gamma=1.5)


@pytest.mark.parametrize("pool", ["last", "mean", "mean_last"])
@pytest.mark.parametrize("cls", [MFESN, LeakyESN])
def test_online_pooling_equals_pooling_of_the_stored_states(pool, cls):
    res = cls(3, 16, seed=2)
    x = torch.randn(5, 11, 3)
    lengths = torch.tensor([11, 4, 7, 1, 9])
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0.0
    want = pool_states(res.states(x), lengths, pool)
    assert torch.allclose(res.features(x, lengths, pool=pool), want, atol=1e-6)
    assert torch.allclose(
        res.features(x, pool=pool), pool_states(res.states(x), None, pool), atol=1e-6
    )


def test_recurrent_matrix_has_the_requested_spectral_radius():
    esn = MFESN(1, 300, rho=0.8, seed=3)
    radius = float(torch.linalg.eigvals(esn.w.double()).abs().max())
    # circular law: the radius of a 300x300 iid matrix is within a few % of rho
    assert radius == pytest.approx(0.8, rel=0.1)
    assert 0.0 <= float(esn.features(torch.randn(2, 30, 1)).min())
    assert float(esn.features(torch.randn(2, 30, 1)).max()) <= 1.0  # conductances stay in [0, 1]
