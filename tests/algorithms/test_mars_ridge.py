"""Ridge readout: the closed form, the choice of λ on the validation split, the refit and
the affine form used for deployment."""

from __future__ import annotations

import pytest
import torch

from memhil.algorithms.mars.readout import fit_ridge, one_hot_pm, ridge_path


def _problem(seed=0, n=60, n_val=200, f=40, classes=3):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, f, generator=gen, dtype=torch.float64) * 0.6

    def draw(m):
        y = torch.arange(m) % classes
        return centres[y] + torch.randn(m, f, generator=gen, dtype=torch.float64) * 1.5 + 3.0, y

    return draw(n), draw(n_val), classes


def test_path_is_the_closed_form_solution():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    for lam, w in zip([1e-3, 1.0, 50.0], ridge_path(x, y, [1e-3, 1.0, 50.0])):
        want = torch.linalg.solve(x.t() @ x + lam * torch.eye(8, dtype=torch.float64), x.t() @ y)
        assert torch.allclose(w, want, atol=1e-10)


@pytest.mark.parametrize("n", [30, 12])  # primal (features <= samples) and dual Gram forms
def test_path_is_the_closed_form_for_a_grid_one_penalty_and_zero(n):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, 20, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    eye = torch.eye(20, dtype=torch.float64)
    for lams in ([1e-6, 1e-2, 1.0, 1e3], [0.7]):  # eigendecomposition, Cholesky
        for lam, w in zip(lams, ridge_path(x, y, lams)):
            want = torch.linalg.solve(x.t() @ x + lam * eye, x.t() @ y)
            # conditioning: ||x||^2 / lam up to ~1e8 at lam = 1e-6 (rank-deficient dual)
            assert torch.allclose(w, want, rtol=1e-7, atol=1e-7)
    w0 = ridge_path(x, y, [0.0, 1.0])[0]  # zero penalty: the minimum-norm solution
    assert torch.allclose(w0, torch.linalg.pinv(x) @ y, atol=1e-9)


def test_fit_standardises_and_solves_the_centred_problem():
    (x, y), _, classes = _problem()
    model = fit_ridge(x, y, classes, lambdas=[2.0])
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    t = one_hot_pm(y, classes)
    want = torch.linalg.solve(
        z.t() @ z + 2.0 * torch.eye(z.shape[1], dtype=torch.float64), z.t() @ (t - t.mean(0))
    )
    assert torch.allclose(model.weight, want, atol=1e-10)
    assert torch.allclose(model.bias, t.mean(0))
    w, b = model.affine()
    assert torch.allclose(x @ w.t() + b, model.decision(x), atol=1e-9)


def test_lambda_is_chosen_on_validation_and_refit_on_everything():
    (x, y), (xv, yv), classes = _problem(seed=3)
    grid = [1e-6, 1e-2, 1.0, 1e2, 1e4]
    model = fit_ridge(x, y, classes, val_features=xv, val_labels=yv, lambdas=grid)
    by_hand = {lam: fit_ridge(x, y, classes, lambdas=[lam]).accuracy(xv, yv) for lam in grid}
    assert model.val_accuracy == pytest.approx(by_hand)
    best = max(by_hand.values())
    assert model.lam == max(lam for lam, a in by_hand.items() if a == best)
    # 60 noisy samples in 40 dims: the unregularised fit overfits, so a real penalty wins
    assert model.lam >= 1.0 and by_hand[1e-6] < best
    refit = fit_ridge(torch.cat([x, xv]), torch.cat([y, yv]), classes, lambdas=[model.lam])
    assert torch.allclose(model.weight, refit.weight)
    no_refit = fit_ridge(x, y, classes, val_features=xv, val_labels=yv, lambdas=grid, refit=False)
    assert torch.allclose(no_refit.weight, fit_ridge(x, y, classes, lambdas=[model.lam]).weight)


def test_errors_name_the_problem():
    (x, y), _, classes = _problem()
    with pytest.raises(ValueError, match="one penalty"):
        fit_ridge(x, y, classes, lambdas=[1.0, 2.0])
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        fit_ridge(x, y, 2, lambdas=[1.0])
    with pytest.raises(ValueError, match=">= 0"):
        ridge_path(x, x[:, :2], [-1.0])


def test_accuracy_ties_go_to_the_lower_validation_error_stable_under_rounding():
    (x, y), (xv, yv), classes = _problem(seed=3, n=40, n_val=30)
    grid = [10.0**k for k in range(-3, 5)]
    model = fit_ridge(x, y, classes, val_features=xv, val_labels=yv, lambdas=grid)
    acc = model.val_accuracy
    best = max(acc.values())
    tied = [lam for lam, a in acc.items() if a == best]
    assert len(tied) >= 2  # 30 validation samples: accuracy is coarse, ties are the rule

    def val_error(lam):
        fit = fit_ridge(x, y, classes, lambdas=[lam])
        return float((fit.decision(xv) - one_hot_pm(yv, classes)).pow(2).mean())

    assert model.lam == min(tied, key=val_error)
    # features equal up to float32 rounding choose the same penalty
    gen = torch.Generator().manual_seed(9)
    wobble = lambda f: f * (1 + 1e-7 * torch.randn(f.shape, generator=gen, dtype=f.dtype))
    again = fit_ridge(wobble(x), y, classes, val_features=wobble(xv), val_labels=yv, lambdas=grid)
    assert again.lam == model.lam
