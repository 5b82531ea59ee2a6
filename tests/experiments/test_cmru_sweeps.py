"""The CMRU benchmarks as sweeps: a table printed from the stored runs equals the one printed
after running and holds the numbers a direct run of the experiment gives; a budget cap B
with a constant learning rate is the first B updates of a longer run (what lets one run
give every budget of benchmarks/cmru_budget.py)."""

from __future__ import annotations

import importlib
import math
import statistics
from pathlib import Path

import pytest
import torch

from memhil.algorithms.experiment import get_algorithm
from memhil.algorithms.metrics import format_accuracy, is_partial_collapse
from memhil.backends.sim import SimBackend
from memhil.datasets import delayed_recall, flip_flop
from memhil.store import RunStore
from memhil.sweeps import load_sweep_file
from tests.experiments.test_mars_experiment import drive

ROOT = Path(__file__).resolve().parents[2]
CMRU = get_algorithm("cmru")
TINY_DATA = {"name": "delayed_recall", "seq_len": 8, "n_train": 32, "n_test": 16}
TINY_TRAIN = {
    "epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 8,
    "diagnostics_every": 2,
    "checkpoint_every": 4,  # one checkpoint per run: fewer store commits
}
TINY_MODEL = {"model.d_model": 4, "model.d_state": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (two threads on a loaded 2-core box cost ~10x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bench(monkeypatch):
    """The benchmark scripts as modules (they import their neighbours by name)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("cmru"), importlib.import_module("cmru_budget")


def direct(
    model: dict, train: dict, data, epochs: int, dataset: dict | None = None
) -> tuple[list[dict], dict]:
    """The experiment run without the runner: per-epoch results and the final metrics."""
    config = CMRU.configure(
        model, {**train, "epochs": epochs}, {"program": "none"}, dataset=dataset
    )
    torch.manual_seed(config.train.seed)  # as the runner does before the build
    exp = CMRU(config, data, SimBackend({"rows": 8, "cols": 8}))
    epochs_out = [drive(exp.train_epoch(e))[0] for e in range(epochs)]
    drive(exp.deploy())
    return epochs_out, exp.evaluate()


def test_a_constant_rate_run_capped_at_b_is_the_prefix_of_one_capped_at_2b():
    data = delayed_recall(8, n_train=32, n_test=16, seed=0)
    model = {"d_model": 4, "d_state": 2, "mlp_ratio": 1}
    train = {"steps_per_epoch": 3, "batch_size": 8, "schedule": "constant", "lr": 5e-3}
    short, final_short = direct(model, train, data, 2)
    long, _ = direct(model, train, data, 4)
    assert long[:2] == short  # exact: the same ops in the same order on one CPU
    assert final_short["accuracy"] == long[1]["test_accuracy"]
    # with the cosine schedule (spanning the cap) the first epochs differ
    cosine, _ = direct(model, {**train, "schedule": "cosine"}, data, 4)
    assert cosine[1]["loss"] != long[1]["loss"]


def test_baselines_match_the_memory_units_parameter_count_and_flip_flop_trains_per_step():
    data = flip_flop(8, n_train=32, n_test=16, seed=0)
    model = {"d_model": 8, "d_state": 4, "mlp_ratio": 1, "match_params_of": "cmru"}
    counts = {}
    for cell in ("cmru", "lru", "mingru"):
        _, final = direct({**model, "cell": cell}, {"steps_per_epoch": 2}, data, 1)
        counts[cell] = final["parameters"]
        assert 0.0 <= final["accuracy"] <= 1.0 and final["steps"] == 2
    # state sizes chosen so every model's parameter count lies within 2 % of the CMRU's
    assert all(abs(n - counts["cmru"]) <= 0.02 * counts["cmru"] for n in counts.values())


def test_a_curriculum_runs_first_and_steps_to_converge_is_reported():
    data = delayed_recall(8, n_train=32, n_test=16, seed=0)
    curriculum = {"steps": 4, "dataset": {"name": "delayed_recall", "seq_len": 4, "n_train": 16}}
    model = {"d_model": 4, "d_state": 2, "mlp_ratio": 1}
    train = {"steps_per_epoch": 3, "curriculum": curriculum, "converge_accuracy": 0.01}
    _, final = direct(model, train, data, 1)
    assert final["curriculum_steps"] == 4 and final["steps"] == 3
    # every batch accuracy is >= 0.01 - 1 = the band of a 0.01 target: converged at update 1
    assert final["steps_to_converge"] == 1
    train = {**train, "converge_accuracy": 1.0, "window": 1}
    _, final = direct(model, train, data, 1)
    assert math.isnan(final["steps_to_converge"])  # never all correct in 3 updates


def tiny_sweep(tmp_path: Path, base: str, cells: list[str], seeds: list[int]) -> Path:
    """A sweep file over ``cells`` and ``seeds`` of a shipped benchmark experiment file (the
    shipped sweep files pre-flight 30-75 full-size trials: too slow for a test)."""
    path = tmp_path / "tiny.yaml"
    base_path = ROOT / "examples/experiments" / base
    path.write_text(f"base: {base_path}\ngrid: {{model.cell: {cells}}}\nseeds: {seeds}\n")
    return path


def test_the_cmru_table_reprints_from_the_store_with_the_runs_numbers(bench, tmp_path, capsys):
    cmru, _ = bench
    path = tiny_sweep(tmp_path, "cmru_retention_T100.yaml", ["cmru", "lru"], [0, 1])
    keys = {f"dataset.{k}": v for k, v in TINY_DATA.items() if k != "name"}
    keys |= {f"train.{k}": v for k, v in TINY_TRAIN.items()}
    sweep = cmru.sweep_variant(load_sweep_file(path), keys | TINY_MODEL)
    db = tmp_path / "cmru.db"
    sweep_id = cmru.run_into_store(sweep, db)
    printed = cmru.print_tables(db, [sweep_id])
    capsys.readouterr()
    cmru.main(["--from-db", str(db), "--sweep", str(sweep_id)])
    assert capsys.readouterr().out.strip() == printed.strip()
    # the seeds' numbers in the table are those of the experiment run directly
    data = delayed_recall(8, n_train=32, n_test=16, seed=0)
    model = {"d_model": 4, "d_state": 2, "mlp_ratio": 2, "match_params_of": "cmru"}
    train = {**TINY_TRAIN, "batch_size": 8, "lr": 5e-3, "stop_accuracy": 0.99}
    train["length_test_factors"] = [2, 10]  # as the shipped file: tested at 2T and 10T
    for cell in ("cmru", "lru"):
        cells, finals = [], []
        for seed in (0, 1):
            _, final = direct({**model, "cell": cell}, {**train, "seed": seed}, data, 2, TINY_DATA)
            conv = None if math.isnan(final["steps_to_converge"]) else final["steps_to_converge"]
            part = is_partial_collapse(final)
            cells.append(cmru.seed_cell(final["accuracy"], bool(final["collapsed"]), conv, part))
            finals.append(final)
        name = cmru.CELL_NAMES[cell]
        row = next(line for line in printed.splitlines() if f" {name} " in line)
        assert row.endswith(" ".join(cells)), (row, cells)
        # the length-generalisation table: at T, 2T and 10T, from the same runs
        section = printed.split("length generalisation")[1].split("memory-unit")[0]
        length_row = next(line for line in section.splitlines() if f" {name} " in line)
        for prefix in ("", "length_x2_", "length_x10_"):
            accs = [f[prefix + "accuracy"] for f in finals]
            coll = sum(bool(f[prefix + "collapsed"]) for f in finals)
            part = sum(
                f[prefix + "classes_never_predicted"] >= 1 and not f[prefix + "collapsed"]
                for f in finals
            )
            sd = statistics.stdev(accs)
            expect = format_accuracy(statistics.mean(accs), sd, coll, 2, part)
            assert expect in length_row, (length_row, prefix, expect)
    assert "at 10T" in printed
    with RunStore(db) as store:
        assert len(cmru.trial_rows(store, sweep_id)) == 4


def test_the_budget_table_shows_at_cap_b_the_run_capped_at_b(bench, tmp_path, capsys):
    cmru, budget = bench
    path = tiny_sweep(tmp_path, "cmru_recall_T1000.yaml", ["bmru"], [0])
    keys = {f"dataset.{k}": v for k, v in TINY_DATA.items() if k != "name"}
    keys |= {f"train.{k}": v for k, v in TINY_TRAIN.items()} | {"train.epochs": 4}
    sweep = cmru.sweep_variant(load_sweep_file(path), keys | TINY_MODEL)
    db = tmp_path / "budget.db"
    sweep_id = cmru.run_into_store(sweep, db)
    budget.main(["--from-db", str(db), "--sweep", str(sweep_id)])
    table = capsys.readouterr().out
    data = delayed_recall(8, n_train=32, n_test=16, seed=0)
    model = {"d_model": 4, "d_state": 2, "mlp_ratio": 2, "cell": "bmru", "match_params_of": "cmru"}
    train = {**TINY_TRAIN, "lr": 5e-3, "schedule": "constant", "stop_accuracy": 0.99}
    for b, epochs in ((3, 1), (6, 2), (12, 4)):  # budgets 3, 6, 12 updates: separate runs
        _, final = direct(model, train, data, epochs)
        row = next(line for line in table.splitlines() if line.startswith(f"BMRU {b:>9}"))
        assert f"{final['accuracy']:.3f}" in row.split()[2], (row, final)
        # the per-seed cell carries the run's own flags: c collapsed, p a class never predicted
        flag = "c" if final["collapsed"] else "p" if is_partial_collapse(final) else ""
        assert row.split()[-1].startswith(f"{final['accuracy']:.3f}{flag}/"), (row, final)
    assert "doubling" in table
    assert "without curriculum, BMRU: " in table  # the verdict of each setting and model
    # the setting's verdict names the runs still training at the cap (12 updates made)
    with RunStore(db) as store:
        made = float(cmru.trial_rows(store, sweep_id)[0]["metrics"]["steps"])
    assert ("still training at their cap: BMRU seed 0" in table) == (made >= 12), made


def test_extending_the_runs_still_training_to_2b_gives_the_table_of_a_2b_sweep(
    bench, tmp_path, capsys
):
    cmru, budget = bench
    path = tiny_sweep(tmp_path, "cmru_recall_T1000.yaml", ["bmru"], [0, 1])
    keys = {f"dataset.{k}": v for k, v in TINY_DATA.items() if k != "name"}
    keys |= {f"train.{k}": v for k, v in TINY_TRAIN.items()} | TINY_MODEL
    # a 2-update window at 0.4: with these seeds, seed 0 stops at update 3 and seed 1 does
    # not by its cap of 6 (asserted below), so the table mixes a stopped and a longer run
    keys |= {"train.window": 2, "train.stop_accuracy": 0.4}
    sweep = cmru.sweep_variant(load_sweep_file(path), keys)
    db = tmp_path / "budget.db"
    first = cmru.run_into_store(sweep, db)
    with RunStore(db) as store:
        extension = budget.extension(sweep, cmru.trial_rows(store, first), 12)
    assert [t.seed for t in extension.trials] == [1]  # only the run still training
    extended = cmru.run_into_store(extension, db)
    with RunStore(db) as store:
        steps = {r["seed"]: r["metrics"]["steps"] for r in cmru.trial_rows(store, extended)}
        steps |= {
            r["seed"]: r["metrics"]["steps"]
            for r in cmru.trial_rows(store, first)
            if r["seed"] == 0
        }
    assert steps[0] < 6 and steps[1] > 6, steps
    budget.main(["--from-db", str(db), "--sweep", str(first), "--sweep", str(extended)])
    combined = capsys.readouterr().out
    assert "BMRU seed 1: run" in combined  # the extension replaced the capped run
    # the same study run at cap 12 from the start (--cap 12): the same rows and verdicts
    full = budget.with_cap(sweep, 12)
    assert full.base_data["train"]["epochs"] == 4
    db_full = tmp_path / "full.db"
    budget.main(["--from-db", str(db_full), "--sweep", str(cmru.run_into_store(full, db_full))])
    alone = capsys.readouterr().out
    assert combined.split("\n\n", 1)[1] == alone.split("\n\n", 1)[1]
    assert "BMRU        12" in alone
    with pytest.raises(SystemExit, match="multiple of 3"):
        budget.extension(sweep, [], 10)
    with pytest.raises(SystemExit, match="multiple of 3"):
        budget.with_cap(sweep, 10)


def test_the_length_test_regenerates_the_files_dataset_at_2t_and_scores_it(tmp_path):
    from memhil.algorithms.cmru.training import scores
    from memhil.core.errors import ConfigError
    from memhil.runs.experiment_file import experiment_file_from_mapping

    file = {
        "algorithm": "cmru",
        "dataset": {**TINY_DATA, "seed": 3},
        "model": {"d_model": 4, "d_state": 2, "mlp_ratio": 1},
        "train": {"steps_per_epoch": 2, "batch_size": 8, "length_test_factors": [2, 3]},
        "deploy": {"program": "none"},
        "backend": {"sim": {"rows": 8, "cols": 8}},
    }
    ef = experiment_file_from_mapping(file, tmp_path / "length.yaml")
    exp = CMRU(ef.config, ef.data, SimBackend({"rows": 8, "cols": 8}))
    drive(exp.train_epoch(0))
    drive(exp.deploy())
    final = exp.evaluate()
    # the generator of the file's dataset, its options kept, at 2T and 3T (one train sequence)
    for f in (2, 3):
        test = delayed_recall(8 * f, n_train=1, n_test=16, seed=3).test
        expect = scores(exp.model, test)
        assert {k: final[f"length_x{f}_{k}"] for k in expect} == expect
    assert final["accuracy"] == scores(exp.model, exp.split.test)["accuracy"]  # T itself
    # without a file's dataset spec there is nothing to regenerate: refused at the build
    config = CMRU.configure({}, {"length_test_factors": [2]}, {"program": "none"})
    with pytest.raises(ConfigError, match="dataset spec") as err:
        CMRU(config, ef.data, SimBackend({"rows": 8, "cols": 8}))
    assert err.value.key == "train.length_test_factors"
    with pytest.raises(ConfigError, match=">= 1"):
        CMRU.configure({}, {"length_test_factors": [0]}, {})
