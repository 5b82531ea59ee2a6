"""Nandakumar PCM model: SET statistics, P decay, RESET, drift, read noise, gating.

The checks every device model shares are in test_device_contract.py."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from memhil.devices.pcm import PCMDevice

US = 1e-6
A = 2.6
F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _state(n: int, g_s: float, p: float, t_p: float = 0.0, dtype=F64) -> torch.Tensor:
    s = torch.empty((n, 3), dtype=dtype)
    s[:, 0], s[:, 1], s[:, 2] = g_s, p, t_p
    return s


def _pulse(model, state, v, count, t_s=1.0, seed=1, d2d=None):
    shape = state.shape[:-1]
    return model.step(
        state,
        d2d or {},
        torch.full(shape, v, dtype=state.dtype),
        torch.full(shape, 1e-7, dtype=state.dtype),
        torch.full(shape, count, dtype=torch.int64),
        t_s,
        _gen(seed),
    )


def test_set_step_mean_and_spread_match_formulas():
    # G = 5 µS, P = 0.1 before the pulse (0.068 after the decay): mu = 0.555 µS,
    # sigma = 0.861 µS; the clip bounds 0.1 / 12 µS lie 5.7 / 7.5 sigma away, so clipping
    # is negligible (< 1e-8 of the samples).
    m = PCMDevice()
    n = 1_000_000
    p_after = 0.1 * math.exp(-1 / A)
    out = _pulse(m, _state(n, 5 * US, 0.1), 1.0, 1)
    dg = (out[:, 0] - 5 * US) / US
    mu = -0.084 * 5 + 0.880 + 1.40 * p_after
    sigma = 0.091 * 5 + 0.260 + 2.15 * p_after
    # Standard errors with 1e6 samples: mean 0.16 %, std 0.07 % (relative); 2 % is > 10 SE.
    assert dg.mean().item() == pytest.approx(mu, rel=0.02)
    assert dg.std().item() == pytest.approx(sigma, rel=0.02)
    assert torch.allclose(out[:, 1], torch.full((n,), p_after, dtype=F64))
    assert torch.all(out[:, 2] == 1.0)
    # the helper methods state the same law
    assert m.mean_step(5 * US, p_after) == pytest.approx(mu * US, rel=1e-12)
    assert m.step_std(5 * US, p_after) == pytest.approx(sigma * US, rel=1e-12)


def test_first_pulse_after_reset_matches_clipped_gaussian():
    # From G = G_min = 0.1 µS with P = 1 (just RESET): P -> e^{-1/2.6}, mu = 1.82 µS,
    # sigma = 1.73 µS, and G + dG is clipped at 0.1 µS, i.e. dG at 0 (15 % of the samples;
    # the upper clip at 12 µS is 5.8 sigma away and negligible). Compare with the exact
    # moments of Y = max(X, 0), X ~ N(mu, sigma^2).
    m = PCMDevice()
    n = 1_000_000
    p = math.exp(-1 / A)
    mu = -0.084 * 0.1 + 0.880 + 1.40 * p
    sigma = 0.091 * 0.1 + 0.260 + 2.15 * p
    assert mu == pytest.approx(1.82, abs=0.01) and sigma == pytest.approx(1.73, abs=0.01)
    a = mu / sigma
    nd = NormalDist()
    mean_y = mu * nd.cdf(a) + sigma * nd.pdf(a)
    ey2 = (mu * mu + sigma * sigma) * nd.cdf(a) + mu * sigma * nd.pdf(a)
    std_y = math.sqrt(ey2 - mean_y**2)
    out = _pulse(m, _state(n, 0.1 * US, 1.0), 1.0, 1)
    dg = (out[:, 0] - 0.1 * US) / US
    # SE with 1e6 samples ~0.1 %; 2 % tolerance.
    assert dg.mean().item() == pytest.approx(mean_y, rel=0.02)
    assert dg.std().item() == pytest.approx(std_y, rel=0.02)
    assert (dg == 0).double().mean().item() == pytest.approx(nd.cdf(-a), rel=0.02)


def test_p_decays_exponentially_with_pulse_count():
    m = PCMDevice()
    s = _state(1000, 0.1 * US, 1.0)
    seq = s
    for k in range(1, 9):
        seq = _pulse(m, seq, 1.0, 1, seed=k)
        once = _pulse(m, s, 1.0, k)
        expect = math.exp(-k / A)
        # P is deterministic: only float64 rounding separates it from e^{-k/a}.
        assert torch.allclose(seq[:, 1], torch.full((1000,), expect, dtype=F64), rtol=1e-12)
        assert torch.allclose(once[:, 1], torch.full((1000,), expect, dtype=F64), rtol=1e-12)


def test_reset_distribution_and_state():
    m = PCMDevice()
    n = 1_000_000
    out = _pulse(m, _state(n, 8 * US, 0.01, t_p=3.0), -1.0, 1, t_s=50.0)
    g = out[:, 0] / US
    # N(0.1, 0.01^2) µS; the 0.01 µS floor is 9 sigma away. SE: mean 1e-5 µS, std 0.07 %.
    assert g.mean().item() == pytest.approx(0.1, rel=0.005)
    assert g.std().item() == pytest.approx(0.01, rel=0.02)
    assert g.min().item() >= 0.01
    assert torch.all(out[:, 1] == 1.0) and torch.all(out[:, 2] == 50.0)
    # several RESETs act like one
    out3 = _pulse(m, _state(n, 8 * US, 0.01), -1.0, 3)
    assert out3[:, 0].mean().item() / US == pytest.approx(0.1, rel=0.005)


def test_initial_state_is_reset_like():
    m = PCMDevice()
    s = m.initial_state({}, (256, 256), _gen(), dtype=F64)
    assert s.shape == (256, 256, 3)
    g = s[..., 0] / US
    # 65536 samples: SE of the mean 4e-5 µS, of the std 0.3 %.
    assert g.mean().item() == pytest.approx(0.1, rel=0.01)
    assert g.std().item() == pytest.approx(0.01, rel=0.03)
    assert torch.all(s[..., 1] == 1.0)


def test_drift_power_law_exact():
    m = PCMDevice()
    s = _state(4, 5 * US, 0.3, t_p=10.0)
    t0 = 38.6
    dts = torch.tensor([t0, 10 * t0, 100 * t0, 1e4 * t0], dtype=F64)
    g = torch.stack([m.conductance(s, {}, 0.2, 10.0 + dt.item())[0] for dt in dts])
    expect = 5 * US * (dts / t0) ** -0.04
    assert torch.allclose(g, expect, rtol=1e-12)
    slope = torch.diff(torch.log(g)) / torch.diff(torch.log(dts))
    assert torch.allclose(slope, torch.full_like(slope, -0.04), atol=1e-12)
    # before T0 (and right after programming) the fitted first-read value is returned
    assert torch.allclose(m.conductance(s, {}, 0.2, 10.0 + 5.0), s[:, 0])
    assert torch.allclose(m.conductance(s, {}, 0.2, 10.0), s[:, 0])


def test_drift_with_per_device_exponent():
    m = PCMDevice(nu_dtod=0.3)
    shape = (64, 64)
    d2d = m.sample_d2d(shape, _gen(3), dtype=F64)
    assert set(d2d) == {"nu"} and d2d["nu"].shape == shape and d2d["nu"].std() > 0
    s = torch.zeros((*shape, 3), dtype=F64)
    s[..., 0], s[..., 2] = 4 * US, 0.0
    g = m.conductance(s, d2d, 0.2, 3600.0)
    assert torch.allclose(g, 4 * US * (3600.0 / 38.6) ** -d2d["nu"], rtol=1e-12)


def test_read_noise_std_formula():
    m = PCMDevice()
    g = torch.tensor([0.1, 1.0, 5.0, 12.0], dtype=F64) * US
    assert torch.allclose(m.read_noise_std(g, {}), (0.03 * g / US + 0.13) * US, rtol=1e-12)


@pytest.mark.parametrize("v", [0.0, 0.3, -0.3, 0.49, -0.49])
def test_pulses_below_thresholds_do_nothing(v):
    m = PCMDevice()
    s = _state(100, 3 * US, 0.5, t_p=7.0)
    out = _pulse(m, s, v, 3, t_s=99.0)
    assert torch.equal(out, s)


def test_count_n_equals_n_sequential_pulses_in_distribution():
    m = PCMDevice()
    n = 200_000
    s = _state(n, 0.1 * US, 1.0)
    once = _pulse(m, s, 1.0, 5, seed=11)
    seq = s
    for k in range(5):
        seq = _pulse(m, seq, 1.0, 1, seed=100 + k)
    g1, g2 = once[:, 0] / US, seq[:, 0] / US
    # two independent samples of 2e5: SE of the mean difference ~0.15 %, std ~0.2 %.
    assert g1.mean().item() == pytest.approx(g2.mean().item(), rel=0.02)
    assert g1.std().item() == pytest.approx(g2.std().item(), rel=0.02)
    assert torch.allclose(once[:, 1], seq[:, 1], rtol=1e-12)


def test_mixed_counts_and_polarities_in_one_call():
    # Heterogeneous counts take the gathered/sorted path; each count block must match the
    # uniform-count fast path in distribution, idle cells stay bit-identical, RESET cells
    # get the RESET distribution.
    m = PCMDevice()
    n = 100_000
    counts = [0, 1, 2, 4]
    s = _state(len(counts) * n + n, 0.1 * US, 1.0, t_p=2.0)
    cnt = torch.cat([torch.full((n,), c) for c in counts] + [torch.full((n,), 2)])
    v = torch.cat([torch.full((len(counts) * n,), 1.0), torch.full((n,), -1.0)]).double()
    out = m.step(s, {}, v, torch.full_like(v, 1e-7), cnt, 9.0, _gen(5))
    assert torch.equal(out[:n], s[:n])
    for i, c in enumerate(counts[1:], start=1):
        block = out[i * n : (i + 1) * n]
        ref = _pulse(m, _state(n, 0.1 * US, 1.0), 1.0, c, seed=40 + c)
        # independent samples of 1e5: SE of the mean difference < 0.5 %.
        assert block[:, 0].mean().item() == pytest.approx(ref[:, 0].mean().item(), rel=0.02)
        assert block[:, 0].std().item() == pytest.approx(ref[:, 0].std().item(), rel=0.02)
        assert torch.allclose(block[:, 1], ref[:, 1], rtol=1e-12)
        assert torch.all(block[:, 2] == 9.0)
    rs = out[len(counts) * n :]
    assert rs[:, 0].mean().item() / US == pytest.approx(0.1, rel=0.01)
    assert torch.all(rs[:, 1] == 1.0)


def test_set_respects_per_device_g_max():
    m = PCMDevice(g_max_dtod=0.2, g_max_s=4e-6)
    shape = (32, 32)
    d2d = m.sample_d2d(shape, _gen(7))
    assert set(d2d) == {"g_max_s"}
    s = m.initial_state(d2d, shape, _gen(8))
    v = torch.ones(shape)
    out = m.step(s, d2d, v, v * 1e-7, torch.full(shape, 30), 1.0, _gen(9))
    assert torch.all(out[..., 0] <= d2d["g_max_s"])
    assert torch.all(out[..., 0] >= 0.1e-6)
    # most cells reach their ceiling after 30 pulses (the mean step is positive below 10 µS)
    assert (out[..., 0] == d2d["g_max_s"]).double().mean() > 0.3


def test_pulses_for_follows_the_cubic():
    m = PCMDevice()

    def cubic(g_us):
        return 0.027 * g_us**3 - 0.15 * g_us**2 + 0.81 * g_us

    g_from = torch.tensor([0.1, 0.1, 2.0, 5.0, 8.0, 6.0])
    g_to = torch.tensor([1.0, 5.0, 6.0, 10.0, 12.0, 2.0])
    n = m.pulses_for(g_from * US, g_to * US)
    expect = [
        max(0, math.floor(cubic(t) - cubic(f))) for f, t in zip(g_from.tolist(), g_to.tolist())
    ]
    assert n.dtype == torch.int64 and n.tolist() == expect
    assert m.mean_pulse_curve(5 * US).item() == pytest.approx(cubic(5.0), rel=1e-12)
    assert m.p.granularity_s == pytest.approx(0.75e-6)


def test_set_stays_in_the_clip_window_and_flags():
    m = PCMDevice()
    shape = (16, 16)
    s = m.initial_state({}, shape, _gen())
    out = m.step(
        s, {}, torch.ones(shape), torch.full(shape, 1e-7), torch.full(shape, 3), 5.0, _gen(1)
    )
    g = m.conductance(out, {}, 0.2, 5.0)
    assert torch.all((g >= 0.1e-6) & (g <= 12e-6))
    assert m.conductance_range() == (0.1e-6, 12e-6)
    assert m.bipolar is False and m.drifts is True
    # the published sigma already lumps D2D with C2C: no per-device draws by default
    assert m.sample_d2d(shape, _gen(2)) == {}
