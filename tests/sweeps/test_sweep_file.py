"""Sweep files without Ray: expansion, the dotted keys validated against the base file at
load (file:key errors), every trial pre-flighted, the inline executor's one-writer
hand-back, and the sweep table (mean ± sd over seeds)."""

from __future__ import annotations

import math

import pytest

from memhil.cli.app import main as cli_main
from memhil.core.errors import ConfigError
from memhil.store import RunStore
from memhil.store.run_records import META_SWEEP_TRIAL, metadata_of_runs
from memhil.sweeps import load_sweep_file, run_sweep
from memhil.sweeps.results import sweep_table, trial_runs

BASE = """\
protocol: pulse_train
name: ltp_ltd
params: {n_pulses: 2, v_ltp: 1.0, v_ltd: -1.0, width_s: 8.0e-8, v_read: 0.2,
         cells: [[0, 0, 0], [0, 1, 1]]}
backend: {sim: {rows: 2, cols: 2, device: {model: neurosim, g_max_dtod: 0.1}}}
"""


def write(tmp_path, sweep: str, base: str = BASE):
    (tmp_path / "base.yaml").write_text(base)
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep)
    return path


def test_trials_are_the_grid_product_times_random_points_times_seeds_in_order(tmp_path):
    path = write(
        tmp_path,
        "base: base.yaml\n"
        "grid: {backend.sim.device.g_max_dtod: [0.0, 0.2], params.v_ltp: [0.5, 1.0]}\n"
        "random: {n: 2, seed: 7, space: {params.width_s: {loguniform: [1.0e-8, 1.0e-7]}}}\n"
        "seeds: 2\n",
    )
    sweep = load_sweep_file(path)
    assert len(sweep.trials) == 2 * 2 * 2 * 2
    assert sweep.axes == ["backend.sim.device.g_max_dtod", "params.v_ltp", "params.width_s"]
    first, last = sweep.trials[0], sweep.trials[-1]
    assert first.axes["backend.sim.device.g_max_dtod"] == 0.0 and first.axes["params.v_ltp"] == 0.5
    assert [t.seed for t in sweep.trials[:4]] == [0, 1, 0, 1]  # seeds innermost
    assert last.overrides["backend.sim.seed"] == 1 and last.station is None
    widths = {t.axes["params.width_s"] for t in sweep.trials}
    assert len(widths) == 2 and all(1e-8 <= w <= 1e-7 for w in widths)
    # the draw is seeded: the same file gives the same points
    assert [t.axes for t in load_sweep_file(path).trials] == [t.axes for t in sweep.trials]
    data = sweep.trial_data(last)  # the key lands inside the base file's mappings
    assert data["backend"]["sim"]["device"] == {"model": "neurosim", "g_max_dtod": 0.2}
    assert data["params"]["v_ltp"] == 1.0 and data["backend"]["sim"]["seed"] == 1


@pytest.mark.parametrize(
    "sweep_text, key, words",
    [
        ("grid: {params.v_ltpp: [1.0]}", "grid.params.v_ltpp", "unknown"),
        ("grid: {params.v_ltp: [1.0, 50.0]}", "grid.params.v_ltp", "50.0 fails in trial 1"),
        ("grid: {name.x: [1]}", "grid.name.x", "'name' is 'ltp_ltd' in the base file"),
        ("grid: {params.v_ltp: []}", "grid.params.v_ltp", "non-empty list"),
        ("seeds: [0, 0]", "seeds", "repeats"),
        (
            "random: {n: 2, space: {params.v_ltp: {normal: [0, 1]}}}",
            "random.space.params.v_ltp",
            "",
        ),
        ("resources: {num_cpus: -1}", "resources.num_cpus", ">= 0"),
        ("grids: {}", "grids", "unknown key"),
    ],
)
def test_a_bad_sweep_names_the_sweep_file_and_its_key(tmp_path, sweep_text, key, words):
    path = write(tmp_path, f"base: base.yaml\n{sweep_text}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep_file(path)
    assert info.value.source == str(path)
    assert info.value.key == key, str(info.value)
    assert words in info.value.reason


def test_the_cli_refuses_a_bad_sweep_in_one_line_before_starting_ray(tmp_path, capsys):
    path = write(tmp_path, "base: base.yaml\ngrid: {params.v_ltp: [1.0, 50.0]}\n")
    db = tmp_path / "runs.db"
    assert cli_main(["sweep", str(path), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grid.params.v_ltp" in err and str(path) in err
    assert not db.exists()  # nothing stored, no Ray started


@pytest.fixture(scope="module")
def inline_sweep(tmp_path_factory):
    """Two v_ltp values x two seeds, run one after the other in this process."""
    folder = tmp_path_factory.mktemp("inline")
    path = write(folder, "base: base.yaml\ngrid: {params.v_ltp: [0.5, 1.0]}\nseeds: [0, 1]\n")
    db = folder / "runs.db"
    return db, run_sweep(path, db=db, executor="inline", progress=False)


def test_inline_sweep_stores_one_tagged_run_per_trial_and_a_table_over_seeds(inline_sweep):
    db, out = inline_sweep
    assert out.completed == [0, 1, 2, 3] and out.failed == {}
    with RunStore(db) as store:
        runs = trial_runs(store, out.sweep_id)
        tags = metadata_of_runs(store, META_SWEEP_TRIAL)
        table, axes, metrics = sweep_table(store, out.sweep_id, ["g", "g_cell_sd"])
        params = {r: store.metadata(r)["protocol_config"]["params"] for r in runs["run_id"]}
    assert sorted(runs["trial"]) == [0, 1, 2, 3] and set(runs["status"]) == {"completed"}
    for row in runs.to_dict("records"):
        assert tags[row["run_id"]]["sweep"] == out.sweep_id
        assert params[row["run_id"]]["v_ltp"] == row["params.v_ltp"]  # the axis reached the run
    assert axes == ["params.v_ltp"] and list(table["n"]) == [2, 2]
    g = runs.set_index("trial")["g"]
    # mean and sample sd over the two seeds of v_ltp = 0.5 (trials 0 and 1)
    assert table["g_mean"].iloc[0] == pytest.approx((g[0] + g[1]) / 2, rel=1e-12)
    assert table["g_sd"].iloc[0] == pytest.approx(abs(g[0] - g[1]) / math.sqrt(2), rel=1e-9)


def test_runs_show_and_plot_a_sweep(inline_sweep, tmp_path, capsys):
    db, out = inline_sweep
    sid = str(out.sweep_id)
    assert cli_main(["runs", "show", sid, "--db", str(db), "--metric", "g"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"sweep {sid}: sweep, 4 trials of protocol file")
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["params.v_ltp", "n"])
    assert "g [S]" in lines[header] and len(lines) == header + 3  # one row per v_ltp
    assert all("±" in line for line in lines[header + 1 :])  # mean ± sd over 2 seeds
    png = tmp_path / "g.png"
    assert cli_main(["runs", "plot", sid, str(png), "--metric", "g_cell_sd", "--db", str(db)]) == 0
    assert png.stat().st_size > 0
    assert cli_main(["runs", "plot", sid, str(png), "--metric", "nope", "--db", str(db)]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, n_trials",
    [
        ("device_variability", 18),
        ("read_voltage_mock_lab", 3),
        pytest.param("eqprop_iris_lr", 9, marks=pytest.mark.slow),
        pytest.param("pruning_keep_fraction", 12, marks=pytest.mark.slow),
    ],
)
def test_the_example_sweeps_load_and_every_trial_passes_its_preflight(name, n_trials):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / f"{name}.yaml"
    sweep = load_sweep_file(path)
    assert len(sweep.trials) == n_trials
    assert sweep.stations() == set()  # the simulator, a mock lab of each trial's own: parallel


EXPERIMENT = """\
algorithm: eqprop
dataset: {name: iris, features: [2, 3], classes: [0, 1], standardize: true}
model: {sizes: [2, 2, 2], g_min_s: 1.05e-3, g_max_s: 5.0e-3}
train: {epochs: 1, seed: 0, batch_size: 50, lr: 5.0}
deploy: {mode: width, inverse: local, program_rounds: 1}
backend: {sim: {rows: 8, cols: 8, device: vteam}}
"""


@pytest.mark.slow
def test_an_experiment_file_is_swept_through_the_same_seam_its_seed_at_train_seed(tmp_path):
    with pytest.raises(ConfigError) as info:  # its keys are checked against its schema too
        load_sweep_file(write(tmp_path, "base: base.yaml\ngrid: {train.lrr: [2.0]}\n", EXPERIMENT))
    assert info.value.key == "grid.train.lrr"
    path = write(tmp_path, "base: base.yaml\ngrid: {train.lr: [2.0]}\nseeds: [3]\n", EXPERIMENT)
    sweep = load_sweep_file(path)
    assert sweep.kind.name == "experiment" and sweep.seed_key == "train.seed"
    db = tmp_path / "runs.db"
    out = run_sweep(sweep, db=db, executor="inline", progress=False)
    assert out.completed == [0], out.failed
    with RunStore(db) as store:
        (run_id,) = trial_runs(store, out.sweep_id)["run_id"]
        md = store.metadata(run_id)
        table, _, metrics = sweep_table(store, out.sweep_id)
        arrays = store.arrays(run_id)
    assert md["seeds"] == {"train": 3} and md["experiment_config"]["train"]["lr"] == 2.0
    assert {"accuracy", "accuracy_float", "set_pulses"} <= set(metrics)
    assert 0.0 <= table["accuracy_mean"].iloc[0] <= 1.0
    assert any(name.endswith(".deployed") for name, _, _ in arrays)  # snapshots handed back
