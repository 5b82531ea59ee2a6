"""LRU: scan equals loop, stability by construction, and the classifier learns a toy task."""

import torch

from memhil.nn.lru import LRU, LRUClassifier


def test_lru_scan_equals_loop_long_sequence():
    gen = torch.Generator().manual_seed(0)
    layer = LRU(6, 10, r_min=0.9, r_max=0.999, generator=gen)
    x = torch.randn(3, 1200, 6, generator=gen)
    with torch.no_grad():
        got, want = layer(x), layer.forward_loop(x)
    # float32 sums of up to ~1/(1-0.999) = 1000 terms of O(1): 1e-5 relative to the output scale
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


def test_lru_eigenvalues_stay_inside_unit_circle():
    layer = LRU(4, 16, r_min=0.0, r_max=0.999, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer.nu_log.fill_(-10.0)  # |λ| = exp(-e^-10) ≈ 1 - 4.5e-5: still < 1 in float32
    assert bool((layer.eigenvalues().abs() < 1).all())


def test_lru_classifier_learns_sign_of_first_step():
    torch.manual_seed(0)
    x = torch.randn(128, 40, 1)
    y = (x[:, 0, 0] > 0).long()
    model = LRUClassifier(1, 2, d_model=16, d_state=16, depth=1, r_min=0.9, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    acc = (model(x).argmax(-1) == y).float().mean().item()
    assert acc > 0.9  # a memory of 40 steps with |λ| ≥ 0.9 is easy; chance is 0.5
