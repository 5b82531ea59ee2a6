"""The fused per-sample read (CPU, float32): Philox4x32-10 known answers, the normals'
moments and KS test, the noisy currents against the exact per-device draw (moments and a
two-sample KS test), the bfloat16 variance product within its stated 0.6 %, and the
converters bit for bit as the torch path rounds them."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from scipy import stats

from memhil.backends.sim import SimBackend, backend, read_kernels
from memhil.backends.sim.read_path import quantize_symmetric
from memhil.core import philox_normals


@numba.njit(cache=True)  # compiled once per checkout
def _philox(c, k):
    return philox_normals.philox4x32(c[0], c[1], c[2], c[3], k[0], k[1])


@pytest.mark.parametrize(
    ("ctr", "key", "want"),
    [  # Random123's known-answer vectors for Philox4x32-10 (Salmon et al., SC 2011)
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_matches_the_random123_known_answers(ctr, key, want):
    got = _philox(np.array(ctr, dtype=np.uint64), np.array(key, dtype=np.uint64))
    assert tuple(int(x) for x in got) == want


def _normals(n: int, k0: int, k1: int, var_dtype=np.int16) -> np.ndarray:
    """n draws of the fused kernel alone: zero currents, unit variance, no ADC."""
    z = np.zeros(n, dtype=np.float32)
    one = torch.ones(n, dtype=torch.bfloat16).view(torch.int16).numpy()  # 1.0 is exact
    var = one if var_dtype == np.int16 else np.ones(n, dtype=np.float32)
    f0 = np.float32(0.0)
    lo = np.float32(-np.inf)  # no clip
    read_kernels.add_noise_adc(z, var, f0, lo, f0, f0, f0, np.uint64(k0), np.uint64(k1))
    return z.astype(np.float64)


def test_the_kernel_draws_standard_normals():
    n = 400_003  # not a multiple of 4: the tail counter too
    z = _normals(n, 12345, 678)
    # standard errors at n = 4e5: mean 1.6e-3, variance 2.2e-3, skewness 3.9e-3, excess
    # kurtosis 7.7e-3; bounds at 5 s.e. (seeded, so deterministic)
    assert abs(z.mean()) < 5 / n**0.5
    assert abs(z.var() - 1.0) < 5 * (2 / n) ** 0.5
    assert abs(stats.skew(z)) < 5 * (6 / n) ** 0.5
    assert abs(stats.kurtosis(z)) < 5 * (24 / n) ** 0.5
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert np.abs(z).max() <= 5.78  # 24-bit uniforms: |z| <= sqrt(48 ln 2)
    q = n // 4  # the four outputs of one counter, and another key: uncorrelated
    for a, b in ((z[:q], z[q : 2 * q]), (z[:q], z[2 * q : 3 * q]), (z, _normals(n, 1, 678))):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / len(a) ** 0.5
    assert np.array_equal(z, _normals(n, 12345, 678))  # a key reproduces its draws


def pcm_array(**read) -> SimBackend:
    sim = SimBackend(
        {
            "rows": 48,
            "cols": 8,
            "seed": 5,
            "device": "pcm",
            "read": {"v_read": 0.2, "noise_mode": "per_sample", **read},
        }
    )
    counts = torch.randint(1, 8, sim.shape, generator=torch.Generator().manual_seed(1))
    sim.pulse(None, 1.0, 100e-9, counts)
    return sim


def per_device_reads(sim: SimBackend, v: torch.Tensor, n: int) -> torch.Tensor:
    """The reference: n reads of v, each with its own rows x cols draw G + std N(0, 1)
    (per-sample reads do not model the clip at 0 S), in float64."""
    g, std = sim._read_state()
    gen = torch.Generator().manual_seed(321)
    xi = torch.randn((n, *g.shape[1:]), generator=gen, dtype=torch.float64)
    return torch.einsum("r,nrc->nc", v[0].double(), g[0].double() + std[0].double() * xi)


@pytest.mark.parametrize("bf16", [True, False])
def test_per_sample_currents_match_the_per_device_draw(bf16, monkeypatch):
    if not bf16:  # a CPU without bfloat16 dot products: the float32 variance product
        monkeypatch.setattr(backend, "bf16_dot_products", lambda: False)
    sim = pcm_array(read_noise_rel=0.05)
    v = torch.linspace(-0.2, 0.2, 48).unsqueeze(0)
    n = 4000
    fast = sim.mvm(v.expand(n, 48).contiguous(), tile=0).double()
    ref = per_device_reads(sim, v, n)
    g, std = sim._read_state()
    mean = v[0].double() @ g[0].double()
    sd = torch.sqrt((v[0, :, None].double() ** 2 * std[0].double() ** 2).sum(0))
    # 4000 samples: mean s.e. sd/63, std s.e. 1/sqrt(2n) ~1.1 %; bounds at ~5 s.e. (the
    # bfloat16 variance adds at most 0.3 % to the std)
    assert ((fast.mean(0) - mean).abs() < 5 * sd / n**0.5).all()
    assert torch.allclose(fast.std(0), sd, rtol=0.06)
    assert torch.allclose(ref.std(0), sd, rtol=0.06)
    for col in range(8):  # seeded: deterministic; a wrong variance gives p < 1e-10 here
        assert stats.ks_2samp(fast[:, col].numpy(), ref[:, col].numpy()).pvalue > 1e-3


def test_the_bf16_variance_product_is_within_its_stated_precision():
    if not backend.bf16_dot_products():
        pytest.skip("this CPU has no bfloat16 dot products: the float32 product runs")
    sim = SimBackend(
        {"tiles": 2, "rows": 64, "cols": 32, "seed": 2, "device": "pcm", "read": {"dac_bits": 8}}
    )
    counts = torch.randint(0, 8, sim.shape, generator=torch.Generator().manual_seed(3))
    sim.pulse(None, 1.0, 100e-9, counts)
    cache = sim._read_cache()
    v = (torch.rand(2, 100, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1) * 0.2
    vq, v2 = sim._dac_and_square(v)
    got = sim._sample_variance(vq, v2, cache, None, True).view(torch.bfloat16).double()
    var = cache.variance().transpose(-1, -2).double()
    exact = vq.double() ** 2 @ var
    # three roundings to bfloat16 (squares, variances, result), each within 2^-9, of
    # positive terms summed in float32: within 3 * 2^-9 + 1e-4 = 0.60 %
    assert float(((got - exact).abs() / exact).max()) <= 3 * 2**-9 + 1e-4


def test_the_dac_pass_rounds_as_the_torch_quantizer():
    v = (torch.rand(3, 1000, generator=torch.Generator().manual_seed(6)) * 2 - 1) * 0.3
    sim = SimBackend({"rows": 8, "cols": 4, "read": {"dac_bits": 6, "dac_range_v": 0.2}})
    vq, v2 = sim._dac_and_square(v)
    want = quantize_symmetric(v, 6, 0.2)
    assert torch.equal(vq, want)  # the same float32 operations: bit for bit
    assert torch.equal(v2.view(torch.bfloat16), (want * want).to(torch.bfloat16))


@pytest.mark.parametrize("bits", [4, 8])
def test_the_compiled_dac_and_adc_round_as_the_torch_quantizer(bits):
    # a spread past full scale (clipped), points on both sides of every half-step (where
    # the rounding decides) and signed zeros; one pass each, bit for bit as the four torch ops
    full_scale = 0.2
    levels = 2 ** (bits - 1) - 1
    lsb = full_scale / levels
    half_steps = (torch.arange(-levels - 2, levels + 3, dtype=torch.float64) + 0.5) * lsb
    x = torch.cat(
        [
            (torch.rand(5000, generator=torch.Generator().manual_seed(9)) * 2 - 1) * 0.3,
            half_steps.float(),
            torch.nextafter(half_steps.float(), torch.tensor(1.0)),
            torch.nextafter(half_steps.float(), torch.tensor(-1.0)),
            torch.tensor([0.0, -0.0]),
        ]
    ).view(1, -1)
    read = {"dac_bits": bits, "dac_range_v": full_scale, "adc_bits": bits}
    sim = SimBackend({"rows": 8, "cols": 4, "read": {**read, "adc_range_a": full_scale}})
    want = quantize_symmetric(x, bits, full_scale)
    x_before = x.clone()
    assert torch.equal(sim._dac(x), want)
    assert torch.equal(x, x_before)  # the DAC reads a copy
    i = x.clone()
    assert sim._convert_(i, 8) is i and torch.equal(i, want)  # the ADC works in place
    # float64 (and autograd) reads keep the torch ops
    assert torch.equal(sim._dac(x.double()), quantize_symmetric(x.double(), bits, full_scale))


@pytest.mark.parametrize("pairs", [7, 8])
def test_the_pair_difference_is_the_full_realization_subtracted(pairs):
    # the pair kernel (and the per-device kernel into a buffer apart) draws what the
    # per-device kernel draws for the whole array, cell for cell: bit for bit; the
    # per-sample kernel, given the variances, draws the same normals (its sqrt(std^2)
    # within an ulp of std); cells far above 0 S (no clip) show z ~ N(0, 1), independent
    # across pairs, rows and a pair's two cells
    rows, cols = 4000, 2 * pairs + 3  # three columns outside any pair
    gen = torch.Generator().manual_seed(12)
    g = torch.rand(rows, cols, generator=gen) * 5e-6 + 5e-6
    std = torch.rand(rows, cols, generator=gen) * 5e-8 + 1e-8
    var = std * std
    plus, minus = slice(2, 2 + pairs), slice(2 + pairs, 2 + 2 * pairs)
    out = torch.empty(rows, pairs)
    key = (np.uint64(5), np.uint64(6))
    read_kernels.noisy_pair_difference(g.numpy(), std.numpy(), 2, 2 + pairs, out.numpy(), *key)
    full = torch.empty_like(g)  # the per-device draw into a buffer apart
    read_kernels.noisy_cells(g.view(-1).numpy(), std.view(-1).numpy(), full.view(-1).numpy(), *key)
    assert torch.equal(out, full[:, plus] - full[:, minus])
    with pytest.raises(ValueError, match="out of range"):  # no silent read past a row
        read_kernels.noisy_pair_difference(g.numpy(), std.numpy(), 4, 4 + pairs, out.numpy(), *key)
    in_place = g.clone()
    f0 = np.float32(0.0)
    read_kernels.add_noise_adc(
        in_place.view(-1).numpy(), var.view(-1).numpy(), f0, f0, f0, f0, f0, *key
    )
    # |G| ~ 1e-5 S and noise ~ 5e-8 S: an ulp of the std moves a draw by < 1e-14 S, an
    # ulp of G (~1e-12 S) dominates the difference
    assert torch.allclose(in_place, full, rtol=0, atol=4e-12)
    sd = (var[:, plus] + var[:, minus]).sqrt().double()
    z = (out.double() - (g[:, plus] - g[:, minus]).double()) / sd
    # 4000 draws per column: s.e. of a mean 0.016, of a std 1.1 %; bounds at ~5 s.e.
    assert (z.mean(0).abs() < 0.08).all()
    assert torch.allclose(z.std(0), torch.ones(pairs, dtype=z.dtype), atol=0.06)
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    corr = torch.corrcoef(z.T)
    assert (corr - torch.eye(pairs, dtype=corr.dtype)).abs().max() < 0.08
    assert float(torch.corrcoef(torch.stack([z[:-1].flatten(), z[1:].flatten()]))[0, 1]) < 0.05


def test_adc_output_noise_and_the_read_stream():
    sim = pcm_array(read_noise_rel=0.05, adc_bits=6, adc_range_a=2e-6, output_noise_a=1e-8)
    v = (torch.rand(64, 48, generator=torch.Generator().manual_seed(7)) * 2 - 1) * 0.2
    state = sim.state_dict()
    i = sim.mvm(v, tile=0)
    lsb = 2e-6 / 31
    assert torch.allclose(i / lsb, (i / lsb).round(), atol=1e-3)  # on the ADC grid
    assert float(i.abs().max()) <= 2e-6 * (1 + 1e-6)
    sim.load_state_dict(state)  # the draws' key comes from the read stream: reproduced
    assert torch.equal(sim.mvm(v, tile=0), i)
    assert not torch.equal(sim.mvm(v, tile=0), i)  # and the next read draws anew
    quiet = pcm_array(read_noise_rel=0.05, output_noise_a=1e-7)
    zeros = quiet.mvm(torch.zeros(5000, 48), tile=0)  # no read-noise variance: output noise
    # 40000 samples: relative s.e. of the std 0.35 %; allow 2 %
    assert abs(float(zeros.std()) - 1e-7) < 0.02e-7


def test_per_read_draw_matches_the_clipped_per_device_draw():
    sim = SimBackend({"rows": 8, "cols": 6, "seed": 9, "device": "pcm"})  # cells near 0 S
    sim.pulse(None, 1.0, 100e-9, torch.tensor([0, 0, 1, 2, 4, 7]).expand(sim.shape))
    g, std = sim._read_state()
    assert bool((g[0, 0] < 3 * std[0, 0]).any())  # the clip at 0 S binds on some cells
    v = torch.zeros(2, 8)
    v[:, 0] = 0.1  # reads row 0's conductances (x 0.1 V) as currents, twice in one batch
    n = 3000
    reads = torch.stack([sim.mvm(v, tile=0) for _ in range(n)]).double() / 0.1  # (n, 2, cols)
    assert torch.equal(reads[:, 0], reads[:, 1])  # one realization per read call
    gen = torch.Generator().manual_seed(11)
    xi = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    ref = (g[0, 0].double() + std[0, 0].double() * xi).clamp_min(0.0)
    sd = std[0, 0].double()
    # 3000 samples: s.e. of a mean sd/55, of a std ~1.3 %; bounds at ~5 s.e.
    assert ((reads[:, 0].mean(0) - ref.mean(0)).abs() < 5 * 2**0.5 * sd / n**0.5).all()
    assert torch.allclose(reads[:, 0].std(0), ref.std(0), rtol=0.07)
    for col in range(6):  # seeded: deterministic
        assert stats.ks_2samp(reads[:, 0, col].numpy(), ref[:, col].numpy()).pvalue > 1e-3
