"""NeuroSim nonlinear LTP/LTD curve: closed form, endpoints, saturation, mirror, C2C.

The checks every device model shares are in test_device_contract.py."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.core.errors import ConfigError
from memhil.devices.base import build_device_model
from memhil.devices.neurosim import NeuroSimLTPLTD

US = 1e-6
F64 = torch.float64
G_MIN, G_MAX = 0.476e-6, 10e-6


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pulse(m, state, v, count, seed=1, d2d=None):
    shape = state.shape[:-1]
    cnt = count if isinstance(count, torch.Tensor) else torch.full(shape, count)
    vv = v if isinstance(v, torch.Tensor) else torch.full(shape, v, dtype=state.dtype)
    return m.step(
        state, d2d or {}, vv, torch.full(shape, 8e-8, dtype=state.dtype), cnt, 0.0, _gen(seed)
    )


def _g(n_cells, g_s):
    return torch.full((n_cells, 1), g_s, dtype=F64)


def test_closed_form_count_equals_sequential_pulses():
    m = NeuroSimLTPLTD(c2c_std=0.0)
    counts = torch.arange(0, 45)  # beyond P_max = 31 to cover the saturated end
    for v in (2.0, -2.0):
        start = G_MIN if v > 0 else G_MAX
        once = _pulse(m, _g(len(counts), start), v, counts)
        seq = _g(len(counts), start)
        for k in range(int(counts.max())):
            seq = _pulse(m, seq, v, (counts > k).long())
        # float64, no noise: only rounding separates the closed form from the loop.
        assert torch.allclose(once, seq, rtol=1e-10, atol=1e-18)


def test_curve_endpoints_and_formula():
    m = NeuroSimLTPLTD(c2c_std=0.0)
    a = 0.249748 * 31
    b = (G_MAX - G_MIN) / (1 - math.exp(-31 / a))
    p = torch.arange(0, 32, dtype=F64)
    expect = b * (1 - torch.exp(-p / a)) + G_MIN
    out = _pulse(m, _g(32, G_MIN), 2.0, torch.arange(0, 32))
    assert torch.allclose(out[:, 0], expect, rtol=1e-10)
    assert out[0, 0].item() == G_MIN
    assert out[31, 0].item() == pytest.approx(G_MAX, rel=1e-10)
    assert torch.allclose(m.ltp_curve(p), expect, rtol=1e-12)
    assert m.ltp_curve(0.0).item() == G_MIN and m.ltp_curve(31.0).item() == pytest.approx(G_MAX)
    # pulse position inverts the curve
    assert torch.allclose(m.pulse_position(expect), p, atol=1e-9)
    # initial state is G_min
    s = m.initial_state({}, (3, 2), _gen())
    assert s.shape == (3, 2, 1) and torch.all(s == torch.tensor(G_MIN, dtype=torch.float32))


def test_saturation_at_bounds():
    m = NeuroSimLTPLTD(c2c_std=0.0)
    up = _pulse(m, _g(4, 5 * US), 2.0, torch.tensor([40, 100, 1000, 31]))
    assert torch.all(up[:3, 0] == G_MAX) and up[3, 0].item() <= G_MAX
    down = _pulse(m, _g(4, 5 * US), -2.0, torch.tensor([40, 100, 1000, 31]))
    assert torch.all(down[:3, 0] == G_MIN) and down[3, 0].item() >= G_MIN
    # with C2C noise the result still stays inside [G_min, G_max]
    noisy = NeuroSimLTPLTD(c2c_std=0.05)
    out = _pulse(noisy, _g(10_000, G_MAX), 2.0, 3)
    assert out.max().item() <= G_MAX and out.min().item() >= G_MIN


def test_ltd_mirrors_ltp():
    m = NeuroSimLTPLTD(c2c_std=0.0)
    counts = torch.arange(0, 32)
    up = _pulse(m, _g(32, G_MIN), 2.0, counts)[:, 0]
    down = _pulse(m, _g(32, G_MAX), -2.0, counts)[:, 0]
    # same A: depression from G_max mirrors potentiation from G_min
    assert torch.allclose(down, G_MAX + G_MIN - up, rtol=1e-10)
    assert torch.allclose(m.ltd_curve(counts), down, rtol=1e-10)
    # LTD with its own A (and its own P_max)
    m2 = NeuroSimLTPLTD(c2c_std=0.0, a_ltd=3.0, p_max_ltd=20.0)
    down2 = _pulse(m2, _g(32, G_MAX), -2.0, counts)[:, 0]
    b = (G_MAX - G_MIN) / (1 - math.exp(-20 / 3.0))
    expect = (G_MAX - b * (1 - torch.exp(-counts.double() / 3.0))).clamp(min=G_MIN)
    assert torch.allclose(down2, expect, rtol=1e-10)
    assert down2[20].item() == pytest.approx(G_MIN, rel=1e-9)


def test_c2c_std_scales_with_sqrt_n():
    m = NeuroSimLTPLTD()  # c2c_std = 0.005 of the range per pulse
    det = NeuroSimLTPLTD(c2c_std=0.0)
    n_cells = 200_000
    start = 3 * US
    sigma1 = 0.005 * (G_MAX - G_MIN)
    stds = {}
    for n in (1, 4, 9):
        noisy = _pulse(m, _g(n_cells, start), 2.0, n, seed=n)[:, 0]
        mean = _pulse(det, _g(1, start), 2.0, n)[0, 0]
        # the deterministic endpoint after 9 pulses is 2.1 µS (14 sigma) below G_max:
        # clipping is negligible (probability < 1e-40).
        assert (G_MAX - mean.item()) > 10 * sigma1 * math.sqrt(n)
        dev = noisy - mean
        stds[n] = dev.std().item()
        # SE of the std with 2e5 samples: 0.16 %; SE of the mean 0.2 % of sigma.
        assert stds[n] == pytest.approx(sigma1 * math.sqrt(n), rel=0.02)
        assert abs(dev.mean().item()) < 0.02 * sigma1 * math.sqrt(n)
    assert stds[9] / stds[1] == pytest.approx(3.0, rel=0.02)
    assert stds[4] / stds[1] == pytest.approx(2.0, rel=0.02)


def test_threshold_gates_pulses():
    m = NeuroSimLTPLTD()
    s = _g(10, 5 * US)
    for v in (0.0, 1.0, -1.0, 1.49, -1.49):
        assert torch.equal(_pulse(m, s, v, 5), s)
    assert not torch.equal(_pulse(m, s, 1.5, 1), s)


def test_d2d_spreads_apply():
    assert NeuroSimLTPLTD().sample_d2d((8, 8), _gen(1)) == {}  # NeuroSim default: no D2D
    m = NeuroSimLTPLTD(g_min_dtod=0.1, g_max_dtod=0.1, a_dtod=0.3, c2c_std=0.0)
    shape = (32, 32)
    d2d = m.sample_d2d(shape, _gen(5), dtype=F64)
    assert set(d2d) == {"g_min_s", "g_max_s", "a_ltp", "a_ltd"}
    assert torch.all(d2d["g_max_s"] > d2d["g_min_s"])
    s = m.initial_state(d2d, shape, _gen(6), dtype=F64)
    assert torch.equal(s[..., 0], d2d["g_min_s"])
    full = _pulse(m, s, 2.0, 200, d2d=d2d)
    assert torch.allclose(full[..., 0], d2d["g_max_s"])
    # one pulse from G_min: B_i (1 - e^{-1/A_i}) per device
    one = _pulse(m, s, 2.0, 1, d2d=d2d)[..., 0]
    a = d2d["a_ltp"]
    b = (d2d["g_max_s"] - d2d["g_min_s"]) / (1 - torch.exp(-31 / a))
    assert torch.allclose(one, d2d["g_min_s"] + b * (1 - torch.exp(-1 / a)), rtol=1e-10)


def test_ltp_and_ltd_cells_in_one_call():
    m = NeuroSimLTPLTD()
    s = _g(3, 5 * US)
    out = _pulse(m, s, torch.tensor([2.0, -2.0, 2.0], dtype=F64), torch.tensor([3, 3, 0]))
    # ~0.66 µS per pulse at 5 µS vs C2C noise 0.08 µS after 3 pulses
    assert out[0, 0] > s[0, 0] and out[1, 0] < s[1, 0] and out[2, 0] == s[2, 0]


def test_custom_curve_reaches_g_max_at_p_max():
    m = NeuroSimLTPLTD(g_min_s=1e-6, g_max_s=2e-5, p_max=64, a_ltp=12.5, a_ltd=8.0)
    assert m.ltp_curve(0.0).item() == 1e-6
    assert m.ltp_curve(64.0).item() == pytest.approx(2e-5)
    assert m.ltd_curve(64.0).item() == pytest.approx(1e-6)


def test_inverted_conductance_window_is_rejected():
    with pytest.raises(ConfigError, match="g_min_s"):
        build_device_model({"model": "neurosim", "g_min_s": 2e-5, "g_max_s": 1e-5})
