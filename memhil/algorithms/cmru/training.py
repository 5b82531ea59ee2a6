"""Training recipe of the recurrent backbone (``docs/algorithms.md#backbone-and-training``):
AdamW (β₂ = 0.99, weight decay 1e-4, none on recurrent parameters), cosine learning rate
down to 1 %, gradient clip 1.0, mini-batches.

Sequence labels (``y`` of shape (N,)) use cross-entropy on the model's logits; per-step bit
targets (``y`` of shape (N, T, n_bits), e.g. the flip-flop) use a per-bit logistic loss and
bit accuracy over all steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from memhil.algorithms.cmru.diagnostics import CellInputRecorder, gradient_norms
from memhil.algorithms.cmru.units import CandidatePerturbation, EpsSchedule
from memhil.algorithms.metrics import PredictionSummary, prediction_summary
from memhil.datasets.containers import Split


@dataclass
class TrainConfig:
    """Optimiser settings; ``steps`` mini-batch updates of ``batch_size`` sequences."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip: float = 1.0
    eps_schedule: EpsSchedule | None = None
    #: "cosine": the learning rate falls to 1 % over ``steps``; "constant": it stays at
    #: ``lr``, so a run capped at B steps is the first B steps of one capped at 2B
    schedule: str = "cosine"
    seed: int = 0
    #: stop early once the mean mini-batch accuracy of the last ``window`` steps reaches this
    stop_accuracy: float | None = None
    window: int = 20
    #: evaluate the whole training split at the end (costly for long sequences)
    eval_train: bool = True
    #: record :mod:`~memhil.algorithms.cmru.diagnostics` every this many steps (0: never)
    diagnostics_every: int = 0


@dataclass
class TrainResult:
    """Loss (and mini-batch accuracy) per step and the final accuracies (test where a split
    was given); ``steps`` is the number of updates actually made. ``test_predictions`` is
    the histogram and collapse flag of the test predictions; ``diagnostics`` one dict per
    recorded step (``step``, gradient norms per group, memory-unit statistics)."""

    losses: list[float] = field(default_factory=list)
    batch_accuracies: list[float] = field(default_factory=list)
    steps: int = 0
    train_accuracy: float = float("nan")
    test_accuracy: float = float("nan")
    test_predictions: PredictionSummary | None = None
    diagnostics: list[dict[str, float]] = field(default_factory=list)


def _is_recurrent(name: str) -> bool:
    return ".cell." in name and not name.endswith(("out.weight", "out.bias"))


def loss_and_correct(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean loss, number correct, number of predictions) for class or per-step bit targets."""
    if y.dim() == 1:
        loss = nn.functional.cross_entropy(logits, y)
        return loss, (logits.argmax(-1) == y).sum(), y.numel()
    target = y.to(logits.dtype)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
    return loss, ((logits > 0) == (y > 0)).sum(), y.numel()


def _predictions(logits: Tensor, y: Tensor) -> Tensor:
    return logits.argmax(-1) if y.dim() == 1 else (logits > 0).long()


@torch.no_grad()
def predict(model: nn.Module, split: Split, *, batch_size: int = 256) -> tuple[Tensor, int]:
    """(predictions, number of classes) of ``model`` (eval mode) on ``split``: class indices
    for sequence labels, 0/1 per step and bit for bit targets."""
    was_training = model.training
    model.eval()
    out = []
    n_classes = 2
    for i in range(0, len(split), batch_size):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        lengths = None if split.lengths is None else split.lengths[i : i + batch_size]
        logits = model(x, lengths)
        n_classes = logits.shape[-1] if y.dim() == 1 else 2
        out.append(_predictions(logits, y))
    model.train(was_training)
    return torch.cat(out), n_classes


def summarize_predictions(model: nn.Module, split: Split) -> PredictionSummary:
    """Histogram and collapse flag of ``model``'s predictions on ``split``."""
    return _predictions_and_summary(model, split)[2]


def scores(model: nn.Module, split: Split) -> dict[str, float]:
    """Accuracy and the collapse metrics (``PredictionSummary.metrics``) from one pass."""
    preds, labels, summary = _predictions_and_summary(model, split)
    return {"accuracy": float((preds == labels).double().mean()), **summary.metrics()}


def _predictions_and_summary(model: nn.Module, split: Split):
    preds, n_classes = predict(model, split)
    labels = split.y if split.y.dim() == 1 else (split.y > 0).long()
    return preds, labels, prediction_summary(preds, n_classes, labels)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = 256,
    perturb: CandidatePerturbation | None = None,
) -> float:
    """Accuracy of ``model`` (eval mode) on ``split``; ``perturb`` acts on the cells' candidates."""
    was_training = model.training
    model.eval()
    correct, total = 0, 0
    for i in range(0, len(split), batch_size):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        lengths = None if split.lengths is None else split.lengths[i : i + batch_size]
        _, c, n = loss_and_correct(model(x, lengths, perturb=perturb), y)
        correct += int(c)
        total += n
    model.train(was_training)
    return correct / total


class Trainer:
    """This module's recipe, one mini-batch at a time: AdamW with the parameter groups,
    the cosine schedule over ``config.steps`` and the seeded batch sampler, with their
    state for checkpoints (``train`` runs it to the end)."""

    def __init__(self, model: nn.Module, config: TrainConfig | None = None):
        cfg = self.config = config or TrainConfig()
        self.model = model
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            (no_decay if _is_recurrent(name) or p.dim() < 2 else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(0.9, 0.99),
        )
        if cfg.schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule {cfg.schedule!r} (cosine, constant)")

        def factor(k: int) -> float:
            if cfg.schedule == "constant":
                return 1.0
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(k, cfg.steps) / cfg.steps))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.steps = 0
        #: one dict per ``config.diagnostics_every`` steps (see :class:`TrainResult`)
        self.diagnostics: list[dict[str, float]] = []
        self._recorder = CellInputRecorder(model) if cfg.diagnostics_every > 0 else None

    def step(self, split: Split) -> tuple[float, float]:
        """One update on a mini-batch drawn from ``split``: (loss, mini-batch accuracy)."""
        cfg, model = self.config, self.model
        if cfg.eps_schedule is not None:
            cfg.eps_schedule.apply(model, self.steps)
        model.train()
        n = len(split)
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=self.generator)
        batch = split.subset(idx)
        rec = self._recorder
        diagnose = rec is not None and self.steps % cfg.diagnostics_every == 0
        if rec is not None:
            rec.active = diagnose
        loss, correct, count = loss_and_correct(model(batch.x, batch.lengths), batch.y)
        self.optimizer.zero_grad()
        loss.backward()
        if diagnose:
            assert rec is not None
            self.diagnostics.append(
                {"step": float(self.steps), **gradient_norms(model), **rec.statistics(batch.x)}
            )
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        return float(loss.detach()), int(correct) / count

    def close(self) -> None:
        """Remove the diagnostics hooks from the model."""
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def state_dict(self) -> dict:
        """Optimiser, schedule, sampler and step count (the model's own state is apart)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])


def reached(batch_accuracies: list[float], stop_accuracy: float | None, window: int) -> bool:
    """The early-stopping criterion: the mean mini-batch accuracy of the last ``window``
    steps is at least ``stop_accuracy`` (never when it is None)."""
    recent = batch_accuracies[-window:]
    return (
        stop_accuracy is not None
        and len(recent) == window
        and sum(recent) / window >= stop_accuracy
    )


def train(
    model: nn.Module,
    train_split: Split,
    config: TrainConfig | None = None,
    test_split: Split | None = None,
) -> TrainResult:
    """Fit ``model`` on ``train_split`` with this module's recipe; returns losses and accuracies."""
    cfg = config or TrainConfig()
    trainer = Trainer(model, cfg)
    result = TrainResult()
    for step in range(cfg.steps):
        loss, accuracy = trainer.step(train_split)
        result.losses.append(loss)
        result.batch_accuracies.append(accuracy)
        result.steps = step + 1
        if reached(result.batch_accuracies, cfg.stop_accuracy, cfg.window):
            break
    trainer.close()
    result.diagnostics = trainer.diagnostics
    if cfg.eval_train:
        result.train_accuracy = evaluate(model, train_split)
    if test_split is not None:
        result.test_accuracy = evaluate(model, test_split)
        result.test_predictions = summarize_predictions(model, test_split)
    return result
