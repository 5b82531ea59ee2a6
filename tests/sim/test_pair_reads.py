"""Differential-pair reads (``mvm_pairs``): formed on the conductances where that is the
same read (ideal ADC, no IR drop, no output noise), else the full read subtracted; and
AnalogWeights reading its one-device pairs through them."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from memhil.analog.mapping import WeightMapping
from memhil.analog.weights import AnalogWeights
from memhil.backends.sim import SimBackend
from memhil.core.types import PulseSpec


def pcm(**read) -> SimBackend:
    sim = SimBackend({"rows": 24, "cols": 12, "seed": 4, "device": "pcm", "read": read})
    counts = torch.randint(0, 8, sim.shape, generator=torch.Generator().manual_seed(5))
    sim.pulse(None, 1.0, 100e-9, counts)
    return sim


PLUS, MINUS = slice(0, 6), slice(6, 12)


# a minus column per pair, and the reference layout's one column shared by every pair
@pytest.mark.parametrize("minus", [MINUS, slice(6, 7)])
def test_per_read_pairs_are_the_full_read_subtracted(minus):
    v = (torch.rand(5, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.2
    a, b = pcm(dac_bits=8), pcm(dac_bits=8)  # same seed: the same realization drawn
    full = b.mvm(v, tile=0)
    pairs = a.mvm_pairs(v, PLUS, minus, tile=0)
    # one product of differences vs a difference of products: float32 rounding only
    assert torch.allclose(pairs, full[:, PLUS] - full[:, minus], rtol=1e-5, atol=1e-12)
    assert a.clock.now() == b.clock.now()


def test_with_an_adc_the_pairs_are_the_columns_read_through_it():
    v = (torch.rand(5, 24, generator=torch.Generator().manual_seed(2)) * 2 - 1) * 0.2
    a, b = pcm(adc_bits=6), pcm(adc_bits=6)
    full = b.mvm(v, tile=0)
    assert torch.equal(a.mvm_pairs(v, PLUS, MINUS, tile=0), full[:, PLUS] - full[:, MINUS])


def test_per_sample_pairs_have_the_full_reads_distribution():
    a, b = pcm(noise_mode="per_sample"), pcm(noise_mode="per_sample")
    v = torch.linspace(-0.2, 0.2, 24).expand(4000, 24).contiguous()
    pairs = a.mvm_pairs(v, PLUS, MINUS, tile=0).double()
    full = b.mvm(v, tile=0).double()
    diff = full[:, PLUS] - full[:, MINUS]
    g, std = a._read_state()
    mean = v[0].double() @ (g[0, :, PLUS] - g[0, :, MINUS]).double()
    sd = torch.sqrt(v[0].double() ** 2 @ (std[0, :, PLUS] ** 2 + std[0, :, MINUS] ** 2).double())
    # 4000 samples: s.e. of a mean sd/63, of a std ~1.1 %; bounds at ~5 s.e.
    assert ((pairs.mean(0) - mean).abs() < 5 * sd / 4000**0.5).all()
    assert torch.allclose(pairs.std(0), sd, rtol=0.06)
    for k in range(6):  # seeded: deterministic
        assert stats.ks_2samp(pairs[:, k].numpy(), diff[:, k].numpy()).pvalue > 1e-3


def test_analog_weights_read_one_device_pairs_as_one_difference():
    sim = SimBackend({"rows": 16, "cols": 16, "seed": 1, "device": {"model": "neurosim"}})
    sim.pulse(None, 2.0, 80e-9, torch.randint(0, 20, sim.shape))
    g_min, g_max = sim.model.conductance_range()
    pulse = PulseSpec(amplitude_v=2.0, width_s=80e-9)
    for layout in ("differential", "reference"):
        m = WeightMapping(16, 6, g_min, g_max, layout=layout)
        w = AnalogWeights(sim, m, pulse, PulseSpec(amplitude_v=-2.0, width_s=80e-9))
        assert w._pairs is not None
        x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
        # noise-free array: x @ W.T of the weights the conductances encode (input scaling
        # to v_read and back is exact up to float32 rounding)
        want = x @ m.weights_from_conductance(sim.true_conductance()[0][:, m.cols]).t()
        assert torch.allclose(w.matvec(x), want, rtol=1e-4, atol=1e-5)
    multi = WeightMapping(16, 4, g_min, g_max, n_devices=2)
    assert multi.pair_columns() is None  # sums of devices: the full read


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_read_checks_the_read_voltage_in_the_dac_pass(dtype):
    # float32: the compiled DAC finds the largest |V| in its own pass; float64: torch ops
    from memhil.core.errors import LimitError

    sim = SimBackend(
        {
            "rows": 8,
            "cols": 8,
            "seed": 0,
            "dtype": str(dtype).split(".")[1],
            "read": {"dac_bits": 8, "pair_sensing": "differential"},
        }
    )
    vmax = sim.limits.v_read_max_v
    pairs = slice(0, 4), slice(4, 8)
    v = torch.full((2, 8), 0.5 * vmax, dtype=dtype)
    assert sim.mvm_pairs(v, *pairs).shape == (1, 2, 4)  # (tiles, batch, pairs)
    for value, shown in (
        (1.25 * vmax, f"{1.25 * vmax:g}"),
        (-1.25 * vmax, f"{1.25 * vmax:g}"),
        (float("nan"), "nan"),
    ):
        bad = v.clone()
        bad[1, 3] = value
        with pytest.raises(LimitError, match="read voltage") as err:
            sim.mvm_pairs(bad, *pairs)
        assert shown in str(err.value)  # the largest |V| found, named


@pytest.mark.parametrize("mode", ["absmax", "fixed"])
def test_encoding_and_decoding_in_the_converter_passes_equal_the_torch_ops(mode):
    # float32 on the CPU: the input encoding in the DAC's compiled pass and the decoding
    # (1 / gain, scale and bias) in the ADC's equal the torch ops (an input needing
    # gradients takes them), bit for bit, on a noise-free array (realizations would
    # differ otherwise); a zero input reads 0, a NaN one is refused by the limit check
    from memhil.backends.base import InputEncoding
    from memhil.core.errors import LimitError

    sim = SimBackend(
        {
            "rows": 16,
            "cols": 12,
            "seed": 2,
            "device": {"model": "neurosim"},
            "read": {"dac_bits": 8, "adc_bits": 8, "pair_sensing": "differential"},
        }
    )
    sim.pulse(None, 2.0, 80e-9, torch.randint(0, 20, sim.shape))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 16, generator=gen) * 3.0
    x[4] = 0.0
    encoding = InputEncoding(mode, 0.15, x_max=12.0)
    scale = torch.rand(9, 1, generator=gen) * 1e5
    for bias in (torch.randn(6, generator=gen), None):
        fast = sim.mvm_pairs(x, PLUS, MINUS, tile=0, encoding=encoding, output_affine=(scale, bias))
        slow = sim.mvm_pairs(
            x.clone().requires_grad_(),
            PLUS,
            MINUS,
            tile=0,
            encoding=encoding,
            output_affine=(scale, bias),
        )
        assert torch.equal(fast, slow.detach())
        assert bool((fast[4] == (0.0 if bias is None else bias)).all())
    gain, back = encoding.scales(x)
    unscaled = sim.mvm_pairs(x * gain, PLUS, MINUS, tile=0)  # the encoding as the caller's
    assert torch.allclose(fast, unscaled * (back * scale), rtol=1e-6, atol=0)
    x[2, 5] = float("nan")
    for bad in (x, x.clone().requires_grad_()):
        with pytest.raises(LimitError, match="read voltage"):
            sim.mvm_pairs(bad, PLUS, MINUS, tile=0, encoding=encoding)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mode": "max"}, "mode"),
        ({"v_peak_v": 0.0}, "v_peak_v"),
        ({"x_max": float("nan")}, "x_max"),
    ],
)
def test_an_encoding_names_a_bad_field(kw, match):
    from memhil.backends.base import InputEncoding

    with pytest.raises(ValueError, match=match):
        InputEncoding(**{"mode": "absmax", "v_peak_v": 0.2, **kw})
