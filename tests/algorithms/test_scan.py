"""The parallel scan equals the sequential recurrence (real, complex, with h0, long T)."""

import pytest
import torch

from memhil.nn.scan import linear_recurrence_loop, linear_scan


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
