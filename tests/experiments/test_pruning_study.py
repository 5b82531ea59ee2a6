"""The pruning study (benchmarks/pruning.py) on a tiny sweep pair run inline: the table
reprinted from the run store alone equals the one printed after running, its cells are
the means of the stored runs, and the programmed baseline stores the residual
conductance error its program-and-verify left."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
import yaml

from memhil.store import RunStore
from memhil.sweeps.results import trial_runs

from .conftest import EXAMPLES, ROOT


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("pruning", None)
    return importlib.import_module("pruning")


def _sweep(tmp_path, name: str, grid: dict) -> str:
    data = {
        "base": str(EXAMPLES / "pruning_digits.yaml"),  # 8 -> 4 on the 8 x 8 VTEAM chip
        "name": name,
        "grid": {"train.epochs": [1], **grid},
        "seeds": [0, 1],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.mark.slow  # ~7 s on an idle machine: six trials, each training and programming a chip
def test_the_table_reprinted_from_the_store_is_the_one_printed_after_running(
    study, tmp_path, capsys
):
    pruned = _sweep(tmp_path, "pruned", {})
    programmed = _sweep(
        tmp_path,
        "programmed",
        {
            "model.method": ["programmed"],
            "deploy.write_noise": [None],  # program-and-verify on a PCM chip
            "backend.sim.device": ["pcm"],
            **{f"deploy.{k}": [None] for k in ("set_v", "set_width_s", "reset_v", "reset_width_s")},
        },
    )
    db = tmp_path / "runs.db"
    study.main(
        [
            "--sweep-file",
            pruned,
            "--sweep-file",
            programmed,
            "--db",
            str(db),
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    table = printed[printed.index("task ") : printed.index("\nreprint:")]
    with RunStore(db) as store:
        ids = [int(r.run_id) for r in store.runs() if r.name in ("pruned", "programmed")]
        study.main(["--from-db", str(db), *sum((["--sweep", str(i)] for i in ids), [])])
        assert capsys.readouterr().out.strip() == table.strip()
        # the pruned cell is the mean of the stored runs' accuracy on the chip
        runs = trial_runs(store, ids[0])
        acc = [
            float(
                df.loc[(df["phase"] == "backend") & (df["metric"] == "accuracy"), "value"].iloc[0]
            )
            for df in (store.load(int(r)) for r in runs["run_id"])
        ]
        row = next(line for line in table.splitlines() if line.startswith("digits"))
        cells = re.findall(r"(\d+\.\d)±", row)  # pruned, prog-verify, ideal
        assert cells[0] == f"{100 * sum(acc) / len(acc):.1f}"
        verify = trial_runs(store, ids[1])
        # the verify loop's residual, in units of the window: above zero (programming and
        # read noise) and within a few verify bands (2 % of the window each; cells PCM's
        # RESET-and-retry gives up on after max_iterations make the RMS exceed one band)
        residual = verify["write_error_window"]
        assert ((residual > 0) & (residual < 0.1)).all(), list(residual)
