"""Per-read noise of a single input by the column-current shortcut: same distribution as
the per-device draw (moments and a two-sample KS test), and it costs one (1, cols) draw
plus one per cell near 0 S."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from memhil.backends.sim import SimBackend


def pcm_array(**read) -> SimBackend:
    sim = SimBackend(
        {"rows": 32, "cols": 4, "seed": 5, "device": "pcm", "read": {"v_read": 0.2, **read}}
    )
    counts = torch.randint(1, 8, sim.shape, generator=torch.Generator().manual_seed(1))
    sim.pulse(None, 1.0, 100e-9, counts)
    return sim


def per_device_reads(sim: SimBackend, v: torch.Tensor, n: int) -> torch.Tensor:
    """The reference: n reads, each with its own rows x cols draw of G + std N(0, 1)."""
    g, std = sim._read_state()
    gen = torch.Generator().manual_seed(123)
    xi = torch.randn((n, *g.shape[1:]), generator=gen, dtype=g.dtype)
    return torch.einsum("r,nrc->nc", v[0], (g[0] + std[0] * xi).clamp_min(0.0))


def test_single_input_read_noise_matches_the_per_device_draw():
    sim = pcm_array(read_noise_rel=0.05)
    # PCM's read noise has an offset c3: some cells lie within 6 std of 0 S and take the
    # exact clipped draw of their own, the rest go through the column shortcut
    low = sim._read_cache().column_noise_terms()[1]
    assert low is not None and 0 < low.shape[0] < 32 * 4
    v = torch.linspace(-0.2, 0.2, 32).unsqueeze(0)
    n = 2000
    fast = torch.stack([sim.mvm(v, tile=0)[0] for _ in range(n)])
    ref = per_device_reads(sim, v, n)
    g, std = sim._read_state()
    mean = v[0] @ g[0]
    sd = torch.sqrt((v[0, :, None] ** 2 * std[0] ** 2).sum(0))
    # 2000 samples: mean s.e. sd/45, std s.e. 1/sqrt(2n) ~1.6 %; bounds at ~5 s.e.
    assert ((fast.mean(0) - mean).abs() < 5 * sd / n**0.5).all()
    assert torch.allclose(fast.std(0), sd, rtol=0.08)
    assert torch.allclose(ref.std(0), sd, rtol=0.08)
    for col in range(4):  # seeded: deterministic; a wrong variance gives p < 1e-10 here
        assert stats.ks_2samp(fast[:, col].numpy(), ref[:, col].numpy()).pvalue > 1e-3


def test_single_input_read_draws_one_value_per_column():
    sim = pcm_array(read_noise_rel=0.05)
    low = sim._read_cache().column_noise_terms()[1]
    n_low = 0 if low is None else low.shape[0]
    sim.mvm(torch.full((1, 32), 0.1), tile=0)
    probe = torch.randn(1, generator=sim._gen_read)
    want = torch.Generator().manual_seed(5 * 3 + 2)  # the read stream of seed 5
    torch.randn(4 + n_low, generator=want)  # one per column, one per near-zero cell
    assert torch.equal(probe, torch.randn(1, generator=want))


@pytest.mark.parametrize("ir_drop", ["none", "first_order"])
def test_a_batch_or_ir_drop_keeps_the_shared_per_device_draw(ir_drop):
    sim = pcm_array(read_noise_rel=0.05, ir_drop=ir_drop, r_wire_ohm=1.0)
    same = torch.full((2, 32), 0.1)
    i = sim.mvm(same, tile=0)
    assert torch.equal(i[0], i[1])  # one realization for the whole batch


def test_single_input_transpose_read_on_every_tile_has_the_per_device_moments():
    sim = SimBackend(
        {
            "tiles": 2,
            "rows": 4,
            "cols": 32,
            "seed": 6,
            "device": "pcm",
            "read": {"read_noise_rel": 0.05},
        }
    )
    counts = torch.randint(1, 8, sim.shape, generator=torch.Generator().manual_seed(2))
    sim.pulse(None, 1.0, 100e-9, counts)
    assert sim._read_cache().column_noise_terms()[1] is not None  # both paths in play
    v = torch.linspace(-0.2, 0.2, 32).expand(2, 1, 32)
    n = 1500
    fast = torch.stack([sim.mvm_t(v)[:, 0] for _ in range(n)])  # (n, tiles, rows)
    g, std = sim._read_state()
    mean = torch.einsum("tc,trc->tr", v[:, 0], g)
    sd = torch.sqrt(torch.einsum("tc,trc->tr", v[:, 0] ** 2, std**2))
    # 5 s.e. of the mean; the clip's bias on the few near-zero cells stays inside it here
    assert ((fast.mean(0) - mean).abs() < 5 * sd / n**0.5).all()
    assert torch.allclose(fast.std(0), sd, rtol=0.09)  # s.e. of a std from 1500: 1.8 %


def test_a_single_input_on_a_mostly_near_zero_array_keeps_the_per_device_draw():
    sim = SimBackend({"rows": 32, "cols": 4, "seed": 5, "device": "pcm"})  # unprogrammed
    sim.mvm(torch.full((1, 32), 0.1), tile=0)
    probe = torch.randn(1, generator=sim._gen_read)
    want = torch.Generator().manual_seed(5 * 3 + 2)
    # the per-device draw: on a float32 CPU array compiled, keyed by two stream words
    # (not one normal per column and per near-zero cell as the shortcut would draw)
    torch.randint(0, 2**32, (2,), generator=want)
    assert torch.equal(probe, torch.randn(1, generator=want))
