"""minGRU: the parallel scan equals the sequential loop (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from memhil.nn.mingru import MinGRU


def test_mingru_scan_equals_loop_values_and_gradients():
    cell = MinGRU(5, 7, 3, generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(2, 300, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    probe = torch.randn(2, 300, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    results = []
    for run in (cell.forward, cell.forward_loop):
        cell.zero_grad()
        x.grad = None
        y = run(x)
        (y * probe).sum().backward()
        results.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in cell.parameters()])
    # float64; the scan reorders products of gates in (0, 1) over 300 steps
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert float(results[0][1].abs().max()) > 0


def test_mingru_states_are_the_gated_average():
    cell = MinGRU(2, 3)
    with torch.no_grad():
        cell.w_z.zero_()
        cell.b_z.fill_(100.0)  # z = 1: the state copies the candidate
    x = torch.randn(1, 5, 2)
    assert torch.allclose(cell.states(x), cell.candidate(x), atol=1e-6)


def test_mingru_chrono_gate_bias_init():
    # b_z = −log(τ − 1), τ ~ U(1, T_max): z = 1/τ, so unit k keeps its state ~τ_k steps
    cell = MinGRU(4, 256, max_timescale=50.0, generator=torch.Generator().manual_seed(1))
    tau = 1.0 / torch.sigmoid(cell.b_z.detach())
    assert float(tau.min()) >= 1.0 and float(tau.max()) <= 50.0 + 1e-3
    assert abs(float(tau.mean()) - 25.5) < 3.0  # U(1, 50) has mean 25.5; 256 draws, sd ≈ 0.9
    default = MinGRU(4, 256, generator=torch.Generator().manual_seed(1))
    assert float(default.b_z.detach().abs().max()) <= 0.5  # uniform ±1/√d_in, as before
    with pytest.raises(ValueError, match="max_timescale=2"):
        MinGRU(4, 8, max_timescale=2)
