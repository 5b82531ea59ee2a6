"""Small tabular classification sets shipped with scikit-learn (offline)."""

from __future__ import annotations

import torch

from memhil.datasets.containers import ClassificationData, Split


def iris(test_fraction: float = 0.3, seed: int = 0) -> ClassificationData:
    """Iris (150×4, 3 classes), features standardized with training statistics, stratified split."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    bunch = load_iris()
    x_tr, x_te, y_tr, y_te = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    mean, std = x_tr.mean(0), x_tr.std(0)
    to_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)
    to_y = lambda a: torch.tensor(a, dtype=torch.long)
    return ClassificationData(
        "iris", Split(to_x(x_tr), to_y(y_tr)), Split(to_x(x_te), to_y(y_te)), 3
    )
