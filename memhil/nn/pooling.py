"""Pooling of sequence states (batch, T, units) into readout features (reservoirs, LRU, the
CMRU backbone), respecting the true lengths of end-padded sequences: the last valid state,
the mean over valid steps, or both."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Pooling = Literal["last", "mean", "mean_last"]
POOLINGS: tuple[str, ...] = ("last", "mean", "mean_last")


def check_pooling(pool: str) -> None:
    """Raise ValueError naming ``pool`` when it is not one of :data:`POOLINGS`."""
    if pool not in POOLINGS:
        raise ValueError(f"unknown pooling {pool!r} (choose from {', '.join(POOLINGS)})")


def valid_mask(batch: int, steps: int, lengths: Tensor | None, device: torch.device) -> Tensor:
    """(batch, T) boolean mask of the valid steps (all True without ``lengths``)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    lengths = lengths.to(device)
    if bool((lengths < 1).any()) or bool((lengths > steps).any()):
        raise ValueError(
            f"lengths must lie in 1..{steps}, got min {int(lengths.min())}, "
            f"max {int(lengths.max())}"
        )
    return torch.arange(steps, device=device)[None, :] < lengths[:, None]


def last_state(states: Tensor, lengths: Tensor | None) -> Tensor:
    """The state at each sequence's last valid step, (batch, units)."""
    if lengths is None:
        return states[:, -1]
    valid_mask(states.shape[0], states.shape[1], lengths, states.device)  # range check
    idx = (lengths.to(states.device).long() - 1).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
    return states.gather(1, idx).squeeze(1)


def mean_state(states: Tensor, lengths: Tensor | None) -> Tensor:
    """The mean state over each sequence's valid steps, (batch, units)."""
    if lengths is None:
        return states.mean(1)
    mask = valid_mask(states.shape[0], states.shape[1], lengths, states.device).to(states.dtype)
    return (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)


def pool_states(states: Tensor, lengths: Tensor | None, pool: Pooling = "last") -> Tensor:
    """Readout features of one layer's states: ``last``, ``mean`` or ``mean_last`` (both,
    concatenated as [mean, last])."""
    check_pooling(pool)
    if pool == "last":
        return last_state(states, lengths)
    if pool == "mean":
        return mean_state(states, lengths)
    return torch.cat([mean_state(states, lengths), last_state(states, lengths)], dim=-1)
