"""Equilibrium propagation on a resistive network: the local rule, the clipped SGD step and
the training loop, with conductances held either ideally or on memristive devices.

EqProp (Scellier & Bengio, Front. Comput. Neurosci. 2017) in a resistive circuit
(``docs/algorithms.md#learning-rule``): relax the
circuit freely, relax it again with a small current -beta dL/dV_out injected at the
outputs (or at +beta and -beta, the centred form), and move every conductance by the
difference of the squared voltage drops across it. The step

    dG = -lr g_max dL/d(G/g_max),   |dG| <= max_rel_change G,   G + dG in [g_min, g_max]

is the desired change; a ``ConductanceStore`` realises it: ``IdealConductances`` exactly,
``memhil.algorithms.eqprop.devices.DeviceConductances`` through device pulses, where the
device model decides what change actually happens.

Usage::

    net = ResistiveNetwork(NetworkSpec((4, 10, 3)), g_ref_s=g_max)
    store = IdealConductances(init_conductances(net.spec, g_min, g_max, seed=0), g_min, g_max)
    history = EqPropTrainer(net, store, EqPropConfig()).fit(iris(), epochs=40)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch
from torch import Tensor

from memhil.algorithms.eqprop.network import NetworkSpec, ResistiveNetwork
from memhil.core.config import require
from memhil.datasets.containers import ClassificationData


class ConductanceStore(Protocol):
    """Where the network's conductances live: read them (S, one tensor per layer) and
    request changes (S); the store decides what change is realised."""

    g_min_s: float
    g_max_s: float

    def read(self) -> list[Tensor]: ...

    def apply(self, delta_s: Sequence[Tensor]) -> None: ...


class IdealConductances:
    """Conductances as exact numbers: every requested change happens (the reference)."""

    def __init__(self, g_s: Sequence[Tensor], g_min_s: float, g_max_s: float):
        require(
            0 < g_min_s < g_max_s, "g_min_s", f"need 0 < g_min_s ({g_min_s}) < g_max_s ({g_max_s})"
        )
        self.g_min_s, self.g_max_s = float(g_min_s), float(g_max_s)
        self._g = [t.detach().to(torch.float64).clone() for t in g_s]

    def read(self) -> list[Tensor]:
        return [t.clone() for t in self._g]

    def apply(self, delta_s: Sequence[Tensor]) -> None:
        self._g = [(g + d).clamp(self.g_min_s, self.g_max_s) for g, d in zip(self._g, delta_s)]


def init_conductances(
    spec: NetworkSpec,
    g_min_s: float,
    g_max_s: float,
    *,
    seed: int = 0,
    low: float = 0.0,
    high: float = 0.5,
) -> list[Tensor]:
    """Random initial conductances (S), uniform in the fraction [low, high] of the range
    [g_min, g_max] (seeded); small conductances leave room to grow either branch of a pair."""
    require(0.0 <= low < high <= 1.0, "low", f"need 0 <= low ({low}) < high ({high}) <= 1")
    gen = torch.Generator().manual_seed(seed)
    span = g_max_s - g_min_s
    return [
        g_min_s
        + span * (low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64))
        for shape in spec.layer_shapes()
    ]


@dataclass(frozen=True)
class EqPropConfig:
    """Learning hyper-parameters. ``beta_rel``: nudge strength in units of g_max (the
    injected current is beta_rel g_max dL/do). ``lr``: dimensionless (one value, or one per
    layer). ``max_rel_change``: cap on |dG| / G per step (EBANA's +-50 %)."""

    beta_rel: float = 0.05
    centered: bool = True
    lr: float | tuple[float, ...] = 5.0
    batch_size: int = 16
    max_rel_change: float = 0.5

    def __post_init__(self) -> None:
        require(self.beta_rel > 0, "beta_rel", f"must be > 0, got {self.beta_rel}")
        lrs = self.lr if isinstance(self.lr, tuple) else (self.lr,)
        require(all(v > 0 for v in lrs), "lr", f"must be > 0, got {self.lr}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(
            self.max_rel_change > 0, "max_rel_change", f"must be > 0, got {self.max_rel_change}"
        )


def sgd_step(
    grads: Sequence[Tensor],
    g_s: Sequence[Tensor],
    lr: float | Sequence[float],
    g_min_s: float,
    g_max_s: float,
    max_rel_change: float = 0.5,
) -> list[Tensor]:
    """Desired conductance changes (S): -lr g_max grad, limited to +-max_rel_change G and
    such that G + dG stays in [g_min, g_max]. ``grads`` are dL/d(G/g_max)."""
    lrs = list(lr) if isinstance(lr, (tuple, list)) else [cast(float, lr)] * len(grads)
    if len(lrs) != len(grads):
        raise ValueError(f"got {len(lrs)} learning rates for {len(grads)} layers")
    out = []
    for gr, g, rate in zip(grads, g_s, lrs):
        d = -rate * g_max_s * gr
        cap = max_rel_change * g
        d = torch.maximum(torch.minimum(d, cap), -cap)
        out.append((g + d).clamp(g_min_s, g_max_s) - g)
    return out


@dataclass
class History:
    """Per-epoch curves (epoch 0 is before training)."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)


class EqPropTrainer:
    """Mini-batch EqProp: per batch one free and one (two if centred) nudged relaxation,
    the local gradient, one clipped SGD step realised by the store."""

    def __init__(
        self,
        network: ResistiveNetwork,
        store: ConductanceStore,
        config: EqPropConfig = EqPropConfig(),
        *,
        seed: int = 0,
    ):
        self.net, self.store, self.cfg = network, store, config
        self._gen = torch.Generator().manual_seed(seed)

    def step(self, x: Tensor, y: Tensor) -> float:
        """One update on the batch (x, y); returns the batch's free-phase loss (V^2)."""
        g = self.store.read()
        grads, v_free = self.net.eqprop_gradient(g, x, y, self.cfg.beta_rel, self.cfg.centered)
        delta = sgd_step(
            grads, g, self.cfg.lr, self.store.g_min_s, self.store.g_max_s, self.cfg.max_rel_change
        )
        self.store.apply(delta)
        return float(self.net.loss(v_free, y).mean())

    def train_epoch(self, x: Tensor, y: Tensor) -> float:
        """One shuffled pass over (x, y); the loop over batches is the online-learning loop."""
        order = torch.randperm(x.shape[0], generator=self._gen)
        losses = []
        for start in range(0, x.shape[0], self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            losses.append(self.step(x[idx], y[idx]) * idx.numel())
        return sum(losses) / x.shape[0]

    def evaluate(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        """(mean loss, accuracy) of the free phase with the current conductances."""
        g = self.store.read()
        v = self.net.solve(g, x)
        acc = float((self.net.outputs(v).argmax(1) == y).double().mean())
        return float(self.net.loss(v, y).mean()), acc

    def fit(
        self,
        data: ClassificationData,
        epochs: int,
        on_epoch: Callable[[int, History], None] | None = None,
    ) -> History:
        """Train for ``epochs``; records loss and accuracies before and after each epoch."""
        hist = History()
        tr, te = data.train, data.test

        def record() -> None:
            loss, acc = self.evaluate(tr.x, tr.y)
            hist.train_loss.append(loss)
            hist.train_acc.append(acc)
            hist.test_acc.append(self.evaluate(te.x, te.y)[1])

        record()
        for epoch in range(epochs):
            self.train_epoch(tr.x, tr.y)
            record()
            if on_epoch is not None:
                on_epoch(epoch + 1, hist)
        return hist
