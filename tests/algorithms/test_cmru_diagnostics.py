"""CMRU training diagnostics: blank-step switching, |s_T|, gradient norms per group, and the
prediction histogram a training run returns."""

from __future__ import annotations

import pytest
import torch

from memhil.algorithms.cmru.backbone import RecurrentBackbone
from memhil.algorithms.cmru.diagnostics import (
    blank_steps,
    memory_unit_statistics,
    parameter_group,
)
from memhil.algorithms.cmru.training import TrainConfig, evaluate, scores, train
from memhil.algorithms.cmru.units import cmru
from memhil.datasets import delayed_recall


def test_a_unit_that_counts_blank_steps_is_seen():
    cell = cmru(2, 3)
    with torch.no_grad():
        cell.w_c.zero_()
        cell.w_beta.zero_()
        cell.b_beta.fill_(0.5)
        cell.b_c.copy_(torch.tensor([1.0, 0.1, -0.2]))  # unit 0 beats its threshold on blanks
        cell.initial_state.fill_(1.0)
    x = torch.zeros(4, 10, 2)
    x[:, 3, 0] = 1.0  # one step with input in every sequence: 9 blank steps
    blank = blank_steps(x)
    assert blank.sum().item() == 4 * 9
    stats = memory_unit_statistics(cell, x, blank)
    # unit 0 switches on all 9 blank steps (1 of 3 unit-step pairs), the others never
    assert stats["blank_switch_fraction"] == pytest.approx(1 / 3)  # float32 mean
    assert stats["units_switching_every_blank"] == 1.0
    # unit 0 counts +1 on every one of the 10 steps from s0 = 1: |s_T| = 11
    assert stats["abs_s_T_max"] == 11.0
    assert stats["abs_s_T_mean"] == pytest.approx((11 + 1 + 1) / 3)


def test_parameter_groups_of_the_backbone():
    assert parameter_group("blocks.0.cell.w_c") == "cell"
    assert parameter_group("blocks.0.mlp_in.weight") == "block"
    assert parameter_group("encoder.weight") == "input"
    assert parameter_group("head.0.weight") == "head"


def test_training_returns_diagnostics_and_the_prediction_histogram():
    data = delayed_recall(12, n_train=32, n_test=32, seed=0)
    model = RecurrentBackbone(data.n_features, data.n_classes, d_model=8, d_state=4, mlp_ratio=1)
    cfg = TrainConfig(steps=4, batch_size=8, eval_train=False, diagnostics_every=2)
    result = train(model, data.train, cfg, data.test)
    assert [d["step"] for d in result.diagnostics] == [0.0, 2.0]
    for d in result.diagnostics:
        assert {f"grad_norm_{g}" for g in ("cell", "block", "input", "head")} <= d.keys()
        assert all(d[f"grad_norm_{g}"] > 0 for g in ("cell", "block", "input", "head"))
        assert 0.0 <= d["blank_switch_fraction"] <= 1.0
        assert d["abs_s_T_max"] >= d["abs_s_T_mean"] >= 0.0
    summary = result.test_predictions
    assert summary is not None and sum(summary.counts) == len(data.test)
    assert len(summary.counts) == data.n_classes
    # one pass gives the accuracy and the flag (what the experiment records as final metrics)
    one_pass = scores(model, data.test)
    assert one_pass["accuracy"] == pytest.approx(evaluate(model, data.test))
    assert one_pass["collapsed"] == float(summary.collapsed)
    # the hooks are gone after training: another forward records nothing
    assert not any(m._forward_hooks for m in model.modules())
