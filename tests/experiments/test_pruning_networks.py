"""The pruning experiment's other networks (``model.kind: cnn | crnn | unet``): a bad
entry fails at load naming file and key, a layer on the array computes what its float
twin computes (convolutions as im2col patches), and the study's table shows a CNN row
and the switch-limit ablation's mask flips reprinted from the store alone."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import yaml

from memhil.algorithms.pruning.edge_popup import FloatWeight
from memhil.algorithms.pruning.models import (
    ConvRNN,
    SourcedConv1d,
    SourcedConv2d,
    SourcedLinear,
)
from memhil.core.errors import ConfigError
from memhil.runs.experiment_run import run_experiment_file
from memhil.store import RunStore
from memhil.sweeps.results import trial_runs

from .conftest import EXAMPLES, MOCK_STATION, ROOT

# instruments on port 0 of loopback: an error naming a file key was raised before any
# instrument was contacted (as tests/experiments/test_experiment_files.py)
BENCH = {"station": str(MOCK_STATION)}


@pytest.mark.parametrize(
    ("example", "sections", "key"),
    [
        ("pruning_digits_cnn.yaml", {"model": {"cnn": {"chanels": [8, 8]}}}, "model.cnn.chanels"),
        ("pruning_digits_cnn.yaml", {"model": {"cnn": {"channels": [8]}}}, "model.cnn.channels"),
        ("pruning_digits_cnn.yaml", {"model": {"crnn": {"hidden": 8}}}, "model.crnn"),
        ("pruning_digits_cnn.yaml", {"model": {"kind": "rnn"}}, "model.kind"),
        ("pruning_digits_cnn.yaml", {"dataset": {"name": "digits"}}, "dataset"),
        # the dataset loads first: the cases below use the CNN file's cheap digit images
        (
            "pruning_digits_cnn.yaml",
            {"model": {"kind": "crnn", "crnn": {"hidden": 0}}},
            "model.crnn.hidden",
        ),
        ("pruning_digits_cnn.yaml", {"model": {"method": "readout"}}, "model.method"),
        (
            "pruning_digits_cnn.yaml",
            {"train": {"switch_limit_scale": -1.0}},
            "train.switch_limit_scale",
        ),
        (
            "pruning_vessels_unet.yaml",
            {
                "model": {"unet": {"depth": 4}},  # 40 / 2^4 is no whole number
                "dataset": {"size": 40, "n_train": 4, "n_test": 2},
            },
            "model.unet.depth",
        ),
    ],
)
def test_a_bad_network_entry_fails_at_load_naming_file_and_key(
    experiment_file, tmp_path, example, sections, key
):
    path = experiment_file(example, backend=BENCH, **sections)
    db = tmp_path / "runs.db"
    with pytest.raises(ConfigError) as err:
        run_experiment_file(path, db=db)
    assert err.value.key == key and err.value.source == str(path)
    assert not db.exists()


def test_a_layer_on_a_product_computes_what_its_float_weights_compute():
    # the product an array would supply, here exact: x W^T; any mismatch of the im2col
    # layout (channel-major patches) against the weight view changes the result
    gen = torch.Generator().manual_seed(0)
    for layer, x in (
        (
            SourcedConv2d(FloatWeight((5, 3 * 9), seed=1), 3, 3, 1),
            torch.randn(2, 3, 6, 6, generator=gen),
        ),
        (
            SourcedConv1d(FloatWeight((4, 2 * 3), seed=2), 2, 3, 1),
            torch.randn(2, 2, 7, generator=gen),
        ),
        (SourcedLinear(FloatWeight((4, 6), seed=3)), torch.randn(2, 5, 6, generator=gen)),
    ):
        want = layer(x)
        w = layer.source.weight().detach()
        layer.run_on(lambda rows, w=w: rows @ w.T)
        got = layer(x)
        layer.run_on(None)
        # float32 sums in another order: agreement to rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("pruning", None)
    return importlib.import_module("pruning")


@pytest.mark.slow  # ~3 s on an idle machine: three one-epoch trials of a tiny CNN
def test_a_crnn_prediction_does_not_depend_on_the_other_sequences_of_its_batch():
    # a short sequence alone, and padded beside a long one of large values: the padding
    # and the other sequence's range must not change its logits (activations quantized)
    torch.manual_seed(0)
    net = ConvRNN(lambda name, shape, gain: FloatWeight(shape, gain=gain, seed=1), 4, 8, 16, 3)
    net.eval()
    short = torch.randn(1, 5, 4)
    long = 50 * torch.randn(1, 12, 4)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 7)), long])
    alone = net(short, lengths=torch.tensor([5]))
    together = net(batch, lengths=torch.tensor([5, 12]))
    assert torch.allclose(together[:1], alone, atol=1e-5)


def test_a_cnn_row_and_its_mask_flips_reprint_from_the_store(study, tmp_path, capsys):
    base = yaml.safe_load((EXAMPLES / "pruning_digits_cnn.yaml").read_text())
    base["model"]["cnn"] = {"channels": [2, 2], "hidden": 4}
    base["train"]["epochs"] = 1
    base["dataset"]["test_fraction"] = 0.8  # 290 training images: a few steps
    base["backend"] = {"sim": {"tiles": 1, "rows": 32, "cols": 40, "device": "rram_forming"}}
    (tmp_path / "cnn.yaml").write_text(yaml.safe_dump(base))
    files = []
    for name, grid in (("sl", {}), ("ablation", {"train.switch_limit_scale": [5.0, 0.0]})):
        sweep = {"base": str(tmp_path / "cnn.yaml"), "name": name, "grid": grid, "seeds": [0]}
        files += ["--sweep-file", str(tmp_path / f"{name}.yaml")]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(sweep))
    db = tmp_path / "runs.db"
    study.main([*files, "--db", str(db), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    table = printed[printed.index("task ") : printed.index("\nreprint:")]
    row = next(line for line in table.splitlines() if line.startswith("digit_images"))
    assert "CNN 2-2-4" in row and "accuracy" in row
    with RunStore(db) as store:
        ids = [int(r.run_id) for r in store.runs() if r.name in ("sl", "ablation")]
        study.main(["--from-db", str(db), *sum((["--sweep", str(i)] for i in ids), [])])
        assert capsys.readouterr().out.strip() == table.strip()
        flips = {
            float(trial_runs(store, i)["train.switch_limit_scale"].iloc[0])
            if i == ids[1]
            else 1.0: trial_runs(store, i)
            for i in ids
        }
        stored = [float(v) for v in flips[1.0]["mask_flips"]] + [
            float(v) for v in flips[5.0]["mask_flips"]
        ]
    line = table.splitlines()[
        table.splitlines().index(
            next(ln for ln in table.splitlines() if ln.startswith("mask flips"))
        )
        + 2
    ]
    sl, x5, off = (float(v) for v in line.split()[4:7])
    # the flips block is the stored mask_flips (one seed: the value itself)
    assert (sl, x5) == (round(stored[0]), round(stored[1]))
    # the rule only ever holds flips back: off flips at least as often as either limit
    assert off >= sl and off >= x5
