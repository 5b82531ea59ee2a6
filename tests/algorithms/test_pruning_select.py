"""``train.select: best_val``: the network deployed and tested is the one of the epoch
with the best validation metric (early stopping on the validation split), for the
programmed baseline and for the pruned network, whose masks of that epoch reach the chip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memhil.algorithms.pruning.edge_popup import masks_of, weight_sources
from memhil.runs.backend_config import open_backend
from memhil.runs.experiment_file import experiment_file_from_mapping
from memhil.runs.experiment_run import _build

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 4
SEED = 2  # validation accuracy peaks at epoch 3 of 4 for both methods (seeded)


def _drain(work):
    while True:
        try:
            next(work)
        except StopIteration as stop:
            return stop.value or {}


def _experiment(method: str):
    # a small digits MLP, few large batches at lr 0.5: a validation accuracy that moves
    data = {
        "algorithm": "pruning",
        "dataset": {"name": "digits"},
        "model": {"sizes": [64, 16, 10], "method": method, "bank_reads": 2},
        "train": {
            "epochs": EPOCHS,
            "seed": SEED,
            "lr": 0.5,
            "batch_size": 240,
            "select": "best_val",
        },
        "backend": {"sim": {"tiles": 1, "rows": 64, "cols": 64, "device": "rram_forming"}},
    }
    if method == "programmed":
        data["deploy"] = {"write_noise": {"rel": 0.0, "read_noise_rel": 0.0}}
    ef = experiment_file_from_mapping(data, ROOT / "examples/experiments/select_test.yaml")
    return _build(ef, open_backend({"backend": ef.backend}))


@pytest.mark.parametrize("method", ["programmed", "pruned"])
def test_best_val_deploys_the_epoch_with_the_best_validation_metric(method):
    exp = _experiment(method)
    _drain(exp.prepare())
    vals, weights, masks = [], [], []
    for e in range(EPOCHS):
        vals.append(_drain(exp.train_epoch(e))["val_accuracy"])
        weights.append([s.weight().detach().clone() for s in weight_sources(exp.net)])
        masks.append([m.clone() for m in masks_of(exp.net)] if method == "pruned" else [])
    best = max(range(EPOCHS), key=lambda i: (vals[i], i))  # the last of ties
    assert best != EPOCHS - 1, f"validation accuracy {vals} peaks last: no selection shown"
    _drain(exp.deploy())
    scores = exp.evaluate()
    assert scores["selected_epoch"] == best + 1
    if method == "programmed":  # the programmed copies hold the best epoch's weights
        for w, layer in zip(weights[best], exp.programmed):
            # zero write and read noise: the weights back through the conductance mapping,
            # equal up to float32 rounding of G = g_lo + w (g_hi - g_lo) / w_max
            assert torch.allclose(layer.source.weight(), w, atol=1e-5 * float(w.abs().max()))
    else:  # the chip's masks are the best epoch's, and the net tests with them
        for want, on_chip, now in zip(masks[best], exp.on_chip, masks_of(exp.net)):
            assert torch.equal(on_chip, want) and torch.equal(now, want)
