"""SimBackend: read path (DAC/ADC, noise modes, faults, IR drop), clock, config, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.backends.sim import SimBackend, ir_drop
from memhil.backends.sim.read_path import quantize_symmetric
from memhil.core.errors import ConfigError, LimitError


def quiet_sim(**kw) -> SimBackend:
    """A NeuroSim-device array with no read noise, so reads are exact."""
    cfg = {
        "tiles": 2,
        "rows": 16,
        "cols": 8,
        "seed": 3,
        "device": {"model": "neurosim", "c2c_std": 0.0},
    }
    cfg.update(kw)
    sim = SimBackend(cfg)
    counts = torch.randint(0, 20, sim.shape, generator=torch.Generator().manual_seed(0))
    sim.pulse(None, 2.0, 80e-9, counts)
    return sim


def test_quantize_symmetric_grid_and_clip():
    x = torch.tensor([-2.0, -1.0, -0.26, 0.0, 0.24, 0.26, 1.0, 5.0])
    q = quantize_symmetric(x, bits=3, full_scale=1.0)  # 3 levels per sign: lsb 1/3
    lsb = 1 / 3
    assert torch.allclose(q, torch.tensor([-3, -3, -1, 0, 1, 1, 3, 3]) * lsb)


def test_ideal_read_path_is_exact_matmul():
    sim = quiet_sim()
    v = torch.rand(5, 16) * 0.2
    g = sim.true_conductance()
    assert torch.allclose(sim.mvm(v), v @ g, rtol=1e-5, atol=0)
    assert torch.allclose(
        sim.mvm_t(torch.ones(3, 8) * 0.1), 0.1 * torch.ones(3, 8) @ g.transpose(-1, -2), rtol=1e-5
    )
    assert torch.equal(sim.read_conductance(), g)


def test_adc_output_lies_on_its_grid_and_clips():
    sim = quiet_sim(read={"adc_bits": 6, "adc_range_a": 2e-6})
    i = sim.mvm(torch.rand(64, 16) * 0.2)
    lsb = 2e-6 / 31
    steps = i / lsb
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert float(i.abs().max()) <= 2e-6 * (1 + 1e-6)


def test_dac_quantizes_inputs():
    sim = quiet_sim(read={"dac_bits": 4, "dac_range_v": 0.2})  # lsb 0.2/7 V
    v = torch.full((1, 16), 0.05)
    g = sim.true_conductance()
    expected = torch.full((1, 16), round(0.05 / (0.2 / 7)) * 0.2 / 7) @ g
    assert torch.allclose(sim.mvm(v), expected, rtol=1e-5)


@pytest.mark.parametrize("mode", ["per_read", "per_sample"])
def test_read_noise_has_the_configured_std(mode):
    # relative read noise 5 %: each output's std is 0.05 * sqrt(sum_j v_j^2 G_j^2)
    sim = quiet_sim(read={"read_noise_rel": 0.05, "noise_mode": mode}, tiles=1)
    g = sim.true_conductance()[0]
    v = torch.full((1, 16), 0.1)
    samples = torch.stack([sim.mvm(v, tile=0)[0] for _ in range(4000)])
    expected_std = 0.05 * torch.sqrt((v[0, :, None] ** 2 * g**2).sum(0))
    # 4000 samples: std estimate has relative s.e. 1/sqrt(2*4000) ~ 1.1 %; allow 5 %
    assert torch.allclose(samples.std(0), expected_std, rtol=0.05)
    assert torch.allclose(samples.mean(0), v[0] @ g, rtol=0.01)


def test_per_read_noise_is_shared_within_a_batch_and_per_sample_is_not():
    same = torch.full((2, 16), 0.1)
    per_read = quiet_sim(read={"read_noise_rel": 0.05})
    i = per_read.mvm(same)
    assert torch.equal(i[:, 0], i[:, 1])
    per_sample = quiet_sim(read={"read_noise_rel": 0.05, "noise_mode": "per_sample"})
    i = per_sample.mvm(same)
    assert not torch.equal(i[:, 0], i[:, 1])


def test_output_noise_is_additive():
    sim = quiet_sim(read={"output_noise_a": 1e-7}, tiles=1)
    v = torch.zeros(20000, 16)
    i = sim.mvm(v, tile=0)
    # 20000*8 samples: relative s.e. of the std ~ 0.2 %
    assert abs(float(i.std()) - 1e-7) < 0.01e-7


def test_stuck_at_faults_fraction_and_behaviour():
    sim = SimBackend(
        {
            "rows": 128,
            "cols": 128,
            "device": {"model": "neurosim", "c2c_std": 0.0},
            "faults": {"stuck_on_fraction": 0.05, "stuck_off_fraction": 0.1},
            "seed": 1,
        }
    )
    n = 128 * 128
    # binomial s.d. of the fraction: sqrt(p(1-p)/n) ~ 0.0017 (on), 0.0023 (off); allow 4 s.d.
    assert abs(float(sim.stuck_on.float().mean()) - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n)
    assert abs(float(sim.stuck_off.float().mean()) - 0.10) < 4 * math.sqrt(0.10 * 0.90 / n)
    assert not (sim.stuck_on & sim.stuck_off).any()
    g_min, g_max = sim.model.conductance_range()
    g = sim.read_conductance()
    assert torch.allclose(g[sim.stuck_on], torch.tensor(g_max, dtype=g.dtype))
    sim.pulse(None, 2.0, 80e-9, 10)
    g2 = sim.read_conductance()
    assert torch.allclose(g2[sim.stuck_off], torch.tensor(g_min, dtype=g.dtype))
    healthy = ~(sim.stuck_on | sim.stuck_off)
    assert (g2[healthy] > g[healthy]).all()


def test_injected_stuck_cells():
    sim = quiet_sim()
    mask = torch.zeros(sim.shape, dtype=torch.bool)
    mask[1, 2, 3] = True
    sim.inject_stuck(off=mask)
    assert float(sim.read_conductance()[1, 2, 3]) == pytest.approx(sim.model.conductance_range()[0])


@pytest.mark.parametrize("mode", ["exact", "first_order"])
def test_ir_drop_read_path_uses_the_line_model(mode):
    sim = quiet_sim(read={"ir_drop": mode, "r_wire_ohm": 20.0, "ir_drop_iterations": 2})
    v = torch.rand(4, 16) * 0.2
    g = sim.true_conductance()
    expected = (
        ir_drop.solve_exact(g, v.expand(2, 4, 16), 20.0).float()
        if mode == "exact"
        else ir_drop.first_order(g, v.expand(2, 4, 16), 20.0, iterations=2)
    )
    i = sim.mvm(v)
    assert torch.allclose(i, expected, rtol=1e-4)
    assert i.abs().sum() < (v @ g).abs().sum()  # line resistance only loses current


def test_compliance_caps_the_pulse_voltage():
    # at 1 nA compliance a 2 V pulse on a ~uS device is capped far below the threshold
    sim = quiet_sim(tiles=1)
    g0 = sim.true_conductance()
    sim.pulse(None, 2.0, 80e-9, 5, compliance_a=1e-9)
    assert torch.equal(sim.true_conductance(), g0)
    sim.pulse(None, 2.0, 80e-9, 5, compliance_a=1e-3)
    assert (sim.true_conductance() > g0).all()


def test_clock_is_charged_for_reads_and_parallel_pulses():
    sim = quiet_sim(timing={"t_read_s": 1e-6, "pulse_gap_s": 1e-6})
    t0 = sim.clock.now()
    sim.mvm(torch.zeros(10, 16))
    assert sim.clock.now() - t0 == pytest.approx(10e-6)
    t1 = sim.clock.now()
    counts = torch.zeros(sim.shape, dtype=torch.int64)
    counts[0, 0, 0], counts[1, 3, 3] = 3, 7
    sim.pulse(None, 2.0, 1e-6, counts)  # cells pulse in parallel: the longest train counts
    assert sim.clock.now() - t1 == pytest.approx(7 * 2e-6)


def test_drift_advances_with_the_virtual_clock():
    sim = SimBackend({"rows": 8, "cols": 8, "device": "pcm", "seed": 0})
    sim.pulse(None, 1.0, 100e-9, 5)
    sim.wait(100.0)
    g1 = sim.true_conductance()
    sim.wait(10_000.0)
    g2 = sim.true_conductance()
    assert (g2 < g1).all()


def test_same_seed_same_chip_and_history():
    def run(seed):
        sim = SimBackend({"rows": 8, "cols": 8, "device": "pcm", "seed": seed})
        sim.pulse(None, 1.0, 100e-9, 3)
        return sim.read_conductance()

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_config_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "chip.yaml"
    bad.write_text("rows: 8\ncols: 8\nread:\n  adc_bits: 40\n")
    with pytest.raises(ConfigError) as err:
        SimBackend(bad)
    assert str(bad) in str(err.value) and "read.adc_bits" in str(err.value)
    bad.write_text("rows: 8\ncolumns: 8\n")
    with pytest.raises(ConfigError, match="columns"):
        SimBackend(bad)
    bad.write_text("rows: 8\ndevice: {model: nosuchdevice}\n")
    with pytest.raises(ConfigError, match="nosuchdevice"):
        SimBackend(bad)
    with pytest.raises(ConfigError, match="rows"):
        SimBackend({"rows": "many"})


def test_yaml_chip_with_device_file(tmp_path):
    dev = tmp_path / "fitted.yaml"
    dev.write_text("model: neurosim\ng_max_s: 2.0e-5\n")
    chip = tmp_path / "chip.yaml"
    chip.write_text(f"rows: 4\ncols: 4\ndevice: {dev}\nlimits:\n  v_pulse_max_v: 2.5\n")
    sim = SimBackend(chip)
    assert sim.model.conductance_range()[1] == pytest.approx(2e-5)
    assert sim.limits.v_pulse_max_v == 2.5
    with pytest.raises(LimitError, match="2.5"):
        sim.pulse(None, 3.0, 80e-9)


def test_energy_limit_is_checked_at_worst_case_compliance():
    sim = SimBackend({"rows": 4, "cols": 4, "device": "neurosim", "limits": {"energy_max_j": 1e-9}})
    # 2 V * 1 mA * 80 ns * 10 pulses = 1.6e-9 J > 1e-9 J
    with pytest.raises(LimitError, match="energy"):
        sim.pulse(None, 2.0, 80e-9, 10)
    sim.pulse(None, 2.0, 80e-9, 5)  # 0.8e-9 J is allowed


def test_drift_cache_error_is_bounded_by_the_refresh_tolerance():
    # cached conductances may lag the clock by drift_refresh_rel of the time since the
    # last write: relative error <= nu * drift_refresh_rel (= 4e-5 here)
    sim = SimBackend({"rows": 8, "cols": 8, "device": "pcm", "seed": 0})
    sim.pulse(None, 1.0, 100e-9, 5)
    sim.wait(1000.0)
    for _ in range(50):
        sim.mvm(torch.zeros(1000, 8))  # 1 ms of reads each
        exact = sim.model.conductance(sim.state, sim.d2d, sim.config.read.v_read, sim.clock.now())
        cached = sim.true_conductance()
        assert torch.allclose(cached, exact, rtol=sim.model.p.nu * 1e-3 * 1.01, atol=0)


def test_compliance_is_re_evaluated_every_pulse_of_a_train():
    # VTEAM ON state is 20 mS: at 0.21 V it would draw 4.2 mA. With 1 mA compliance the
    # source drops the voltage below the 0.2 V ON threshold once G > 1 mA / 0.2 V = 5 mS,
    # so a long train of small SET steps (~0.4 % of the state each) stalls there. The cap
    # acts per pulse: a single pulse that switches the device fully is not limited.
    device = {"model": "vteam", "dx_std": 0.0, "v_on_dtod": 0.0}
    sim = SimBackend({"rows": 4, "cols": 4, "device": device, "seed": 0})
    sim.pulse(None, 0.21, 1e-8, 1000, compliance_a=1e-3)
    g = sim.true_conductance()
    v_on = sim.model.p.v_on_v
    assert (g * v_on <= 1e-3 * 1.05).all(), float(g.max())  # one small step past the cap
    assert (g * v_on >= 1e-3 * 0.9).all(), float(g.min())  # ...and it did get there
    unlimited = SimBackend(
        {"rows": 4, "cols": 4, "device": device, "seed": 0, "limits": {"compliance_max_a": 0.1}}
    )
    unlimited.pulse(None, 0.21, 1e-8, 1000, compliance_a=0.1)
    assert (unlimited.true_conductance() > 2 * g).all()


def test_pulse_durations_advance_the_clock_without_float32_rounding():
    sim = quiet_sim()
    t0 = sim.clock.now()
    for _ in range(1000):
        sim.pulse([(0, 0, 0)], 2.0, 0.1, 1)  # 0.1 s is not representable in float32
    assert sim.clock.now() - t0 == pytest.approx(100.0, rel=1e-12)


def test_drift_cache_is_kept_within_the_drift_onset():
    # PCM's drift law is a power law of max(age, T0): just after a write the conductance
    # does not move, so reads reuse it; past T0 the error stays within nu * drift_refresh_rel
    sim = SimBackend({"rows": 8, "cols": 8, "device": "pcm", "seed": 0})
    sim.pulse(None, 1.0, 100e-9, 5)
    sim.mvm(torch.zeros(1, 8))
    cache = sim._read_cache()
    for _ in range(30):
        sim.mvm(torch.zeros(1000, 8))  # 1 ms of reads each, 30 ms << T0 = 38.6 s
        assert sim._read_cache() is cache
    for _ in range(40):
        sim.wait(1.0)
        sim.mvm(torch.zeros(1, 8))
        exact = sim.model.conductance(sim.state, sim.d2d, sim.config.read.v_read, sim.clock.now())
        assert torch.allclose(
            sim.true_conductance(), exact, rtol=sim.model.p.nu * 1e-3 * 1.01, atol=0
        )
