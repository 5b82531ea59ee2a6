"""Prediction histogram, collapse flag and steps-to-converge (memhil.algorithms.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memhil.algorithms.metrics import (
    COLLAPSE_FRACTION,
    format_accuracy,
    is_partial_collapse,
    prediction_histogram,
    prediction_summary,
    smooth,
    steps_to_converge,
)


def _labels_with_66_of_class_2() -> torch.Tensor:
    """256 labels of 4 classes, 66 of them class 2 (the most frequent)."""
    counts = [63, 64, 66, 63]
    return torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])


def test_constant_predictor_at_66_of_256_is_flagged_collapsed():
    labels = _labels_with_66_of_class_2()
    preds = torch.full((256,), 2)
    summary = prediction_summary(preds, 4, labels)
    accuracy = float((preds == labels).float().mean())
    assert accuracy == pytest.approx(66 / 256) and round(accuracy, 3) == 0.258
    assert summary.collapsed
    assert summary.counts == (0, 0, 256, 0)
    assert summary.top_class == 2 and summary.top_fraction == 1.0
    # a constant predictor scores exactly the majority share: the number to compare against
    assert summary.majority_fraction == pytest.approx(accuracy)
    assert summary.as_dict()["collapsed"] is True
    assert summary.metrics()["collapsed"] == 1.0


def test_working_classifier_is_not_collapsed_and_threshold_is_inclusive():
    labels = _labels_with_66_of_class_2()
    assert not prediction_summary(labels, 4, labels).collapsed
    # exactly the threshold share on one class counts as collapsed, one fewer does not
    n = 100
    k = round(COLLAPSE_FRACTION * n)
    at = torch.cat([torch.zeros(k), torch.ones(n - k)])
    below = torch.cat([torch.zeros(k - 1), torch.ones(n - k + 1)])
    assert prediction_summary(at, 2).collapsed
    assert not prediction_summary(below, 2).collapsed
    assert np.isnan(prediction_summary(at, 2).majority_fraction)


def test_histogram_counts_any_shape_and_rejects_out_of_range():
    bits = torch.tensor([[[0, 1], [1, 1]], [[1, 1], [1, 0]]])  # per-step bit predictions
    assert prediction_histogram(bits, 2).tolist() == [2, 6]
    with pytest.raises(ValueError, match=r"\[0, 3\], outside the classes \[0, 2\]"):
        prediction_histogram(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="threshold"):
        prediction_summary(torch.tensor([0]), 2, threshold=0.0)


def test_format_accuracy_puts_the_flag_beside_a_collapsed_mean():
    assert format_accuracy(0.258, 0.0, 5, 5) == "0.258 ± 0.000 [5/5 collapsed]"
    assert format_accuracy(0.99, 0.01, 0, 5) == "0.990 ± 0.010"
    assert format_accuracy(0.8, 0.1, 1, 5, 2) == "0.800 ± 0.100 [1/5 collapsed, 2/5 miss a class]"
    assert format_accuracy(0.8, 0.1, 0, 5, 2) == "0.800 ± 0.100 [2/5 miss a class]"


def test_a_plateau_that_never_predicts_one_of_four_classes_is_a_partial_collapse():
    # the plateau of delayed recall: classes 0-2 right, class 3 answered as class 2
    labels = _labels_with_66_of_class_2()
    preds = torch.where(labels == 3, torch.tensor(2), labels)
    summary = prediction_summary(preds, 4, labels)
    assert float((preds == labels).float().mean()) == pytest.approx(193 / 256)  # 0.754
    assert not summary.collapsed  # the top class takes 129/256: the 90 % flag misses it
    assert summary.never_predicted == (3,)
    assert summary.metrics()["classes_never_predicted"] == 1.0
    assert summary.as_dict()["never_predicted"] == [3]
    assert is_partial_collapse(summary.metrics())
    # a class absent from the labels is not "missed"; without labels every class counts
    assert prediction_summary(preds, 5, labels).never_predicted == (3,)
    assert prediction_summary(preds, 5).never_predicted == (3, 4)
    # a full collapse is flagged as collapsed, not as partial; old stored runs lack the key
    constant = prediction_summary(torch.full((256,), 2), 4, labels).metrics()
    assert constant["classes_never_predicted"] == 3.0 and not is_partial_collapse(constant)
    assert not is_partial_collapse({"collapsed": 0.0, "top_class_fraction": 0.5})
    assert not is_partial_collapse(prediction_summary(labels, 4, labels).metrics())


def test_smooth_is_a_trailing_mean():
    assert smooth([0, 2, 4, 6], 2).tolist() == [0.0, 1.0, 3.0, 5.0]


def test_steps_to_converge_on_a_plateau_then_rise():
    # chance (0.25) for 300 steps, then perfect: a window-w trailing mean first reaches
    # 1 - margin when at most margin*w/(1-0.25) chance points remain in the window
    curve = np.r_[np.full(300, 0.25), np.ones(200)]
    k = steps_to_converge(curve, target=1.0, margin=0.01, window=20)
    assert k == 300 + 20  # 0.01*20/0.75 < 1: the whole window must have left the plateau
    # a wider margin admits the smoothed curve earlier (one chance point left in the window)
    assert steps_to_converge(curve, target=1.0, margin=0.05, window=20) == 319
    # a dip late in training moves the answer after the dip
    dipped = curve.copy()
    dipped[450] = 0.0
    assert steps_to_converge(dipped, target=1.0, margin=0.01, window=20) == 451 + 20
    # never reaching the target: None; default target is the curve's own final value
    assert steps_to_converge(np.full(50, 0.25), target=1.0, margin=0.01) is None
    assert steps_to_converge(np.full(50, 0.25), margin=0.01) == 1


def test_steps_to_converge_reports_recorded_step_numbers():
    curve = [0.0, 0.0, 1.0, 1.0]
    assert steps_to_converge(curve, target=1.0, margin=0.0, window=1, steps=[10, 20, 30, 40]) == 30
    with pytest.raises(ValueError, match="3 step numbers for a curve of 4"):
        steps_to_converge(curve, margin=0.1, steps=[1, 2, 3])


def test_a_training_run_summary_flags_a_collapsed_final_accuracy():
    import pandas as pd

    from memhil.runs.experiment_run import training_summary

    rows = [
        ("backend", 1, -1, "accuracy", 66 / 256),
        ("backend", 1, -1, "collapsed", 1.0),
        ("backend", 1, -1, "top_class_fraction", 1.0),
        ("backend", 1, -1, "majority_fraction", 66 / 256),
        ("float", 1, -1, "accuracy", 66 / 256),
    ]
    df = pd.DataFrame(rows, columns=["phase", "epoch", "step", "metric", "value"])
    final = next(line for line in training_summary(df, {}) if "final" in line)
    assert "accuracy 25.8 % on the backend [COLLAPSED: one class takes 100 %" in final
    assert "a constant predictor scores 25.8 %]" in final
    assert "top_class_fraction" not in final  # the flag, not the raw numbers
    df.loc[df["metric"] == "collapsed", "value"] = 0.0
    assert "COLLAPSED" not in next(line for line in training_summary(df, {}) if "final" in line)


def test_a_training_run_summary_flags_a_class_never_predicted():
    import pandas as pd

    from memhil.runs.experiment_run import training_summary

    rows = [
        ("backend", 1, -1, "accuracy", 0.766),
        ("backend", 1, -1, "collapsed", 0.0),
        ("backend", 1, -1, "top_class_fraction", 0.36),
        ("backend", 1, -1, "majority_fraction", 0.27),
        ("backend", 1, -1, "classes_never_predicted", 1.0),
    ]
    df = pd.DataFrame(rows, columns=["phase", "epoch", "step", "metric", "value"])
    final = next(line for line in training_summary(df, {}) if "final" in line)
    assert "accuracy 76.6 % on the backend [PARTIAL COLLAPSE: 1 class never predicted]" in final
    assert "classes_never_predicted" not in final  # the flag, not the raw number
