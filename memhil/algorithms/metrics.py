"""Honesty checks for learning results: the histogram of a classifier's test predictions, a
``collapsed`` flag for a (near-)constant predictor, and steps-to-converge of a learning curve.

A model that predicts one class for every input scores the frequency of that class, e.g.
66/256 = 0.258 on a 4-class test set; reported as "accuracy" that number looks like a weak
model rather than one that learned nothing. A partial collapse is subtler: a model that
never predicts one of four balanced classes and gets the other three right scores ~0.75,
far from any constant predictor, yet has not learned the task; the summary lists the
classes never predicted. Every classification result should carry :func:`prediction_summary`
beside its accuracy (``docs/algorithms.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: Share of all test predictions taken by one class at or above which a classifier counts
#: as collapsed. A model that tells even two classes apart on a test set whose classes
#: each hold <= 50 % of the labels gives the top class at most ~50-60 % of its predictions;
#: 90 % leaves room for imbalanced test sets (a 4-class set drawn at random holds 19-31 %
#: per class at n = 256) and for an undertrained model that is merely biased, while it
#: still catches a constant predictor (100 %) and one that answers differently on a few
#: inputs only. Its accuracy is then at most (label share of that class) + 10 points.
COLLAPSE_FRACTION = 0.9


@dataclass(frozen=True)
class PredictionSummary:
    """Prediction histogram (counts per class), the most-predicted class and its share, the
    share of the most frequent label (the accuracy of a constant predictor; NaN without
    labels), the collapse flag at ``threshold``, and the classes that occur among the labels
    (all classes without labels) but are never predicted: a partial collapse."""

    counts: tuple[int, ...]
    top_class: int
    top_fraction: float
    majority_fraction: float
    collapsed: bool
    threshold: float
    never_predicted: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (results files)."""
        return {
            "histogram": list(self.counts),
            "top_class": self.top_class,
            "top_fraction": self.top_fraction,
            "majority_fraction": self.majority_fraction,
            "collapsed": self.collapsed,
            "collapse_threshold": self.threshold,
            "never_predicted": list(self.never_predicted),
        }

    def metrics(self) -> dict[str, float]:
        """The flag and shares as floats (a run store's metric rows)."""
        return {
            "collapsed": float(self.collapsed),
            "top_class_fraction": self.top_fraction,
            "majority_fraction": self.majority_fraction,
            "classes_never_predicted": float(len(self.never_predicted)),
        }


def prediction_histogram(predictions: Tensor, n_classes: int) -> Tensor:
    """Counts per class (n_classes,) of integer ``predictions`` of any shape (per-step bit
    predictions count as classes 0/1)."""
    p = torch.as_tensor(predictions).reshape(-1).long()
    if p.numel() == 0:
        raise ValueError("no predictions to histogram")
    lo, hi = int(p.min()), int(p.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"predictions span [{lo}, {hi}], outside the classes [0, {n_classes - 1}]")
    return torch.bincount(p, minlength=n_classes)


def prediction_summary(
    predictions: Tensor,
    n_classes: int,
    labels: Tensor | None = None,
    *,
    threshold: float = COLLAPSE_FRACTION,
) -> PredictionSummary:
    """Histogram of ``predictions``, whether one class takes >= ``threshold`` of them and
    which classes are never predicted; ``labels`` (same classes) give the constant-predictor
    accuracy to compare against and restrict "never predicted" to classes that occur."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"collapse threshold {threshold} must lie in (0, 1]")
    counts = prediction_histogram(predictions, n_classes)
    total = int(counts.sum())
    top = int(counts.argmax())
    top_fraction = int(counts[top]) / total
    majority = float("nan")
    occurring = torch.ones(n_classes, dtype=torch.bool)
    if labels is not None:
        label_counts = prediction_histogram(labels, n_classes)
        majority = int(label_counts.max()) / int(label_counts.sum())
        occurring = label_counts > 0
    return PredictionSummary(
        counts=tuple(int(c) for c in counts),
        top_class=top,
        top_fraction=top_fraction,
        majority_fraction=majority,
        collapsed=top_fraction >= threshold,
        threshold=threshold,
        never_predicted=tuple(int(c) for c in torch.nonzero(occurring & (counts == 0)).flatten()),
    )


def is_partial_collapse(summary: Mapping[str, float]) -> bool:
    """Whether a run's stored collapse metrics (``PredictionSummary.metrics``) describe a
    partial collapse: not collapsed, but some occurring class never predicted (False for
    runs stored before ``classes_never_predicted`` existed)."""
    missing = float(summary.get("classes_never_predicted", float("nan")))
    return not bool(summary.get("collapsed")) and not math.isnan(missing) and missing >= 1


def format_accuracy(
    mean: float, sd: float, n_collapsed: int, n_runs: int, n_partial: int = 0
) -> str:
    """``mean ± sd`` with ``[k/n collapsed]`` beside it when any run was a (near-)constant
    predictor and ``[j/n miss a class]`` when any other run never predicted some class, so a
    table never shows such an accuracy without the flag."""
    flags = [f"{n_collapsed}/{n_runs} collapsed"] if n_collapsed else []
    flags += [f"{n_partial}/{n_runs} miss a class"] if n_partial else []
    text = f"{mean:.3f} ± {sd:.3f}"
    return f"{text} [{', '.join(flags)}]" if flags else text


def smooth(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start), so the value at
    step k depends on steps <= k only."""
    v = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"smoothing window {window} must be >= 1")
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, v.size + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def steps_to_converge(
    curve: Sequence[float] | np.ndarray,
    *,
    margin: float,
    target: float | None = None,
    window: int = 20,
    steps: Sequence[int] | np.ndarray | None = None,
) -> int | None:
    """First step after which the smoothed ``curve`` stays within ``margin`` of ``target``
    (default: its own final smoothed value), or None when it ends outside that band.

    ``steps`` are the step numbers of the curve's points (default 1, 2, ... : the number of
    updates made when the point was recorded); the answer is one of them."""
    s = smooth(curve, window)
    if s.size == 0:
        raise ValueError("empty learning curve")
    if margin < 0:
        raise ValueError(f"margin {margin} must be >= 0")
    x = np.arange(1, s.size + 1) if steps is None else np.asarray(steps)
    if x.shape != s.shape:
        raise ValueError(f"{x.size} step numbers for a curve of {s.size} points")
    ref = s[-1] if target is None else float(target)
    outside = np.flatnonzero(np.abs(s - ref) > margin)
    if outside.size == 0:
        return int(x[0])
    first_inside = int(outside[-1]) + 1
    return None if first_inside >= s.size else int(x[first_inside])
