"""kill -9 during training, then ``memhil run FILE --resume``: on the simulator the run
completes with the final metrics of an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from memhil.cli import main
from memhil.store import RunStore

# The child process kills itself with SIGKILL at a fixed point (epoch 1, before its
# third step): a deterministic kill -9, no race with a timer.
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from memhil.algorithms.pruning.experiment import PruningExperiment
    from memhil.cli import main

    train_epoch = PruningExperiment.train_epoch

    def train_and_die(self, epoch):
        if epoch != 1:
            return (yield from train_epoch(self, epoch))
        for step in train_epoch(self, epoch):
            if step.index == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            yield step

    PruningExperiment.train_epoch = train_and_die
    main(["run", sys.argv[1], "--db", sys.argv[2], "--quiet"])
    """
)


def _final(db) -> tuple[dict, dict]:
    """(final metrics by (phase, metric), epoch metrics by (epoch, metric))."""
    with RunStore(db) as store:
        df = store.load(1)
    end = df[df["phase"].isin(["backend", "float", "deploy"])]
    epochs = df[df["phase"] == "epoch"]
    return (
        {(p, m): v for p, m, v in end[["phase", "metric", "value"]].itertuples(index=False)},
        {(e, m): v for e, m, v in epochs[["epoch", "metric", "value"]].itertuples(index=False)},
    )


@pytest.mark.slow  # a child process (imports) and three short training runs
def test_kill_9_mid_training_then_resume_equals_the_uninterrupted_run(experiment_file, tmp_path):
    path = experiment_file("pruning_digits.yaml", train={"epochs": 2, "checkpoint_every": 1})
    killed_db, clean_db = tmp_path / "killed.db", tmp_path / "clean.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", _KILLER, str(path), str(killed_db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with RunStore(killed_db) as store:
        assert store.runs()[0].status == "died"  # killed: never closed, its writer gone
        done = set(map(str, store.units(1).query("done")["unit"]))
    assert done == {"['prepare']", "['train', 0]"}

    assert main(["run", str(path), "--db", str(killed_db), "--resume", "--quiet"]) == 0
    assert main(["run", str(path), "--db", str(clean_db), "--quiet"]) == 0

    resumed, clean = _final(killed_db), _final(clean_db)
    # Tolerance zero: the checkpoint restores every state bit for bit (the simulator's
    # device state, its programming and read random streams and clock, the optimizer,
    # the masks and banks, torch's global RNG), and the same CPU ops run in the same order,
    # so the resumed run is the uninterrupted one exactly, not approximately.
    assert resumed == clean
    assert resumed[0][("backend", "accuracy")] > 0.5  # it learned (4 classes: chance 0.25)
    with RunStore(killed_db) as store:
        units = store.units(1).set_index(store.units(1)["unit"].map(str))
        md = store.metadata(1)
    assert units.loc["['train', 1]", "attempts"] == 2  # the unit the kill interrupted
    assert md["memhil_reapplied_units"] == [{"unit": ["train", 1], "attempts": 2}]


@pytest.mark.slow  # three short training runs
def test_a_stop_request_ends_training_after_the_epoch_and_resume_completes_it(
    experiment_file, tmp_path, monkeypatch
):
    """``memhil runs stop`` / the monitor's Stop: the epoch in flight finishes, its
    checkpoint is committed although ``checkpoint_every`` is not due, the run is left
    interrupted, and ``--resume`` ends it with the uninterrupted run's results."""
    from memhil.algorithms.pruning.experiment import PruningExperiment
    from memhil.protocols import StopRequested
    from memhil.runs.experiment_run import run_experiment_file
    from memhil.store.stop_request import request_stop, stop_requested

    path = experiment_file("pruning_digits.yaml", train={"epochs": 2, "checkpoint_every": 5})
    stopped_db, clean_db = tmp_path / "stopped.db", tmp_path / "clean.db"
    train_epoch = PruningExperiment.train_epoch

    def train_and_ask_to_stop(self, epoch):
        for step in train_epoch(self, epoch):
            if epoch == 0 and step.index == 1:
                request_stop(stopped_db, 1, by="test")  # as `memhil runs stop 1` would
            yield step

    monkeypatch.setattr(PruningExperiment, "train_epoch", train_and_ask_to_stop)
    with pytest.raises(StopRequested, match="after epoch 1 of 2") as stop:
        run_experiment_file(path, db=stopped_db, progress=False)
    assert stop.value.memhil_run_id == 1  # what the command line offers to --resume
    with RunStore(stopped_db) as store:
        assert store.runs()[0].status == "interrupted"
        assert set(map(str, store.units(1).query("done")["unit"])) == {
            "['prepare']",
            "['train', 0]",
        }
    assert not stop_requested(stopped_db, 1)  # honoured: a resume is not stopped again

    assert main(["run", str(path), "--db", str(stopped_db), "--resume", "--quiet"]) == 0
    # the reference checkpoints where the stopped run did (after epochs 1 and 2): a
    # checkpoint reads the conductances for its snapshot, and reads draw read noise
    clean = experiment_file(
        "pruning_digits.yaml", name="clean.yaml", train={"epochs": 2, "checkpoint_every": 1}
    )
    assert main(["run", str(clean), "--db", str(clean_db), "--quiet"]) == 0
    # zero tolerance, as for kill -9: the checkpoint taken at the stop restores every state
    assert _final(stopped_db) == _final(clean_db)
