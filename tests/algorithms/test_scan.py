"""The parallel scan equals the sequential recurrence (real, complex, with h0, long T)."""

import pytest
import torch

from memhil.nn.scan import (
    doubling_scan,
    linear_recurrence_loop,
    linear_scan,
    linear_scan_in_place,
)


@pytest.mark.parametrize("steps", [1, 2, 7, 64, 1500])
def test_scan_equals_loop_real(steps):
    gen = torch.Generator().manual_seed(steps)
    a = torch.rand(3, steps, 5, generator=gen, dtype=torch.float64) * 0.999
    b = torch.randn(3, steps, 5, generator=gen, dtype=torch.float64)
    h0 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        linear_scan(a, b, h0), linear_recurrence_loop(a, b, h0), rtol=1e-10, atol=1e-10
    )


def test_scan_complex_broadcast_decay_float32():
    gen = torch.Generator().manual_seed(0)
    lam = torch.polar(
        torch.rand(8, generator=gen) * 0.2 + 0.79, torch.rand(8, generator=gen) * 6.28
    )
    b = torch.randn(2, 1000, 8, generator=gen, dtype=torch.complex64)
    got = linear_scan(lam.view(1, 1, 8), b)
    want = linear_recurrence_loop(lam.view(1, 1, 8), b)
    # float32 tolerance: each scan element is a sum of ~1/(1-|λ|) ≈ 5 terms of O(1) rounded values
    assert (got - want).abs().max().item() < 1e-5


def test_scan_gradient_matches_loop():
    gen = torch.Generator().manual_seed(1)
    a = (torch.rand(2, 33, 4, generator=gen, dtype=torch.float64) * 0.9).requires_grad_()
    b = torch.randn(2, 33, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    ga = torch.autograd.grad(linear_scan(a, b).square().sum(), (a, b))
    gb = torch.autograd.grad(linear_recurrence_loop(a, b).square().sum(), (a, b))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


def test_compiled_scan_gradients_in_a_b_and_h0_match_the_loop_complex():
    gen = torch.Generator().manual_seed(2)
    a = torch.polar(
        torch.rand(2, 17, 3, generator=gen, dtype=torch.float64) * 0.9,
        torch.rand(2, 17, 3, generator=gen, dtype=torch.float64) * 6.28,
    ).requires_grad_()
    b = torch.randn(2, 17, 3, generator=gen, dtype=torch.complex128, requires_grad=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.complex128, requires_grad=True)
    got = torch.autograd.grad(linear_scan(a, b, h0).abs().square().sum(), (a, b, h0))
    want = torch.autograd.grad(linear_recurrence_loop(a, b, h0).abs().square().sum(), (a, b, h0))
    for x, y in zip(got, want):
        # the compiled adjoint runs the loop's own operations backwards: float64 rounding only
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_compiled_scan_gradient_through_a_broadcast_decay_and_an_other_dim():
    gen = torch.Generator().manual_seed(3)
    lam = (torch.rand(4, generator=gen, dtype=torch.float64) * 0.9).requires_grad_()
    b = torch.randn(9, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(linear_scan(lam.view(1, 1, 4), b, dim=0).sum(), (lam, b))
    want = torch.autograd.grad(linear_recurrence_loop(lam.view(1, 1, 4), b, dim=0).sum(), (lam, b))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 5, 300])
def test_doubling_scan_the_gpu_form_equals_the_loop_on_cpu(steps):
    gen = torch.Generator().manual_seed(steps)
    a = torch.rand(2, steps, 3, generator=gen, dtype=torch.float64) * 0.999
    b = torch.randn(2, steps, 3, generator=gen, dtype=torch.float64)
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        doubling_scan(a, b, h0, 1), linear_recurrence_loop(a, b, h0), rtol=1e-10, atol=1e-10
    )


def test_in_place_scan_overwrites_b_with_the_states():
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(3, 50, 6, generator=gen) * 0.99
    b = torch.randn(3, 50, 6, generator=gen)
    want = linear_recurrence_loop(a, b)
    got = linear_scan_in_place(a, b.clone())
    # the same multiply-add in the same order as the loop: float32 results agree exactly
    # up to the compiler's freedom to contract a*h + b into one FMA (one rounding fewer)
    assert (got - want).abs().max() < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scan_on_cuda_equals_the_loop_values_and_gradients():
    gen = torch.Generator().manual_seed(5)
    a = (torch.rand(2, 700, 4, generator=gen, dtype=torch.float64) * 0.99).cuda()
    b = torch.randn(2, 700, 4, generator=gen, dtype=torch.float64).cuda()
    a.requires_grad_()
    b.requires_grad_()
    got = linear_scan(a, b)
    want = linear_recurrence_loop(a, b)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    g1 = torch.autograd.grad(got.square().sum(), (a, b))
    g2 = torch.autograd.grad(want.square().sum(), (a, b))
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
