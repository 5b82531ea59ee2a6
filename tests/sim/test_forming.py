"""Stochastic-forming RRAM: formed fraction from the V_bd CDF, log-normal states, compliance.

The checks every device model shares are in test_device_contract.py."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from memhil.devices.forming import FormingRRAM

US = 1e-6
SHAPE = (256, 256)
N = SHAPE[0] * SHAPE[1]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _chip(model: FormingRRAM, seed: int = 0, shape=SHAPE, dtype=torch.float64):
    d2d = model.sample_d2d(shape, _gen(seed), dtype=dtype)
    return d2d, model.initial_state(d2d, shape, _gen(seed + 1), dtype=dtype)


def _pulse(model, state, d2d, v, *, count=1, width_s=1e-6, compliance_a=None, seed=5):
    shape = state.shape[:-1]
    full = lambda x: torch.full(shape, x, dtype=state.dtype)
    comp = None if compliance_a is None else full(compliance_a)
    return model.step(
        state,
        d2d,
        full(v),
        full(width_s),
        torch.full(shape, count, dtype=torch.int64),
        1.0,
        _gen(seed),
        comp,
    )


@pytest.mark.parametrize("f", [0.1, 0.5, 0.9])
def test_formed_fraction_hits_target(f):
    m = FormingRRAM()
    d2d, s = _chip(m, seed=int(f * 100))
    v = m.forming_voltage_for_fraction(f)
    out = _pulse(m, s, d2d, v)
    frac = out[..., 1].mean().item()
    # Each cell forms independently with probability f: binomial, 4 sigma tolerance.
    assert abs(frac - f) <= 4 * math.sqrt(f * (1 - f) / N)
    # the sparsity helper is the same CDF read from the other side
    assert m.forming_voltage_for_sparsity(1 - f) == pytest.approx(v, abs=1e-12)
    assert m.formed_fraction_at(v) == pytest.approx(f, abs=1e-12)


def test_forming_voltage_cdf_values():
    m = FormingRRAM(v_bd_mean_v=2.2, v_bd_sigma_v=0.3)
    assert m.forming_voltage_for_fraction(0.5) == pytest.approx(2.2)
    assert m.forming_voltage_for_fraction(0.8413447460685429) == pytest.approx(2.5, abs=1e-9)
    t = m.forming_voltage_for_fraction(torch.tensor([0.5, 0.1], dtype=torch.float64))
    assert torch.allclose(
        t, torch.tensor([2.2, 2.2 - 0.3 * 1.2815515655446004], dtype=torch.float64)
    )
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            m.forming_voltage_for_fraction(bad)


def test_formed_conductance_is_lognormal_and_unformed_stay_pristine():
    m = FormingRRAM()
    d2d, s = _chip(m, seed=3)
    out = _pulse(m, s, d2d, m.forming_voltage_for_fraction(0.5), compliance_a=1.0)
    formed = out[..., 1] > 0.5
    ln_g = torch.log(out[..., 0][formed]).numpy()
    # KS against N(ln 20 µS, 0.5) for ~32k samples; with the fixed seed the p-value is
    # deterministic, and a wrong median or sigma (e.g. 5 % off) gives p << 1e-3.
    res = scipy.stats.kstest(ln_g, "norm", args=(math.log(20 * US), 0.5))
    assert res.pvalue > 1e-3
    # moments: SE of the mean 0.5/sqrt(32k) = 0.003, 4 SE tolerance; std SE 0.4 %.
    assert ln_g.mean() == pytest.approx(math.log(20 * US), abs=4 * 0.5 / math.sqrt(len(ln_g)))
    assert ln_g.std() == pytest.approx(0.5, rel=0.02)
    # unformed cells keep exactly the pristine conductance
    assert torch.all(out[..., 0][~formed] == 0.1 * US)


def test_compliance_caps_formed_conductance():
    m = FormingRRAM()
    d2d, s = _chip(m, seed=4)
    v = 2.5
    comp = 30e-6  # cap = 30 µA / 2.5 V = 12 µS, below the 20 µS median
    out = _pulse(m, s, d2d, v, compliance_a=comp)
    formed = out[..., 1] > 0.5
    g = out[..., 0][formed]
    cap = comp / v
    assert torch.all(g <= cap * (1 + 1e-12))
    at_cap = (g >= cap * (1 - 1e-12)).double().mean().item()
    expect = 1 - scipy.stats.norm.cdf((math.log(cap) - math.log(20 * US)) / 0.5)
    # ~55k formed cells: binomial SE 0.2 %; 4 SE.
    assert at_cap == pytest.approx(expect, abs=4 * math.sqrt(expect * (1 - expect) / g.numel()))


def test_reset_and_set_cycle_distributions():
    m = FormingRRAM()
    d2d, s = _chip(m, seed=6)
    formed = _pulse(m, s, d2d, 2.9, compliance_a=1.0, seed=1)  # 4.5 sigma above mu: all form
    assert torch.all(formed[..., 1] == 1.0)
    reset = _pulse(m, formed, d2d, -1.2, seed=2)
    ln_r = torch.log(reset[..., 0]).flatten()
    # 65k samples: SE of the mean of ln G = 0.002; 4 SE. std SE 0.3 %.
    assert ln_r.mean().item() == pytest.approx(math.log(1 * US), abs=4 * 0.5 / math.sqrt(N))
    assert ln_r.std().item() == pytest.approx(0.5, rel=0.02)
    assert torch.all(reset[..., 1] == 1.0)
    # SET below the forming voltage re-forms formed cells: a fresh LRS draw, not the old G
    set_ = _pulse(m, reset, d2d, 1.2, compliance_a=1.0, seed=3)
    ln_s = torch.log(set_[..., 0]).flatten()
    assert ln_s.mean().item() == pytest.approx(math.log(20 * US), abs=4 * 0.5 / math.sqrt(N))
    assert ln_s.std().item() == pytest.approx(0.5, rel=0.02)
    corr = torch.corrcoef(torch.stack([ln_s, torch.log(formed[..., 0]).flatten()]))[0, 1]
    assert abs(corr.item()) < 0.02  # independent draws: |r| ~ 1/sqrt(N) = 0.004
    # pulses below the SET/RESET thresholds do nothing
    assert torch.equal(_pulse(m, set_, d2d, 0.5), set_)
    assert torch.equal(_pulse(m, set_, d2d, -0.5), set_)


def test_pristine_cells_ignore_set_and_reset_level_pulses():
    m = FormingRRAM()
    d2d, s = _chip(m, seed=7)
    # A SET-level pulse forms exactly the (rare, 4 sigma) cells whose V_bd lies below it.
    out = _pulse(m, s, d2d, 1.2, compliance_a=1.0)
    assert torch.equal(out[..., 1] > 0.5, d2d["v_bd_v"] <= 1.2)
    weak = d2d["v_bd_v"] > 1.2
    assert torch.equal(out[weak], s[weak])
    assert torch.equal(_pulse(m, s, d2d, -2.9), s)  # negative: no forming, no RESET
    assert torch.all(s[..., 0] == 0.1 * US) and torch.all(s[..., 1] == 0.0)


def test_width_dependent_breakdown():
    m = FormingRRAM(v_bd_per_decade_v=0.1, width_ref_s=1e-6)
    d2d, s = _chip(m, seed=8)
    # 100x the reference width lowers V_bd by 0.2 V: a pulse at mu - 0.2 forms half.
    out = _pulse(m, s, d2d, 1.8, width_s=100e-6)
    assert abs(out[..., 1].mean().item() - 0.5) <= 4 * math.sqrt(0.25 / N)
    # total stress time counts: 10 pulses of 10 µs = 100 µs
    out = _pulse(m, s, d2d, 1.8, width_s=10e-6, count=10)
    assert abs(out[..., 1].mean().item() - 0.5) <= 4 * math.sqrt(0.25 / N)
    assert m.forming_voltage_for_fraction(0.5, width_s=100e-6) == pytest.approx(1.8)
    # at the reference width nothing changes
    assert m.forming_voltage_for_fraction(0.5, width_s=1e-6) == pytest.approx(2.0)


def test_interface_basics():
    m = FormingRRAM()
    assert m.conductance_range() == (0.1e-6, 20e-6)
    # no read noise of its own: the simulator's read path adds it (ReadPathConfig)
    assert m.read_noise_std(torch.ones(3), {}) is None
    d2d, s = _chip(m, shape=(4, 4), dtype=torch.float32)
    assert torch.equal(m.conductance(s, d2d, 0.2, 0.0), s[..., 0])


def test_breakdown_voltages_are_normal():
    v_bd = FormingRRAM().sample_d2d(SHAPE, _gen(1), dtype=torch.float64)["v_bd_v"]
    # N(2, 0.2) over 65k cells: SE of the mean 0.8 mV (4 SE = 3 mV), of the std 0.3 %.
    assert v_bd.mean().item() == pytest.approx(2.0, abs=4 * 0.2 / math.sqrt(N))
    assert v_bd.std().item() == pytest.approx(0.2, rel=0.02)


def test_wear_raises_hrs_by_the_closed_form():
    """No spread: the HRS after the (n+1)-th RESET is exactly
    g_reset * W0^(1 - exp(-(n / wear_cycles)^shape)), W0 = 20 µS / 1 µS; LRS is unworn."""
    import math

    from memhil.backends.sim import SimBackend

    sim = SimBackend(
        {
            "tiles": 1,
            "rows": 1,
            "cols": 2,
            "dtype": "float64",
            "device": {
                "model": "rram_forming",
                "v_bd_sigma_v": 0.0,
                "g_formed_log_sigma": 0.0,
                "g_reset_log_sigma": 0.0,
                "wear_cycles": 10.0,
                "wear_shape": 2.0,
            },
        }
    )
    sim.pulse(None, 3.0, 1e-6)  # form
    for n in range(25):
        sim.pulse(None, -1.2, 1e-6)
        want = 1e-6 * 20.0 ** (1.0 - math.exp(-((n / 10.0) ** 2)))
        assert torch.allclose(
            sim.read_conductance(),
            torch.full((1, 1, 2), want, dtype=torch.float64),
            rtol=1e-9,
            atol=0.0,
        ), n
        sim.pulse(None, 1.2, 1e-6)
        assert torch.allclose(
            sim.read_conductance(),
            torch.full((1, 1, 2), 20e-6, dtype=torch.float64),
            rtol=1e-9,
            atol=0.0,
        )
