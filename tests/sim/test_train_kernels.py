"""The compiled pulse trains (memhil/devices/train_kernels.py) against the torch paths they
replace: same arithmetic, same random draws, so the same states."""

import dataclasses

import pytest
import torch

from memhil.backends.sim import SimBackend
from memhil.devices import build_device_model, train_kernels


def _vteam_sim(dtype: str, fused: bool, monkeypatch, **device) -> SimBackend:
    sim = SimBackend(
        {
            "rows": 12,
            "cols": 20,
            "tiles": 2,
            "device": {"model": "vteam", **device},
            "seed": 3,
            "dtype": dtype,
            "limits": {"count_max": 1000},
        }
    )
    if not fused:  # the simulator's pulse-by-pulse loop over step
        monkeypatch.setattr(sim.model, "compliance_train", lambda *args, **kwargs: None)
    return sim


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dx_std", [0.05, 0.0])
def test_vteam_fused_compliance_train_equals_the_pulse_loop(dtype, dx_std, monkeypatch):
    # Equal bit for bit: the kernel does the loop's IEEE operations in the loop's order
    # (no FMA on either side) on the same C2C normals. Blocks of 3 pulses test the seams.
    monkeypatch.setattr(train_kernels, "BLOCK_BYTES", 3 * 2 * 12 * 20 * 8)
    gen = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 9, (2, 12, 20), generator=gen)
    amps = torch.rand(2, 12, 20, generator=gen, dtype=torch.float64) * 0.8 + 0.2  # per cell
    limits = torch.rand(2, 12, 20, generator=gen, dtype=torch.float64) * 9e-4 + 1e-4
    mask = torch.rand(2, 12, 20, generator=gen) < 0.5
    states = []
    for fused in (True, False):
        sim = _vteam_sim(dtype, fused, monkeypatch, dx_std=dx_std)
        g0 = sim.true_conductance()
        for amp, width, count in ((1.0, 1e-6, counts), (-0.05, 1e-6, 7), (0.21, 1e-8, 5)):
            sim.pulse(None, amp, width, count)  # default compliance 1 mA binds at 1 V
        sim.pulse(mask, amps, 1e-8, 4, compliance_a=limits)  # per-cell requests, a selection
        states.append((sim.state, sim.clock.now(), sim.true_conductance()))
    (a, t_a, g_a), (b, t_b, g_b) = states
    assert torch.equal(a, b) and t_a == t_b
    assert float(g_a.max()) * 1.0 > 1e-3 and not torch.equal(g_a, g0)  # it did bind and move


def test_vteam_fused_train_is_used_only_where_it_applies():
    m = build_device_model({"model": "vteam", "window": "kvatinsky"})
    args = [torch.zeros(4, 1), m.sample_d2d((4,), torch.Generator())]
    args += [torch.ones(4), torch.ones(4), torch.ones(4, dtype=torch.int64), torch.ones(4)]
    assert m.compliance_train(*args, torch.Generator()) is None  # RK4 path: the loop
    m = build_device_model({"model": "vteam", "alpha_on": 2.5})
    assert m.compliance_train(*args, torch.Generator()) is None  # exponent the kernel lacks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("g_max_dtod", [0.0, 0.2])
def test_pcm_compiled_set_train_equals_the_torch_ops(dtype, g_max_dtod, monkeypatch):
    # A non-contiguous state takes the torch path. Bitwise equal where torch's add(alpha=)
    # runs as an FMA (its vectorized CPU kernels); 1e-6 relative allows one rounding per
    # pulse elsewhere (G shrinks a rounding by 1 + m1 < 1 per pulse).
    monkeypatch.setattr(train_kernels, "BLOCK_BYTES", 4 * 2 * 16 * 24 * 8)
    m = build_device_model({"model": "pcm", "g_max_dtod": g_max_dtod})
    shape = (2, 16, 24)
    gen = torch.Generator().manual_seed(0)
    d2d = m.sample_d2d(shape, gen, dtype=dtype)
    state = m.initial_state(d2d, shape, gen, dtype=dtype)
    wide = torch.zeros(*shape, 4, dtype=dtype)
    wide[..., :3] = state
    strided = wide[..., :3]
    assert state.is_contiguous() and not strided.is_contiguous()
    v, w = torch.full(shape, 1.0, dtype=dtype), torch.full(shape, 1e-7, dtype=dtype)
    for n in (1, 3, 10):
        count = torch.full(shape, n, dtype=torch.int64)
        a = m.step(state, d2d, v, w, count, 50.0, torch.Generator().manual_seed(n))
        b = m.step(strided, d2d, v, w, count, 50.0, torch.Generator().manual_seed(n))
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0)
        assert float((a[..., 0] - state[..., 0]).abs().min()) > 0  # every cell moved
        assert torch.all(a[..., 2] == 50.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("g_max_dtod", [0.0, 0.2])
def test_pcm_compiled_per_cell_counts_equal_the_torch_passes(dtype, g_max_dtod, monkeypatch):
    # Mixed SET counts, RESETs and idle cells (the update schemes' requests): the compiled
    # loop draws the same normals in the same order; tolerance as for the SET train above.
    m = build_device_model({"model": "pcm", "g_max_dtod": g_max_dtod})
    shape = (2, 24, 32)  # 1536 cells: several tiles of 512, prefixes ending inside them
    gen = torch.Generator().manual_seed(3)
    d2d = m.sample_d2d(shape, gen, dtype=dtype)
    state = m.initial_state(d2d, shape, gen, dtype=dtype)
    count = torch.randint(0, 9, shape, generator=gen)
    v = torch.where(torch.rand(shape, generator=gen) < 0.2, -1.5, 1.0).to(dtype)
    w = torch.full(shape, 1e-7, dtype=dtype)
    a = m.step(state, d2d, v, w, count, 7.0, torch.Generator().manual_seed(4))
    monkeypatch.setattr(type(m), "compiled_trains", False)
    b = m.step(state, d2d, v, w, count, 7.0, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0)
    set_cells = (count > 0) & (v > 0)
    assert float((a[..., 0] - state[..., 0])[set_cells].abs().min()) > 0  # pulsed cells moved
    assert torch.equal(a[count == 0], state[count == 0])  # idle cells untouched
    assert torch.all(a[..., 2][count > 0] == 7.0)


@pytest.mark.parametrize(("amplitude", "count"), [(1.0, 3), (-1.5, 1), (1.0, 0)])
def test_a_uniform_pcm_request_skips_the_fills_and_equals_the_full_request(
    amplitude, count, monkeypatch
):
    # One request for every cell reaches PCM's step as one-element tensors (no array-sized
    # fill or reduction) and leaves the state a full-shape request leaves, bit for bit:
    # SET trains take the same compiled loop, RESETs the same general path, on the same draws.
    def sim() -> SimBackend:
        return SimBackend({"rows": 16, "cols": 24, "tiles": 2, "device": "pcm", "seed": 5})

    seen: list[int] = []
    uniform, full = sim(), sim()
    step = type(uniform.model).step

    def spy(self, state, d2d, v, width_s, count, *args, **kwargs):
        seen.append(v.numel())
        return step(self, state, d2d, v, width_s, count, *args, **kwargs)

    monkeypatch.setattr(type(uniform.model), "step", spy)
    uniform.pulse(None, amplitude, 100e-9, count)
    cells = full.shape
    full.pulse(
        None,
        torch.full(cells, amplitude, dtype=torch.float64),
        torch.full(cells, 100e-9, dtype=torch.float64),
        torch.full(cells, count),
    )
    assert seen == [1, 16 * 24 * 2]
    assert torch.equal(uniform.state, full.state)
    assert uniform.clock.now() == full.clock.now()
    # the tallies sum one element or every cell's: equal to float64 rounding
    assert dataclasses.asdict(uniform.tally) == pytest.approx(dataclasses.asdict(full.tally))


def test_programming_noise_normals_are_standard_seeded_and_dtype_aware():
    # float32 on the CPU: compiled Philox draws keyed from the generator's stream; 200 000
    # draws: s.e. of a mean 0.0022, of a std 0.16 %; bounds at ~5 s.e.
    from scipy import stats

    from memhil.devices.base import standard_normals_

    def draw(dtype, seed=3, n=200_000):
        return standard_normals_(torch.empty(n, dtype=dtype), torch.Generator().manual_seed(seed))

    z = draw(torch.float32)
    assert abs(float(z.mean())) < 0.011 and abs(float(z.std()) - 1) < 0.008
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert torch.equal(draw(torch.float32), z) and not torch.equal(draw(torch.float32, 4), z)
    # float64 keeps torch's 53-bit normal_, the same stream as before
    want = torch.empty(1000, dtype=torch.float64).normal_(
        generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(draw(torch.float64, n=1000), want)
