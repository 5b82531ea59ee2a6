"""Closed-form ridge readout for reservoir features: the only trained part of a reservoir.

Features are standardised with training statistics, targets are one-hot ±1 (a ridge
classifier), and the penalty λ is chosen on a validation split from a grid. One SVD of the
training features gives the solution for every λ at once:
W_λ = V diag(s / (s² + λ)) Uᵀ Y, i.e. (XᵀX + λI)⁻¹ XᵀY. Everything runs in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

#: Default penalty grid (on standardised features).
LAMBDAS: tuple[float, ...] = tuple(10.0**k for k in range(-6, 5))


@dataclass
class RidgeClassifier:
    """A fitted linear readout: scores = ((f - mean) / scale) @ weight + bias.

    ``lam`` is the chosen penalty and ``val_accuracy`` maps each λ tried to its validation
    accuracy (empty when λ was given).
    """

    weight: Tensor  # (features, classes), float64
    bias: Tensor  # (classes,)
    mean: Tensor  # (features,)
    scale: Tensor  # (features,)
    lam: float
    val_accuracy: dict[float, float] = field(default_factory=dict)

    def decision(self, features: Tensor) -> Tensor:
        """Class scores (batch, classes) in float64."""
        f = features.to(torch.float64)
        return ((f - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, features: Tensor) -> Tensor:
        return self.decision(features).argmax(-1)

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        return float((self.predict(features) == labels.to(features.device)).double().mean())

    def affine(self) -> tuple[Tensor, Tensor]:
        """The same map on raw features: (W (classes, features), b (classes,)) with
        scores = f @ W.T + b, the form a crossbar holds."""
        w = self.weight / self.scale.unsqueeze(-1)
        return w.t().contiguous(), self.bias - self.mean @ w


def one_hot_pm(labels: Tensor, n_classes: int) -> Tensor:
    """±1 one-hot targets (batch, classes), float64."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1}, got {int(labels.min())}..{int(labels.max())}"
        )
    y = -torch.ones(labels.shape[0], n_classes, dtype=torch.float64, device=labels.device)
    y[torch.arange(labels.shape[0], device=labels.device), labels.long()] = 1.0
    return y


def _standardise(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    f = features.to(torch.float64)
    mean = f.mean(0)
    scale = f.std(0, unbiased=False).clamp_min(1e-12)
    return (f - mean) / scale, mean, scale


def ridge_path(x: Tensor, y: Tensor, lambdas: tuple[float, ...] | list[float]) -> Tensor:
    """Ridge solutions (len(lambdas), features, targets) of centred x (n, F) and y (n, C).

    Positive penalties solve through the smaller Gram matrix, X^T X (F <= n) or the dual
    X X^T (F > n; W = X^T (X X^T + λI)^-1 Y): one Cholesky factorisation for a single λ,
    one symmetric eigendecomposition shared by a grid of them. A Gram matrix squares
    the condition number, but the penalty bounds it: eigenvalue errors are ~1e-16 of the
    largest eigenvalue (~n F for standardised features), far below λ. A zero penalty
    takes a thin SVD, the minimum-norm least-squares solution.
    """
    lam = torch.as_tensor(list(lambdas), dtype=x.dtype, device=x.device)
    if bool((lam < 0).any()):
        raise ValueError(f"ridge penalties must be >= 0, got {list(lambdas)}")
    n, f = x.shape
    dual = f > n
    if bool((lam == 0).any()):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        shrink = s / (s.pow(2) + lam[:, None])  # (L, r)
        return torch.einsum("fr,lr,rc->lfc", vh.t(), shrink, u.t() @ y)
    gram = x @ x.t() if dual else x.t() @ x
    rhs = y if dual else x.t() @ y
    if lam.numel() == 1:
        eye = torch.eye(gram.shape[0], dtype=x.dtype, device=x.device)
        sol = torch.cholesky_solve(rhs, torch.linalg.cholesky(gram + lam[0] * eye))
        return (x.t() @ sol if dual else sol).unsqueeze(0)
    evals, vecs = torch.linalg.eigh(gram)
    basis = x.t() @ vecs if dual else vecs  # (F, r)
    shrink = 1.0 / (evals + lam[:, None])  # (L, r)
    return basis @ (shrink[:, :, None] * (vecs.t() @ rhs))  # (L, F, C): one batched product


def _fit(features: Tensor, labels: Tensor, n_classes: int, lam: float) -> RidgeClassifier:
    x, mean, scale = _standardise(features)
    y = one_hot_pm(labels, n_classes)
    y_mean = y.mean(0)
    w = ridge_path(x, y - y_mean, [lam])[0]
    return RidgeClassifier(w, y_mean, mean, scale, float(lam))


def fit_ridge(
    features: Tensor,
    labels: Tensor,
    n_classes: int,
    *,
    val_features: Tensor | None = None,
    val_labels: Tensor | None = None,
    lambdas: tuple[float, ...] | list[float] = LAMBDAS,
    refit: bool = True,
) -> RidgeClassifier:
    """Fit the ridge readout; with a validation split, choose λ from ``lambdas`` by
    validation accuracy (ties by the lower validation squared error, then the larger λ)
    and, with ``refit``, refit on train and validation together. Without one, ``lambdas``
    must hold exactly one value."""
    if features.dim() != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features must be (n, F) matching labels ({labels.shape[0]}), got "
            f"{tuple(features.shape)}"
        )
    lambdas = list(lambdas)
    if not lambdas:
        raise ValueError("the penalty grid `lambdas` is empty")
    if val_features is None or val_labels is None:
        if len(lambdas) != 1:
            raise ValueError(f"without a validation split give one penalty, got {len(lambdas)}")
        return _fit(features, labels, n_classes, lambdas[0])
    x, mean, scale = _standardise(features)
    y = one_hot_pm(labels, n_classes)
    y_mean = y.mean(0)
    path = ridge_path(x, y - y_mean, lambdas)  # (L, F, C)
    xv = (val_features.to(torch.float64) - mean) / scale
    decision = xv @ path + y_mean  # (L, n_val, C)
    pred = decision.argmax(-1)
    acc = (pred == val_labels.to(pred.device)).double().mean(1)
    # ties in accuracy (a count out of n_val) are common; the validation squared error of
    # the ±1 targets breaks them smoothly, so features that differ by rounding choose the
    # same λ (the larger λ wins an exact tie)
    err = (decision - one_hot_pm(val_labels, n_classes)).pow(2).mean((1, 2))
    scores = {float(lam): float(a) for lam, a in zip(lambdas, acc)}
    best = max(acc.tolist())
    lam = min(
        (lam for lam, a in scores.items() if a == best),
        key=lambda lam: (float(err[lambdas.index(lam)]), -lam),
    )
    if refit:
        model = _fit(
            torch.cat([features, val_features]), torch.cat([labels, val_labels]), n_classes, lam
        )
    else:
        i = lambdas.index(lam)
        model = RidgeClassifier(path[i], y_mean, mean, scale, lam)
    model.val_accuracy = scores
    return model
