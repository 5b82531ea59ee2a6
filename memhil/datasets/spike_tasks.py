"""Spiking tasks for e-prop (``docs/algorithms.md#tasks``): generated offline, seeded.

``pattern_generation``: Poisson input spikes, target a normalized sum of sinusoids
(srnn-pcm's task). ``spike_digits``: sklearn's 8×8 digits presented row by row as Poisson
spike trains (rate coding) or one spike per pixel (latency coding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from memhil.datasets.containers import ClassificationData, Split
from memhil.datasets.digits import sequential_digits


@dataclass(frozen=True)
class SpikePatternTask:
    """A regression task on spike inputs: ``x`` (N, T, channels) in {0, 1}, ``y`` the
    target trajectories (N, T, outputs); ``dt_s`` the time step."""

    name: str
    train: Split
    test: Split
    dt_s: float

    @property
    def seq_len(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.train.x.shape[-1])


def poisson_spikes(rate_hz: Tensor, dt_s: float, generator: torch.Generator) -> Tensor:
    """Bernoulli approximation of Poisson spikes: P(spike in a step) = rate * dt (<= 1)."""
    p = (rate_hz * dt_s).clamp(0.0, 1.0)
    return (torch.rand(p.shape, generator=generator) < p).to(torch.float32)


def pattern_generation(
    *,
    n_samples: int = 6,
    n_train: int = 3,
    n_in: int = 100,
    rate_hz: float = 50.0,
    steps: int = 1000,
    dt_s: float = 1e-3,
    freqs_hz: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0),
    n_out: int = 1,
    seed: int = 0,
) -> SpikePatternTask:
    """``n_samples`` pairs of (``n_in`` Poisson channels at ``rate_hz``, target) of
    ``steps`` steps; each target is sum_f A_f sin(2 pi f t + phi_f) with A ~ U(0.5, 2),
    phi ~ U(0, 2 pi), divided by its largest |value| (so it spans [-1, 1]). The first
    ``n_train`` samples form the training split, the rest the test split."""
    if not 1 <= n_train <= n_samples:
        raise ValueError(f"n_train must lie in 1..n_samples={n_samples}, got {n_train}")
    if not 0 < rate_hz * dt_s <= 1:
        raise ValueError(f"rate_hz * dt_s must lie in (0, 1], got {rate_hz * dt_s}")
    gen = torch.Generator().manual_seed(seed)
    x = poisson_spikes(torch.full((n_samples, steps, n_in), rate_hz), dt_s, gen)
    t = torch.arange(steps, dtype=torch.float64) * dt_s
    f = torch.tensor(freqs_hz, dtype=torch.float64)
    amp = (
        torch.rand(n_samples, n_out, len(freqs_hz), generator=gen, dtype=torch.float64) * 1.5 + 0.5
    )
    phase = (
        torch.rand(n_samples, n_out, len(freqs_hz), generator=gen, dtype=torch.float64)
        * 2
        * math.pi
    )
    # (N, 1, K, F) over t (1, T, 1, 1) -> (N, T, K)
    wave = amp.unsqueeze(1) * torch.sin(2 * math.pi * f * t.view(1, -1, 1, 1) + phase.unsqueeze(1))
    y = wave.sum(-1)
    y = (y / y.abs().amax(1, keepdim=True)).to(torch.float32)
    return SpikePatternTask(
        "pattern_generation", Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:]), dt_s
    )


def spike_digits(
    *,
    coding: Literal["rate", "latency"] = "rate",
    steps_per_row: int = 10,
    max_rate_hz: float = 200.0,
    dt_s: float = 1e-3,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> ClassificationData:
    """Digits as spike trains: the 8 rows of an image are shown one after another, each for
    ``steps_per_row`` steps on 8 channels (one per column), x of shape (N, 8 * steps_per_row, 8).

    ``rate``: pixel intensity p in [0, 1] fires Poisson spikes at p * ``max_rate_hz``.
    ``latency``: a pixel with p > 0 fires exactly once, round((1 - p) (steps_per_row - 1))
    steps after its row begins (bright pixels first), deterministic.
    """
    if steps_per_row < 1:
        raise ValueError(f"steps_per_row must be >= 1, got {steps_per_row}")
    if coding not in ("rate", "latency"):
        raise ValueError(f"unknown coding {coding!r} (rate, latency)")
    data = sequential_digits(by_rows=True, test_fraction=test_fraction, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)

    def encode(split: Split) -> Split:
        img = split.x  # (N, 8 rows, 8 columns) in [0, 1]
        n, rows, cols = img.shape
        if coding == "rate":
            rate = (img * max_rate_hz).repeat_interleave(steps_per_row, dim=1)
            spikes = poisson_spikes(rate, dt_s, gen)
        else:
            delay = torch.round((1.0 - img) * (steps_per_row - 1)).long()  # (N, rows, cols)
            step = torch.arange(steps_per_row).view(1, 1, -1, 1)
            fire = (step == delay.unsqueeze(2)) & (img.unsqueeze(2) > 0)  # (N, rows, S, cols)
            spikes = fire.reshape(n, rows * steps_per_row, cols).to(torch.float32)
        return Split(spikes, split.y)

    return ClassificationData(f"spike-digits-{coding}", encode(data.train), encode(data.test), 10)
