"""scikit-learn's 8×8 digits as tabular data or as pixel-by-pixel sequences (offline)."""

from __future__ import annotations

import torch

from memhil.datasets.containers import ClassificationData, Split


def _load_digits_split(
    test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All digits (x in [0, 1], y) and a seeded permutation cut into test and train indices."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0  # pixel intensities 0..16 -> [0, 1]
    y = torch.tensor(bunch.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=gen)
    n_test = round(test_fraction * len(y))
    return x, y, perm[:n_test], perm[n_test:]


def digits(test_fraction: float = 0.25, seed: int = 0) -> ClassificationData:
    """Digits as (N, 64) vectors in [0, 1]; a seeded random train/test split."""
    x, y, test_idx, train_idx = _load_digits_split(test_fraction, seed)
    return ClassificationData(
        "digits", Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx]), 10
    )


def digit_images(test_fraction: float = 0.25, seed: int = 0) -> ClassificationData:
    """Digits as (N, 1, 8, 8) images in [0, 1] (for the small CNNs)."""
    data = digits(test_fraction, seed)

    def img(s: Split) -> Split:
        return Split(s.x.reshape(-1, 1, 8, 8), s.y)

    return ClassificationData("digit_images", img(data.train), img(data.test), 10)


def sequential_digits(
    *,
    permuted: bool = False,
    by_rows: bool = False,
    test_fraction: float = 0.25,
    seed: int = 0,
    permutation_seed: int = 1234,
) -> ClassificationData:
    """Digits read pixel by pixel, (N, 64, 1) — or row by row, (N, 8, 8) with ``by_rows``.

    ``permuted`` applies one fixed pixel permutation (seeded by ``permutation_seed``) to every
    image, the usual permuted-sequential benchmark.
    """
    x, y, test_idx, train_idx = _load_digits_split(test_fraction, seed)
    if permuted:
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(permutation_seed))
        x = x[:, perm]
    seq = x.reshape(-1, 8, 8) if by_rows else x.reshape(-1, 64, 1)
    name = ("p" if permuted else "") + ("row-digits" if by_rows else "seq-digits")
    return ClassificationData(
        name, Split(seq[train_idx], y[train_idx]), Split(seq[test_idx], y[test_idx]), 10
    )
