"""MARS layer and stack: the parallel scan equals the sequential loop (all depths and
skips, with padding), the layer is the MF cell without recurrence, config checks, and a
small JapaneseVowels run clearly beats chance."""

from __future__ import annotations

import functools

import pytest
import torch

from memhil.algorithms.mars.layer import MARS, SKIPS, MARSLayer, diagonal_recurrence
from memhil.algorithms.mars.readout import fit_ridge
from memhil.algorithms.mars.reservoirs import MFESN
from memhil.datasets import japanese_vowels, standardize
from memhil.nn.pooling import pool_states


@pytest.mark.parametrize("skip", SKIPS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_scan_equals_the_sequential_loop(depth, skip):
    gen = torch.Generator().manual_seed(depth * 10 + SKIPS.index(skip))
    model = MARS(3, 24, depth, skip=skip, dt=(0.001, 0.09), input_scale=2.0, seed=depth)
    x = torch.randn(4, 53, 3, generator=gen)
    lengths = torch.tensor([53, 20, 1, 37])
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0.0
    loop = model.layer_states(x, lengths, method="loop")
    for method in ("scan", "chunked"):
        fast = model.layer_states(x, lengths, method=method, chunk=8)
        for h_fast, h_loop in zip(fast, loop):
            # states lie in (0, 1); float32 rounding of both orders of summation is ~1e-7
            assert (h_fast - h_loop).abs().max() < 1e-5
    f_scan = model.features(x, lengths, method="scan", batch_size=3)
    f_loop = model.features(x, lengths, method="loop")
    assert f_scan.shape == (4, depth * 2 * 24)
    assert (f_scan - f_loop).abs().max() < 1e-5


def test_scan_is_safe_for_thousands_of_steps():
    gen = torch.Generator().manual_seed(5)
    layer = MARSLayer(1, 8, dt=0.05, generator=gen)
    x = torch.randn(2, 3000, 1, generator=gen)
    h_scan, h_eq = layer(x, method="scan")
    h_loop, _ = layer(x, method="loop")
    assert torch.isfinite(h_scan).all() and (h_scan - h_loop).abs().max() < 1e-5
    assert ((h_scan > 0) & (h_scan < 1)).all() and ((h_eq > 0) & (h_eq < 1)).all()
    a = torch.rand(2, 1001, 3, generator=gen) * 0.98 + 0.01
    c = torch.rand(2, 1001, 3, generator=gen)
    ref = diagonal_recurrence(a, c, "loop")
    # the chunked form pads 1001 to 1024 with identity steps
    assert (
        diagonal_recurrence(a, c, "chunked", chunk=32) - ref
    ).abs().max() < 1e-4 * ref.abs().max()


def test_layer_is_the_mf_cell_without_recurrence():
    esn = MFESN(2, 6, rho=0.0, gamma=0.97, p=4.0, dt=0.02, seed=7)
    layer = MARSLayer(2, 6, gamma=0.97, p=4.0, dt=0.02)
    with torch.no_grad():
        layer.w_in.copy_(esn.w_in)
        layer.b.copy_(esn.b)
    x = torch.randn(3, 40, 2)
    assert torch.allclose(layer(x)[0], esn.states(x), atol=1e-6)


def test_configuration_errors_name_the_value():
    with pytest.raises(ValueError, match=r"decay a = gamma - dt\*\(kp\+kd\) reaches"):
        MARS(1, 4, dt=0.5)
    with pytest.raises(ValueError, match="reaches"):
        MARS(1, 4, dt=(0.001, 0.2))
    with pytest.raises(ValueError, match="'residual'"):
        MARS(1, 4, 2, skip="residual")
    with pytest.raises(ValueError, match="depth"):
        MARS(1, 4, 0)
    with pytest.raises(ValueError, match="'fft'"):
        MARS(1, 4).layer_states(torch.zeros(1, 3, 1), method="fft")
    with pytest.raises(ValueError, match=r"\(batch, T, 1\)"):
        MARS(1, 4).layer_states(torch.zeros(1, 3, 2))


@functools.lru_cache(maxsize=1)
def standardized_vowels():
    """JapaneseVowels, standardised; parsed once per session (shared with the deploy tests)."""
    return standardize(japanese_vowels())


@pytest.fixture(scope="module")
def vowels_slice():
    data = standardized_vowels()
    tr, te = data.train, data.test
    return (
        tr.subset(torch.arange(0, len(tr), 2)),
        tr.subset(torch.arange(1, len(tr), 4)),
        te.subset(torch.arange(0, len(te), 3)),
        data.n_classes,
    )


def test_mars_beats_chance_on_japanese_vowels(vowels_slice):
    train, val, test, n_classes = vowels_slice
    model = MARS(12, 32, 2, seed=0)
    feats = [model.features(s.x, s.lengths) for s in (train, val, test)]
    readout = fit_ridge(feats[0], train.y, n_classes, val_features=feats[1], val_labels=val.y)
    acc = readout.accuracy(feats[2], test.y)
    # chance is 1/9; the full-size model reaches ~0.97, this 32-unit one on half the data ~0.9
    assert acc > 0.75


def test_blocked_coefficients_are_the_plain_coefficients_to_float32_rounding():
    gen = torch.Generator().manual_seed(8)
    layer = MARSLayer(3, 7, dt=(0.001, 0.09), generator=gen)
    x = torch.randn(2, 40_000, 3, generator=gen)  # > one block of rows
    a, c = layer._coefficients_blocked(x, None)
    a_ref, c_ref = layer.coefficients(layer.project(x))
    # same ops, same order; torch may still pick a vector or a scalar (FMA or not) loop
    # for a broadcast add by shape, so allow a few ulps of values in (0, 1): 4 * 2**-24
    tol = 4 * 2.0**-24
    assert (a - a_ref).abs().max() <= tol and (c - c_ref).abs().max() <= tol
    a, c = layer._coefficients_blocked(x, layer.project(x))
    assert (a - a_ref).abs().max() <= tol and (c - c_ref).abs().max() <= tol


def test_layer_gradient_flows_through_the_autograd_path():
    layer = MARSLayer(2, 5)
    x = torch.randn(2, 30, 2, dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    h, _ = layer(x, equilibrium=False)
    (g,) = torch.autograd.grad(h.sum(), x)
    h_loop, _ = layer(x, method="loop", equilibrium=False)
    (g_loop,) = torch.autograd.grad(h_loop.sum(), x)
    torch.testing.assert_close(g, g_loop, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mars_states_on_cuda_equal_the_cpu_states():
    model = MARS(2, 16, 2, seed=3)
    x = torch.randn(3, 200, 2, generator=torch.Generator().manual_seed(3))
    cpu = model.features(x)
    gpu = model.cuda().features(x.cuda()).cpu()
    assert (cpu - gpu).abs().max() < 1e-4  # float32 scan vs loop order over 200 steps


def test_fused_kernel_exp_is_within_one_ulp_and_states_match_the_torch_path():
    import numpy as np

    from memhil.algorithms.mars.kernels import exp2_f32

    # the whole normal range, and a fine grid over one period of the reduction (|r| <= 1/2)
    y = np.concatenate(
        [np.linspace(-126.0, 127.0, 100_001), np.linspace(-0.5, 0.5, 100_001)]
    ).astype(np.float32)
    out = np.empty_like(y)
    exp2_f32(y, out, np.empty(y.shape, np.int32))
    rel = np.abs(out.astype(np.float64) / np.exp2(y.astype(np.float64)) - 1.0)
    assert rel.max() < 2.0**-23  # the degree-6 fit (2e-9) plus float32 rounding: < 1 ulp
    clipped = np.array([-1000.0, 1000.0], np.float32)
    exp2_f32(clipped, out[:2], np.empty(2, np.int32))
    assert out[0] == np.float32(2.0**-126) and out[1] == np.float32(2.0**127)
    gen = torch.Generator().manual_seed(11)
    layer = MARSLayer(2, 9, dt=(0.001, 0.09), generator=gen)
    x = torch.randn(3, 2000, 2, generator=gen)
    with torch.no_grad():
        fused, _ = layer(x, equilibrium=False)  # the fused kernel
        a, c = layer.coefficients(layer.project(x))
        given = layer._states_fused(x, layer.project(x))  # a projection computed outside
    ref = diagonal_recurrence(a, c, "loop")
    # states in (0, 1); exps differ by < 1 ulp, accumulated over ~1/(1-a) <= ~1e3 steps
    assert (fused - ref).abs().max() < 1e-5 and (given - ref).abs().max() < 1e-5


def test_pooled_kernel_is_as_close_to_float64_as_the_float32_torch_path():
    # the base-2 kernel against the same formula in float64, over 1500 steps: no worse than
    # torch's float32 coefficients and loop (both ~1e-5: float32 rounding accumulated over
    # the longest memory, ~1/(1-a) ~ 1e3 steps); the margin 1.5x covers the two roundings
    # differing in sign, not a worse method
    gen = torch.Generator().manual_seed(12)
    model = MARS(1, 100, 1, dt=(0.001, 0.09), p=5.0, gamma=1.0, seed=0)
    layer = model.layers[0]
    x = torch.randn(16, 1500, 1, generator=gen)
    with torch.no_grad():
        fused = model.features(x)
        a32, c32 = layer.coefficients(layer.project(x))
        torch32 = pool_states(diagonal_recurrence(a32, c32, "loop"), None, "mean_last")
        model64 = MARS(1, 100, 1, dt=(0.001, 0.09), p=5.0, gamma=1.0, seed=0).double()
        ref = model64.features(x.double(), method="loop")
    err_fused = (fused.double() - ref).abs().max()
    err_torch = (torch32.double() - ref).abs().max()
    assert err_fused < 1.5 * err_torch and err_fused < 5e-5


def test_fused_kernel_clips_rate_exponents_only_where_they_can_leave_the_float32_range():
    import numpy as np

    from memhil.algorithms.mars.kernels import mf_states

    # c = e^(log_c0 + 8 s): at log_c0 = -120 below float32's normal range (~1e-49); 2^k is
    # built from k's bits, so an unclipped exponent under -126 would give garbage, while
    # the clipped rate is 2^-126 ~ 1e-38 (states of that size, not of ~1)
    f32 = np.float32
    x = np.random.default_rng(0).standard_normal((2, 50, 1)).astype(f32)
    w, bias = np.ones((1, 3), f32), np.zeros(3, f32)
    for log_c0, atol in ((-12.0, 1e-6), (-120.0, 1e-35)):
        lc0, ld0 = np.full(3, log_c0, f32), np.full(3, -3.0, f32)
        out = np.empty((2, 50, 3), f32)
        mf_states(x, w, bias, f32(5.0), lc0, f32(8.0), ld0, f32(0.8), f32(1.0), out)
        s = 1.0 / (1.0 + np.exp(-5.0 * x.astype(np.float64)))
        c = np.exp(log_c0 + 8.0 * s)
        a = 1.0 - c - np.exp(-3.0 - 0.8 * s)
        h, ref = np.zeros((2, 3)), np.empty((2, 50, 3))
        for t in range(50):
            h = a[:, t] * h + c[:, t]
            ref[:, t] = h
        # states <= 0.4 at -12 (float32 rounding ~1e-7 per step); <= ~1e-36 at -120
        assert np.isfinite(out).all() and np.abs(out - ref).max() < atol


# n_in 3: the projection inside the kernel; 20: projected beforehand; depth 2: lower layer
@pytest.mark.parametrize(("depth", "n_in"), [(1, 3), (2, 20)])
def test_pooled_kernel_equals_pooling_the_states(depth, n_in):
    # The kernel runs the same float32 loop as the states kernel over the valid steps only
    # and sums the mean in float64 (torch sums in float32): 1e-5 relative covers the
    # float32 sum over <= 120 steps with margin.

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 120, n_in, generator=gen)
    lengths = torch.tensor([120, 1, 7, 64, 119, 30, 2, 88, 120])
    model = MARS(n_in, 40, depth, seed=2)
    close = functools.partial(torch.testing.assert_close, rtol=1e-5, atol=1e-7)
    for lens in (None, lengths):
        states = model.layer_states(x, lens)
        for pool in ("mean", "last", "mean_last"):
            want = torch.cat([pool_states(s, lens, pool) for s in states], dim=-1)
            close(model.features(x, lens, pool=pool), want)
        close(model.features(x, lens, layers="last"), pool_states(states[-1], lens, "mean_last"))
    padded = x.clone()
    padded[2, 7:] = 1e3  # padding after the valid steps never reaches the features
    torch.testing.assert_close(
        model.features(padded, lengths), model.features(x, lengths), rtol=0.0, atol=0.0
    )
    with pytest.raises(ValueError, match="lengths must lie in 1..120"):
        model.features(x, torch.full((9,), 121))


def test_pooled_kernel_reads_a_projection_once():
    calls = []
    model = MARS(2, 16, 1, seed=0)
    layer = model.layers[0]

    def read(x):
        calls.append(x.shape)
        return layer.project(x)

    x = torch.randn(4, 30, 2, generator=torch.Generator().manual_seed(0))
    got = model.features(x, projections=[read])
    assert calls == [(4, 30, 2)]  # an array read is one read, even on the pooled path
    torch.testing.assert_close(got, model.features(x), rtol=1e-6, atol=1e-7)
