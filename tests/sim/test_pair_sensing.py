"""Differential sensing of a pair (``read.pair_sensing: differential``): I+ - I- gets one
output-noise draw and one ADC. The same read as per-column sensing with ideal converters;
with an ADC it quantizes the difference (closed form); its noise has the per-device
draw's distribution (moments and two-sample KS); selected from a sim YAML file."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from memhil.analog.linear import AnalogLinear
from memhil.backends.sim import SimBackend
from memhil.backends.sim.read_path import quantize_symmetric
from memhil.core.errors import ConfigError

ROWS, COLS = 24, 12
PLUS, MINUS = slice(0, 6), slice(6, 12)


def chip(device="pcm", dtype="float32", **read) -> SimBackend:
    """A programmed array: every cell a few SET pulses in, seeded."""
    sim = SimBackend(
        {"rows": ROWS, "cols": COLS, "seed": 4, "device": device, "dtype": dtype, "read": read}
    )
    counts = torch.randint(0, 8, sim.shape, generator=torch.Generator().manual_seed(5))
    amplitude = 1.0 if device == "pcm" else 2.0
    sim.pulse(None, amplitude, 100e-9, counts)
    return sim


def inputs(batch: int, seed: int = 1) -> torch.Tensor:
    return (torch.rand(batch, ROWS, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * 0.2


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # compiled and torch draws
@pytest.mark.parametrize(
    "read",
    [
        {"dac_bits": 8},  # PCM read noise per read
        {"dac_bits": 8, "noise_mode": "per_sample"},
        {"r_wire_ohm": 2.0, "ir_drop": "first_order"},
    ],
)
def test_with_ideal_converters_differential_is_the_two_column_read(read, dtype):
    v = inputs(7).to(getattr(torch, dtype))
    per_column = chip(dtype=dtype, **read).mvm_pairs(v, PLUS, MINUS, tile=0)
    differential = chip(dtype=dtype, pair_sensing="differential", **read).mvm_pairs(
        v, PLUS, MINUS, tile=0
    )
    # no ADC, no output noise: the same currents from the same draws, bit for bit
    assert torch.equal(differential, per_column)


def test_with_an_adc_it_quantizes_the_difference():
    neurosim = {"model": "neurosim"}  # no read noise: the closed form is exact
    sim = chip(neurosim, dtype="float64", pair_sensing="differential", adc_bits=6)
    v = inputs(9, seed=2).double()
    g = sim.true_conductance()[0]
    full_scale = ROWS * sim.model.conductance_range()[1] * sim.config.read.dac_range_v
    want = quantize_symmetric(v @ (g[:, PLUS] - g[:, MINUS]), 6, full_scale)
    got = sim.mvm_pairs(v, PLUS, MINUS, tile=0)
    assert torch.equal(got, want)
    # per column, each current is rounded before the subtraction: another read
    cols = chip(neurosim, dtype="float64", adc_bits=6).mvm_pairs(v, PLUS, MINUS, tile=0)
    i = v @ g
    lsb = full_scale / 31
    assert torch.equal(
        cols,
        quantize_symmetric(i[:, PLUS], 6, full_scale)
        - quantize_symmetric(i[:, MINUS], 6, full_scale),
    )
    assert not torch.equal(cols, got)
    assert (got - v @ (g[:, PLUS] - g[:, MINUS])).abs().max() <= lsb / 2 * (1 + 1e-12)


def test_one_output_noise_draw_per_pair():
    neurosim = {"model": "neurosim"}
    sigma = 1e-7
    v = inputs(1, seed=3).expand(4000, ROWS).contiguous()
    for sensing, draws in (("differential", 1), ("per_column", 2)):
        sim = chip(neurosim, output_noise_a=sigma, pair_sensing=sensing)
        g = sim.true_conductance()[0]
        err = (sim.mvm_pairs(v, PLUS, MINUS, tile=0) - v @ (g[:, PLUS] - g[:, MINUS])).double()
        # 4000 samples: s.e. of a std 1.1 %, of a mean std/63; bounds at ~5 s.e.
        assert torch.allclose(err.std(0), torch.full((6,), sigma * draws**0.5).double(), rtol=0.06)
        assert (err.mean(0).abs() < 5 * sigma * draws**0.5 / 4000**0.5).all()


def _reference_reads(sim: SimBackend, v: torch.Tensor, n: int) -> torch.Tensor:
    """n differential reads of one input ``v`` (ROWS,) from the per-device draw, in float64:
    G+ and G- each G + std N(0, 1) clipped at 0 S, v @ (G+ - G-), one ADC."""
    g, std = (x[0].double() for x in sim._read_state())
    gen = torch.Generator().manual_seed(11)
    g_read = (g + std * torch.randn((n, *g.shape), generator=gen, dtype=g.dtype)).clamp_min(0)
    i = torch.einsum("j,njk->nk", v.double(), g_read[..., PLUS] - g_read[..., MINUS])
    rp = sim.config.read
    return quantize_symmetric(i, rp.adc_bits, rp.adc_range_a)


@pytest.mark.parametrize("noise_mode", ["per_read", "per_sample"])
def test_differential_noise_has_the_per_device_draws_distribution(noise_mode):
    # an ADC fine enough to see the noise (the read-noise std spans ~13 LSB)
    read = {"adc_bits": 10, "adc_range_a": 8e-6, "noise_mode": noise_mode}
    sim = chip(pair_sensing="differential", **read)
    v = inputs(1, seed=4)[0]
    n = 3000
    if noise_mode == "per_read":  # one realization per call: n calls of one input
        got = torch.cat([sim.mvm_pairs(v[None], PLUS, MINUS, tile=0) for _ in range(n)])
    else:  # independent noise per input: one call of n copies
        got = sim.mvm_pairs(v.expand(n, ROWS).contiguous(), PLUS, MINUS, tile=0)
    got = got.double()
    want = _reference_reads(sim, v, n)
    g, std = (x[0].double() for x in sim._read_state())
    sd = torch.sqrt(v.double() ** 2 @ (std[:, PLUS] ** 2 + std[:, MINUS] ** 2))
    lsb = 8e-6 / 511
    assert (sd > 5 * lsb).all()  # the noise, not the grid, dominates the spread
    # 3000 samples each: s.e. of a mean sd/55, of a std ~1.3 % (plus the LSB/sqrt(12)
    # rounding, < 0.4 % of the variance here); bounds at ~5 s.e. of the difference
    assert ((got.mean(0) - want.mean(0)).abs() < 5 * sd * (2 / n) ** 0.5).all()
    assert torch.allclose(got.std(0), want.std(0), rtol=0.09)
    assert torch.allclose(got.std(0), sd, rtol=0.06)
    # in LSB codes: the float32 and float64 images of one grid point differ in the last
    # bits, which would split every tie into a step of the KS distance
    codes_got, codes_want = (torch.round(x / lsb).numpy() for x in (got, want))
    for k in range(6):  # seeded: deterministic
        assert stats.ks_2samp(codes_got[:, k], codes_want[:, k]).pvalue > 1e-3


def test_sensing_is_selected_from_the_sim_file(tmp_path):
    path = tmp_path / "chip.yaml"
    path.write_text(
        f"rows: {ROWS}\ncols: {COLS}\ndevice: {{model: neurosim}}\ndtype: float64\n"
        "read: {adc_bits: 6, pair_sensing: differential}\n"
    )
    sim = SimBackend(path)
    assert sim.config.read.pair_sensing == "differential"
    sim.pulse(
        None,
        2.0,
        100e-9,
        torch.randint(0, 8, sim.shape, generator=torch.Generator().manual_seed(5)),
    )
    g = sim.true_conductance()[0]
    g_min, g_max = sim.model.conductance_range()
    layer = AnalogLinear(ROWS, COLS // 2, sim, g_window_s=(g_min, g_max), bias=False)
    x = torch.randn(5, ROWS, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    # AnalogLinear reads its pairs through the file's sensing: the difference rounded once
    v, back = layer.weights._encode(x)
    m = layer.weights.mapping
    full_scale = ROWS * g_max * sim.config.read.dac_range_v
    want = quantize_symmetric(v @ (g[:, PLUS] - g[:, MINUS]), 6, full_scale) / m.scale * back
    with torch.no_grad():
        assert torch.allclose(layer(x), want, rtol=1e-12, atol=0)
    path.write_text("read: {pair_sensing: both}\n")
    with pytest.raises(ConfigError, match="pair_sensing") as err:
        SimBackend(path)
    assert "chip.yaml" in str(err.value)
