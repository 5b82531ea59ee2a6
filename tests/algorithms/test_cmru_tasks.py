"""Retention-task generators and the shared recurrent backbone (equal parameter budgets)."""

from __future__ import annotations

import pytest
import torch

from memhil.algorithms.recurrent_backbone import (
    CELL_KINDS,
    RecurrentBackbone,
    count_parameters,
    state_size_for_budget,
)
from memhil.algorithms.recurrent_training import loss_and_correct
from memhil.datasets import copy_first_input, delayed_recall, flip_flop


def test_copy_first_input_layout_and_seeding():
    d = copy_first_input(50, n_symbols=3, n_train=20, n_test=10, seed=3)
    assert d.train.x.shape == (20, 50, 4) and d.test.x.shape == (10, 50, 4) and d.n_classes == 3
    assert torch.equal(d.train.x[:, 0, :3].argmax(-1), d.train.y)
    assert torch.all(d.train.x[:, 0, 3] == 1) and torch.all(d.train.x[:, 1:, 3] == 0)
    again = copy_first_input(50, n_symbols=3, n_train=20, n_test=10, seed=3)
    assert torch.equal(d.train.x, again.train.x)
    assert not torch.equal(d.train.x, copy_first_input(50, n_symbols=3, n_train=20, n_test=10, seed=4).train.x)


def test_flip_flop_targets_follow_the_last_pulse():
    d = flip_flop(200, n_bits=3, pulses_per_bit=5, n_train=8, n_test=2, seed=1)
    x, y = d.train.x, d.train.y
    assert x.shape == y.shape == (8, 200, 3)
    state = torch.zeros(8, 3, dtype=torch.long)
    for t in range(200):  # sequential reference of the latch
        state = torch.where(x[:, t] > 0, 1, torch.where(x[:, t] < 0, 0, state))
        assert torch.equal(y[:, t], state)
    assert 0 < float((x != 0).float().mean()) < 0.1  # sparse pulses


def test_delayed_recall_cue_distractors_and_recall_flag():
    d = delayed_recall(100, n_symbols=4, distractor_rate=0.5, n_train=30, n_test=5, seed=2)
    x, y = d.train.x, d.train.y
    assert x.shape == (30, 100, 6)
    store = x[:, :, 4]
    assert torch.all(store.sum(1) == 1) and torch.all(store.argmax(1) < 10)  # one cue, early
    cue_t = store.argmax(1)
    assert torch.equal(x[torch.arange(30), cue_t, :4].argmax(-1), y)
    assert torch.all(x[:, -1, 5] == 1) and torch.all(x[:, :-1, 5] == 0)
    assert float(x[:, :-1, :4].sum()) > 30 * 20  # plenty of distractor symbols


def test_bad_task_arguments_name_the_value():
    with pytest.raises(ValueError, match="seq_len=1"):
        copy_first_input(1)
    with pytest.raises(ValueError, match="distractor_rate=2"):
        delayed_recall(10, distractor_rate=2)


def test_every_cell_runs_in_the_backbone_at_equal_budgets():
    budget = count_parameters(RecurrentBackbone(4, 3, cell="cmru", d_model=16, d_state=16))
    x = torch.randn(2, 12, 4)
    for kind in CELL_KINDS:
        d_state = state_size_for_budget(kind, 16, count_parameters(
            RecurrentBackbone(4, 3, cell="cmru", d_model=16, d_state=16).blocks[0].cell))
        model = RecurrentBackbone(4, 3, cell=kind, d_model=16, d_state=d_state)
        assert abs(count_parameters(model) - budget) <= 0.03 * budget, kind
        assert model(x).shape == (2, 3)
    per_step = RecurrentBackbone(4, 3, cell="lru", d_model=16, d_state=8, readout="all")
    logits = per_step(x)
    assert logits.shape == (2, 12, 3)
    loss, correct, n = loss_and_correct(logits, torch.randint(0, 2, (2, 12, 3)))
    assert n == 72 and 0 <= int(correct) <= 72 and float(loss.detach()) > 0
    with pytest.raises(ValueError, match="unknown cell kind 'gru'"):
        RecurrentBackbone(4, 3, cell="gru")
