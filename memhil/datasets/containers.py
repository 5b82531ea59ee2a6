"""Dataset containers shared by the algorithm modules: tensors in, no loader logic."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    """One labelled split: ``x`` is (N, T, D) for sequences or (N, D) for tabular data.

    ``lengths`` holds the true length of each sequence when they were padded at the end
    with zeros (None when every sequence has length T).
    """

    x: Tensor
    y: Tensor
    lengths: Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: Tensor) -> Split:
        lengths = None if self.lengths is None else self.lengths[index]
        return Split(self.x[index], self.y[index], lengths)


@dataclass(frozen=True)
class ClassificationData:
    """Train and test splits of a classification task, with its name and class count."""

    name: str
    train: Split
    test: Split
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def seq_len(self) -> int:
        """Number of time steps T (sequences only)."""
        if self.train.x.dim() != 3:
            raise ValueError(
                f"{self.name} is not a sequence dataset: x has shape {tuple(self.train.x.shape)}"
            )
        return int(self.train.x.shape[1])

    def with_validation(
        self, fraction: float = 0.2, seed: int = 0
    ) -> tuple[ClassificationData, Split]:
        """Hold out a stratified ``fraction`` of the training split for model selection.

        Returns the data with the reduced training split, and the validation split.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation fraction {fraction} must lie in (0, 1)")
        gen = torch.Generator().manual_seed(seed)
        val_parts, train_parts = [], []
        for label in torch.unique(self.train.y):
            idx = torch.nonzero(self.train.y == label).flatten()
            idx = idx[torch.randperm(len(idx), generator=gen)]
            n_val = round(fraction * len(idx))
            if len(idx) > 1:
                n_val = min(max(n_val, 1), len(idx) - 1)
            val_parts.append(idx[:n_val])
            train_parts.append(idx[n_val:])
        train_idx = torch.cat(train_parts).sort().values
        val_idx = torch.cat(val_parts).sort().values
        return replace(self, train=self.train.subset(train_idx)), self.train.subset(val_idx)


def standardize(data: ClassificationData) -> ClassificationData:
    """Zero-mean, unit-variance features using training-split statistics only.

    Padding (beyond ``lengths``) stays zero so that pooled states are unaffected.
    """
    x = data.train.x
    mask = _valid_mask(data.train)
    flat = x[mask] if mask is not None else x.reshape(-1, x.shape[-1])
    mean = flat.mean(0)
    std = flat.std(0).clamp_min(1e-8)

    def apply(split: Split) -> Split:
        z = (split.x - mean) / std
        m = _valid_mask(split)
        if m is not None:
            z = torch.where(m.unsqueeze(-1), z, torch.zeros_like(z))
        return Split(z, split.y, split.lengths)

    return replace(data, train=apply(data.train), test=apply(data.test))


def _valid_mask(split: Split) -> Tensor | None:
    if split.lengths is None or split.x.dim() != 3:
        return None
    steps = torch.arange(split.x.shape[1])
    return steps.unsqueeze(0) < split.lengths.unsqueeze(1)
