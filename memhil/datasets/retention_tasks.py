"""Synthetic long-range retention tasks (seeded, offline): copy-first-input, N-bit flip-flop,
delayed recall with distractors. Each must hold a discrete value over gaps of up to T steps.

All return :class:`ClassificationData`. Copy-first-input and delayed recall are sequence
classification (``y`` of shape (N,), read out at the last step). The flip-flop is the
**per-step target variant**: ``y`` has shape (N, T, n_bits) with values in {0, 1} (the state
of each bit after step t) and ``n_classes`` = 2 is the class count per bit and step.
"""

from __future__ import annotations

import torch

from memhil.datasets.containers import ClassificationData, Split


def _check(seq_len: int, n_train: int, n_test: int) -> None:
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} must be >= 2")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must be >= 1")


def _split(make, n_train: int, n_test: int, seed: int) -> tuple[Split, Split]:
    gen = torch.Generator().manual_seed(seed)
    return make(n_train, gen), make(n_test, gen)


def copy_first_input(
    seq_len: int = 100,
    *,
    n_symbols: int = 4,
    noise_std: float = 0.3,
    n_train: int = 1000,
    n_test: int = 500,
    seed: int = 0,
) -> ClassificationData:
    """Recall the symbol shown at step 0 after ``seq_len − 1`` steps of noise.

    Channels: ``n_symbols`` one-hot symbol channels plus a start flag (1 at step 0 only); the
    symbol channels carry Gaussian noise of std ``noise_std`` at every later step. The label
    is the first symbol. x: (N, T, n_symbols + 1).
    """
    _check(seq_len, n_train, n_test)
    if n_symbols < 2:
        raise ValueError(f"n_symbols={n_symbols} must be >= 2")

    def make(n: int, gen: torch.Generator) -> Split:
        y = torch.randint(0, n_symbols, (n,), generator=gen)
        x = torch.zeros(n, seq_len, n_symbols + 1)
        x[:, 1:, :n_symbols] = torch.randn(n, seq_len - 1, n_symbols, generator=gen) * noise_std
        x[torch.arange(n), 0, y] = 1.0
        x[:, 0, n_symbols] = 1.0
        return Split(x, y)

    train, test = _split(make, n_train, n_test, seed)
    return ClassificationData(f"copy-first-T{seq_len}", train, test, n_symbols)


def flip_flop(
    seq_len: int = 100,
    *,
    n_bits: int = 3,
    pulses_per_bit: float = 4.0,
    n_train: int = 1000,
    n_test: int = 500,
    seed: int = 0,
) -> ClassificationData:
    """N-bit flip-flop with sparse set/reset pulses (per-step targets).

    Each of ``n_bits`` input channels receives, at each step with probability
    ``pulses_per_bit / seq_len``, a +1 (set) or −1 (reset) pulse; the target of bit k at step
    t is 1 if its most recent pulse was a set, else 0 (0 before the first pulse). Gaps between
    pulses grow with T. x: (N, T, n_bits); y: (N, T, n_bits) in {0, 1}.
    """
    _check(seq_len, n_train, n_test)
    if n_bits < 1:
        raise ValueError(f"n_bits={n_bits} must be >= 1")
    p = pulses_per_bit / seq_len
    if not 0.0 < p <= 1.0:
        raise ValueError(f"pulses_per_bit / seq_len = {p} must lie in (0, 1]")

    def make(n: int, gen: torch.Generator) -> Split:
        fire = torch.rand(n, seq_len, n_bits, generator=gen) < p
        polarity = torch.randint(0, 2, (n, seq_len, n_bits), generator=gen) * 2 - 1
        x = (fire * polarity).float()
        # index of the most recent pulse at or before t (−1: none yet), vectorized over time
        steps = torch.arange(seq_len).view(1, -1, 1).expand_as(fire)
        last = torch.where(fire, steps, torch.full_like(steps, -1)).cummax(dim=1).values
        last_polarity = torch.gather(x, 1, last.clamp_min(0))
        y = ((last >= 0) & (last_polarity > 0)).long()
        return Split(x, y)

    train, test = _split(make, n_train, n_test, seed)
    return ClassificationData(f"flip-flop{n_bits}-T{seq_len}", train, test, 2)


def delayed_recall(
    seq_len: int = 100,
    *,
    n_symbols: int = 4,
    distractor_rate: float = 0.5,
    cue_window: float = 0.1,
    n_train: int = 1000,
    n_test: int = 500,
    seed: int = 0,
) -> ClassificationData:
    """Store a cue at a random early step, ignore distractor symbols, recall at the end.

    Channels: ``n_symbols`` one-hot symbol channels, a "store" flag (1 with the cue) and a
    "recall" flag (1 at the last step). The cue appears at a uniformly random step within the
    first ``cue_window`` of the sequence; every other step except the last shows a random
    distractor symbol (without the store flag) with probability ``distractor_rate``. The label
    is the cue symbol. x: (N, T, n_symbols + 2).
    """
    _check(seq_len, n_train, n_test)
    if n_symbols < 2:
        raise ValueError(f"n_symbols={n_symbols} must be >= 2")
    if not 0.0 <= distractor_rate <= 1.0:
        raise ValueError(f"distractor_rate={distractor_rate} must lie in [0, 1]")
    window = max(1, min(seq_len - 1, round(cue_window * seq_len)))

    def make(n: int, gen: torch.Generator) -> Split:
        y = torch.randint(0, n_symbols, (n,), generator=gen)
        cue_t = torch.randint(0, window, (n,), generator=gen)
        shown = torch.rand(n, seq_len, generator=gen) < distractor_rate
        symbols = torch.randint(0, n_symbols, (n, seq_len), generator=gen)
        x = torch.nn.functional.one_hot(symbols, n_symbols).float() * shown.unsqueeze(-1)
        x = torch.cat([x, torch.zeros(n, seq_len, 2)], dim=-1)
        rows = torch.arange(n)
        x[rows, cue_t] = 0.0
        x[rows, cue_t, y] = 1.0
        x[rows, cue_t, n_symbols] = 1.0
        x[:, -1] = 0.0
        x[:, -1, n_symbols + 1] = 1.0
        return Split(x, y)

    train, test = _split(make, n_train, n_test, seed)
    return ClassificationData(f"delayed-recall-T{seq_len}", train, test, n_symbols)
