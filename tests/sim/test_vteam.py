"""VTEAM (Kvatinsky 2015): thresholds, polarity, closed-form pulse trains, the Kvatinsky
window at the bounds; the checks every device model shares are in test_device_contract.py."""

import math

import pytest
import torch

from memhil.devices import VTEAMDevice, build_device_model

F64 = torch.float64
EXACT = dict(
    r_on_dtod=0.0,
    r_off_dtod=0.0,
    v_on_dtod=0.0,
    v_off_dtod=0.0,
    k_on_dtod=0.0,
    k_off_dtod=0.0,
    dx_std=0.0,
)
K_ON, K_OFF = 10.0 / 3e-9, 5e-4 / 3e-9  # published rates over D, 1/s (x = w / D)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(**params) -> VTEAMDevice:
    return build_device_model({"model": "vteam", **params})


def pulse(m, s, d2d, v, width, count, seed=0):
    """Apply pulses given as Python floats/ints or tensors, broadcast to the state's cells."""
    shape = s.shape[:-1]

    def t(value, dtype):
        return torch.as_tensor(value, dtype=dtype).expand(shape).contiguous()

    return m.step(s, d2d, t(v, s.dtype), t(width, s.dtype), t(count, torch.int64), 0.0, gen(seed))


def cells(m, x0, n, dtype=F64):
    return m.sample_d2d((n,), gen(), dtype=dtype), torch.full((n, 1), float(x0), dtype=dtype)


def test_no_motion_below_thresholds():
    m = model()  # default D2D spreads: each cell has its own thresholds
    d2d, s = cells(m, 0.5, 2000)
    frac = torch.rand(2000, generator=gen(1), dtype=F64)
    v = torch.cat([frac[:1000] * d2d["v_on_v"][:1000], -frac[1000:] * d2d["v_off_v"][1000:]])
    v[0], v[1000] = d2d["v_on_v"][0], -d2d["v_off_v"][1000]  # exactly at threshold: no motion
    out = pulse(m, s, d2d, v, 1.0, 1000)
    assert torch.equal(out, s)


def test_moves_above_thresholds_in_the_direction_of_the_sign():
    m = model()
    d2d, s = cells(m, 0.5, 2)
    out = pulse(m, s, d2d, torch.tensor([0.205, -0.022], dtype=F64) * 1.1, 1e-7, 1)[:, 0]
    assert out[0] < 0.5 < out[1]  # positive: ON (x -> 0); negative: OFF (x -> 1)
    g0, g = m.conductance(s, d2d, 0.2, 0.0), m.conductance(out[:, None], d2d, 0.2, 0.0)
    assert g[0] > g0[0] and g[1] < g0[1]  # positive pulses raise G (memhil contract)


def test_single_pulse_rate_law():
    m = model(**EXACT)
    d2d, s = cells(m, 0.5, 2)
    v, w = torch.tensor([0.21, -0.03], dtype=F64), 1e-7
    dx = pulse(m, s, d2d, v, w, 1)[:, 0] - 0.5
    expect = torch.tensor(
        [-K_ON * (0.21 / 0.2 - 1) ** 3 * w, K_OFF * (0.03 / 0.02 - 1) * w], dtype=F64
    )
    assert torch.allclose(dx, expect, rtol=1e-12, atol=0)  # closed form: rounding only


def test_count_n_equals_n_single_pulses():
    m = model(**EXACT)
    d2d, s = cells(m, 0.6, 4)
    v = torch.tensor([0.21, 0.25, -0.03, -0.1], dtype=F64)
    once = pulse(m, s, d2d, v, 2e-8, 9)
    seq = s
    for _ in range(9):
        seq = pulse(m, seq, d2d, v, 2e-8, 1)
    assert torch.allclose(once, seq, rtol=0, atol=1e-12)  # float64 rounding only
    assert (once != s).all()


def test_published_constants_give_visible_unsaturated_1us_pulses():
    # With the MemTorch magnitudes some amplitude in +-1.5 V moves x by a visible but not
    # saturating amount in 1 us, in each direction.
    m = model(**EXACT)
    amps = torch.linspace(0.0, 1.5, 1501, dtype=F64)
    d2d, s = cells(m, 1.0, len(amps))
    dx_on = 1.0 - pulse(m, s, d2d, amps, 1e-6, 1)[:, 0]
    d2d, s = cells(m, 0.0, len(amps))
    dx_off = pulse(m, s, d2d, -amps, 1e-6, 1)[:, 0]
    for dx in (dx_on, dx_off):
        assert ((dx > 0.05) & (dx < 0.9)).any()


def test_c2c_sum_statistics_for_pulse_trains():
    # count pulses draw the sum of count C2C factors in closed form: mean n, std sqrt(n) s.
    n, s_rel, cells_n = 16, 0.05, 200_000
    m = model(**{**EXACT, "dx_std": s_rel})
    d2d, s = cells(m, 1.0, cells_n)
    w = 1e-9
    dx = 1.0 - pulse(m, s, d2d, 0.21, w, n)[:, 0]
    unit = K_ON * (0.21 / 0.2 - 1) ** 3 * w
    factor = dx / unit
    # 2e5 samples: standard errors ~0.01 % (mean) and ~0.2 % (std); 1 % / 3 % bounds.
    assert factor.mean().item() == pytest.approx(n, rel=1e-2)
    assert factor.std().item() == pytest.approx(math.sqrt(n) * s_rel, rel=3e-2)


def test_window_none_reaches_bounds_kvatinsky_stops_short():
    v_on, v_off = 0.21, -0.03  # ~0.4 and ~0.08 of the range per 1 us pulse
    none, kv = model(**EXACT), model(**EXACT, window="kvatinsky")
    d2d, s = cells(none, 1.0, 1)
    assert pulse(none, s, d2d, v_on, 1e-6, 50).item() == 0.0
    x_kv = pulse(kv, s, d2d, v_on, 1e-6, 50)
    assert 0.0 < x_kv.item() < 0.05  # stalls below a_on / D = 0.05 but above the bound
    # 50 more pulses, each worth 0.4 of the range unwindowed, creep < 1 % (double-exponential
    # window: the stall point moves only logarithmically with time).
    assert abs(pulse(kv, x_kv, d2d, v_on, 1e-6, 50).item() - x_kv.item()) < 1e-2

    d2d, s = cells(none, 0.0, 1)
    assert pulse(none, s, d2d, v_off, 1e-6, 200).item() == 1.0
    x_kv = pulse(kv, s, d2d, v_off, 1e-6, 200)
    assert 0.95 < x_kv.item() < 1.0


def test_kvatinsky_window_is_transparent_mid_range():
    none, kv = model(**EXACT), model(**EXACT, window="kvatinsky")
    d2d, s = cells(none, 0.5, 2)
    v = torch.tensor([0.21, -0.03], dtype=F64)
    a, b = pulse(none, s, d2d, v, 1e-7, 1), pulse(kv, s, d2d, v, 1e-7, 1)
    # f_on, f_off = 1 - O(exp(-22)) at x ~ 0.5; RK4 on a near-constant rate is exact.
    assert torch.allclose(a, b, rtol=0, atol=1e-9)


def test_linear_iv_and_range():
    m = model(**EXACT)
    d2d, _ = cells(m, 0.0, 3)
    s = torch.tensor([[0.0], [0.5], [1.0]], dtype=F64)
    expect = torch.tensor([1 / 50.0, 1 / 525.0, 1 / 1000.0], dtype=F64)  # 1/(R_on + dR x)
    assert torch.allclose(m.conductance(s, d2d, 0.2, 0.0), expect, rtol=1e-12, atol=0)
    assert m.conductance_range() == pytest.approx((1 / 1000.0, 1 / 50.0))  # siemens


def test_exponential_iv():
    m = model(**EXACT, iv="exponential")
    d2d, _ = cells(m, 0.0, 3)
    s = torch.tensor([[0.0], [0.5], [1.0]], dtype=F64)
    g = m.conductance(s, d2d, 0.2, 0.0)
    expect = torch.tensor([1 / 50.0, 1 / math.sqrt(50.0 * 1000.0), 1 / 1000.0], dtype=F64)
    assert torch.allclose(g, expect, rtol=1e-12, atol=0)


@pytest.mark.parametrize("iv", ["linear", "exponential"])
def test_set_under_compliance_stops_where_the_source_reaches_threshold(iv):
    """Quasi-static compliance: |v| G <= I_c holds through the pulse, so the SET stops at
    G = I_c / v_on (the voltage left across the cell falls to the threshold); a long SET
    without compliance goes to R_on. Exact model (no spread): closed form to 1e-9."""
    from memhil.backends.sim import SimBackend

    sim = SimBackend(
        {
            "tiles": 1,
            "rows": 2,
            "cols": 3,
            "dtype": "float64",
            "device": {"model": "vteam", "iv": iv, **EXACT},
            "limits": {"compliance_max_a": 0.1, "compliance_default_a": 0.1, "energy_max_j": None},
        }
    )
    g0 = sim.read_conductance()
    ic = 2e-4
    v_on = sim.model.p.v_on_v
    assert float(g0.max()) * 0.5 > ic  # the pulse starts in compliance: V is lowered at once
    sim.pulse(None, 0.5, 1e-3, compliance_a=ic)  # far longer than a full SET takes
    torch.testing.assert_close(
        sim.read_conductance(), torch.full_like(g0, ic / v_on), rtol=1e-9, atol=0.0
    )
    sim.pulse(None, 0.5, 1e-3)  # a compliance (0.1 A) that cannot bind: all the way to R_on
    torch.testing.assert_close(
        sim.read_conductance(), torch.full_like(g0, 1 / sim.model.p.r_on_ohm), rtol=1e-9, atol=0.0
    )
