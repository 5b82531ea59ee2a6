"""An EqProp run with ``deploy.updates: exact`` (nothing on the devices: the conductances
live in the adapter's checkpoint only) interrupted mid-training resumes with ``--resume``
to the final metrics of an uninterrupted run."""

from __future__ import annotations

from memhil.algorithms.eqprop.experiment import EqPropExperiment
from memhil.cli import main
from memhil.store import RunStore


class _Interrupted(Exception):
    """Stands in for the process dying in the middle of epoch 1."""


def _final(db) -> dict:
    with RunStore(db) as store:
        df = store.load(1)
    keep = df[df["phase"].isin(["backend", "float", "epoch"])]
    return {(p, e, m): v for p, e, m, v in keep[["phase", "epoch", "metric", "value"]].values}


def test_an_exact_update_run_resumes_to_the_uninterrupted_result(
    experiment_file, tmp_path, monkeypatch
):
    path = experiment_file(
        "eqprop_iris.yaml",
        train={"epochs": 2, "checkpoint_every": 1},
        deploy={"updates": "exact"},
    )
    broken_db, clean_db = tmp_path / "broken.db", tmp_path / "clean.db"
    train_epoch = EqPropExperiment.train_epoch

    def train_and_fail(self, epoch):
        if epoch != 1:
            return (yield from train_epoch(self, epoch))
        for step in train_epoch(self, epoch):
            if step.index == 3:
                raise _Interrupted
            yield step

    with monkeypatch.context() as m:
        m.setattr(EqPropExperiment, "train_epoch", train_and_fail)
        assert main(["run", str(path), "--db", str(broken_db), "--quiet"]) != 0
    assert main(["run", str(path), "--db", str(broken_db), "--resume", "--quiet"]) == 0
    assert main(["run", str(path), "--db", str(clean_db), "--quiet"]) == 0
    resumed, clean = _final(broken_db), _final(clean_db)
    # Tolerance zero: the checkpoint holds the exact conductances, the shadow and both
    # random streams, and the same CPU ops run in the same order after the restore.
    assert resumed == clean
    assert any(k[0] == "backend" and k[2] == "accuracy" for k in resumed)
    with RunStore(broken_db) as store:
        units = store.units(1).set_index(store.units(1)["unit"].map(str))
    assert units.loc["['train', 1]", "attempts"] == 2  # the epoch the failure interrupted
