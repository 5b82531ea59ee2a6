"""Experiment files: errors at load with file:key before any instrument, what a training
run stores, and the CLI around it (``memhil run``, ``runs show``, ``runs plot``)."""

from __future__ import annotations

import pytest

from memhil.cli import main
from memhil.core.errors import ConfigError, LimitError
from memhil.runs.experiment_file import load_experiment_file
from memhil.runs.experiment_run import run_experiment_file
from memhil.store import RunStore
from tests.experiments.conftest import MOCK_STATION

# A bench station whose instruments sit on port 0 of loopback: contacting any of them
# fails with a connection error, so an error that names a file key proves the file was
# refused before an instrument was contacted.
BENCH = {"station": str(MOCK_STATION)}


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"algorithm": "nope"}, "algorithm"),
        ({"extra": 1}, "extra"),
        ({"model": {"keep_fraction": 2.0}}, "model.keep_fraction"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"momentum_x": 0.9}}, "train.momentum_x"),
        ({"deploy": {"reset_v": 0.5}}, "deploy.reset_v"),
        ({"dataset": {"name": "digits", "colour": True}}, "dataset.colour"),
        ({"dataset": {"name": "digits", "classes": [0, 99]}}, "dataset.classes"),
        ({"model": {"sizes": [8, 6, 4]}}, "model.sizes"),  # 8 + 6 pairs: not on 8x8
    ],
)
def test_a_bad_entry_fails_at_load_naming_file_and_key(experiment_file, tmp_path, sections, key):
    path = experiment_file("pruning_digits.yaml", backend=BENCH, **sections)
    db = tmp_path / "runs.db"
    with pytest.raises(ConfigError) as err:
        run_experiment_file(path, db=db)
    assert err.value.key == key and err.value.source == str(path)
    assert str(path) in str(err.value)
    assert not db.exists()  # nor was a database opened


def test_a_request_beyond_the_station_limits_fails_before_any_instrument(experiment_file, tmp_path):
    # the mock station allows 2 V; the forming pulse asks for 2.8 V
    path = experiment_file("pruning_digits.yaml", backend=BENCH, model={"forming_v": 2.8})
    with pytest.raises(LimitError) as err:
        run_experiment_file(path, db=tmp_path / "runs.db")
    assert err.value.param == f"{path}: model.forming_v"
    assert err.value.value == 2.8 and err.value.limit == 2.0
    assert not (tmp_path / "runs.db").exists()


def test_the_cli_prints_one_line_for_a_bad_file(experiment_file, tmp_path, capsys):
    path = experiment_file("eqprop_iris.yaml", model={"gain": -1.0})
    assert main(["run", str(path), "--db", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: model.gain" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_training_run_on_sim_stores_metrics_tallies_snapshots_and_provenance(
    experiment_file, tmp_path, capsys
):
    path = experiment_file("eqprop_iris.yaml", train={"epochs": 1})
    db = tmp_path / "runs.db"
    assert main(["run", str(path), "--db", str(db), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "% on the backend" in out and " J" in out
    with RunStore(db) as store:
        df = store.load(1)
        md = store.metadata(1)
        arrays = store.arrays(1)
    epochs = df[df["phase"] == "epoch"]
    assert sorted(set(epochs["epoch"])) == [0]
    assert {"loss_v2", "set_pulses", "reset_pulses", "pulse_energy_j"} <= set(epochs["metric"])
    final = df[df["phase"] == "deploy"].set_index("metric")["value"]
    assert final["set_pulses"] > 0 and final["reset_pulses"] > 0 and final["pulse_energy_j"] > 0
    for phase in ("backend", "float"):
        acc = df[(df["phase"] == phase) & (df["metric"] == "accuracy")]["value"]
        assert len(acc) == 1 and 0.0 <= float(acc.iloc[0]) <= 1.0
    # per-step records: every step of the epoch (105 training samples, batches of 16)
    assert len(df[(df["phase"] == "step") & (df["metric"] == "loss_v2")]) == 7
    names = {(n, k) for n, k, _ in arrays}
    assert names == {("g_s.tile0", 0), ("g_s.tile0", 1), ("g_s.tile0.deployed", 1)}
    assert all(a.shape == (8, 8) and (a > 0).all() for _, _, a in arrays)
    assert md["memhil_kind"] == "experiment" and md["algorithm"] == "eqprop"
    assert md["dataset"]["name"] == "iris" and len(md["dataset"]["sha256"]) == 64
    assert md["seeds"] == {"train": 0} and "memhil" in md["code_version"]
    assert md["experiment_config"]["resolved"]["train"]["epochs"] == 1
    assert "calibration_versions" in md and md["station_identity"]["kind"] == "sim"

    assert main(["runs", "show", "1", "--db", str(db)]) == 0
    show = capsys.readouterr().out
    assert "eqprop" in show and "% on the backend" in show and "SET" in show
    for kind in ("learning_curve", "pulse_counts", "conductance"):
        png = tmp_path / f"{kind}.png"
        assert main(["runs", "plot", "1", str(png), "--kind", kind, "--db", str(db)]) == 0
        assert png.stat().st_size > 1000


def test_a_training_run_on_the_mock_lab_records_the_same_kind_of_run(experiment_file, tmp_path):
    path = experiment_file(
        "pruning_digits.yaml", train={"epochs": 1}, backend={"mock_lab": str(MOCK_STATION)}
    )
    db = tmp_path / "runs.db"
    rid = run_experiment_file(path, db=db, progress=False)
    with RunStore(db) as store:
        df = store.load(rid)
        md = store.metadata(rid)
        arrays = store.arrays(rid)
    assert md["station_identity"]["kind"] == "mock_lab" and "station" in md
    flips = df[(df["phase"] == "deploy") & (df["metric"] == "mask_flips")]["value"]
    tally = df[df["phase"] == "deploy"].set_index("metric")["value"]
    # every flip is one SET or RESET pulse on top of prepare's (form, RESET, SET, prune)
    assert tally["set_pulses"] + tally["reset_pulses"] >= float(flips.iloc[0]) > 0
    assert {n for n, _, _ in arrays} == {"g_s.tile0", "g_s.tile0.deployed"}
    backend = df[df["phase"] == "backend"].set_index("metric")["value"]
    # the accuracy once, with the collapse flag of its test predictions beside it
    assert set(backend.index) == {
        "accuracy",
        "collapsed",
        "top_class_fraction",
        "majority_fraction",
        "classes_never_predicted",
        "mask_flips",  # a pruned run's flips beside its accuracy (the switch-limit tables)
    }
    assert backend["collapsed"] in (0.0, 1.0)


def test_the_file_loads_with_the_dataset_options_applied():
    from tests.experiments.conftest import EXAMPLES

    ef = load_experiment_file(EXAMPLES / "pruning_digits.yaml")
    assert ef.data.n_features == 8 and ef.data.n_classes == 4
    assert set(ef.data.train.y.tolist()) == {0, 1, 2, 3}
    assert ef.config.train.epochs >= 1 and ef.experiment.name == "pruning"
