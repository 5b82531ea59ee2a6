"""MARS as an experiment (``algorithm: mars``): built from the file's mappings, fitted,
deployed by program-and-verify with progress and evaluated on a small simulator; its state
round-trips; bad entries fail naming the key; the shipped example runs through
``memhil run``."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.algorithms.experiment import Step, get_algorithm
from memhil.backends.sim import SimBackend
from memhil.cli import main
from memhil.core.errors import ConfigError, LimitError
from memhil.datasets import ClassificationData, Split, copy_first_input

MARS = get_algorithm("mars")


def drive(work) -> tuple[dict, list[Step]]:
    """Run a phase; its return value and the steps it yielded."""
    steps = []
    while True:
        try:
            steps.append(next(work))
        except StopIteration as done:
            return done.value, steps


def build(backend=None, **sections):
    config = MARS.configure(
        {"n_units": 2, **sections.get("model", {})},
        {"epochs": 1, "seed": 0, "batch_size": 16, **sections.get("train", {})},
        {"max_iterations": 8, **sections.get("deploy", {})},
    )
    data = copy_first_input(8, n_symbols=3, n_train=60, n_test=30, seed=0)
    if backend is None:
        backend = SimBackend({"rows": 16, "cols": 16, "seed": 0})
    return MARS(config, data, backend)


def test_mars_fits_deploys_with_progress_and_evaluates_on_the_backend():
    exp = build()
    exp.preflight()
    fit, fit_steps = drive(exp.train_epoch(0))
    assert len(fit_steps) >= 2 and fit_steps[-1].index == fit_steps[-1].total - 1
    assert 0.0 <= fit["train_accuracy"] <= 1.0 and fit["ridge_lambda"] > 0
    dep, dep_steps = drive(exp.deploy())
    # W_in (4 inputs x 2 units) and the readout (4 features x 3 classes) on pairs
    assert dep["cells"] == 4 * 4 + 4 * 6 and dep["matrices"] == 2
    assert 0.0 <= dep["within_tolerance"] <= 1.0 and dep["rms_error_s"] > 0
    assert dep_steps and all(s.index < s.total for s in dep_steps)
    assert exp.backend.tally.set_pulses > 0  # the backend was programmed
    on_chip, in_float = exp.evaluate(), exp.evaluate_float()
    for value in (on_chip["accuracy"], on_chip["readout_accuracy"], in_float["accuracy"]):
        assert 0.0 <= value <= 1.0


def test_mars_state_round_trips_to_identical_outputs():
    exp = build()
    drive(exp.train_epoch(0))
    fresh = build()
    assert fresh.state_dict()["readout"] is None
    fresh.load_state(exp.state_dict())
    x = exp.split.test.x
    assert torch.equal(fresh.reservoir.features(x), exp.reservoir.features(x))
    assert torch.equal(fresh.readout.weight, exp.readout.weight)
    assert fresh.evaluate_float() == exp.evaluate_float()


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"train": {"epochs": 2}}, "train.epochs"),
        ({"model": {"skip_x": 1}}, "model.skip_x"),
        ({"model": {"dt": 50.0}}, "model.dt"),  # decay a = 1 - dt (kp + kd) <= 0
        ({"deploy": {"tolerance_s": -1.0}}, "deploy.tolerance_s"),
    ],
)
def test_a_bad_mars_entry_names_its_key(sections, key):
    with pytest.raises(ConfigError) as err:
        build(**sections)
    assert err.value.key == key


def test_mars_preflight_refuses_what_does_not_fit_or_exceeds_the_limits():
    tiny = SimBackend({"rows": 4, "cols": 8})
    with pytest.raises(ConfigError) as err:
        build(tiny).preflight()  # W_in and the readout need 4 + 6 columns
    assert err.value.key == "deploy.projections"
    with pytest.raises(LimitError) as lim:
        build(deploy={"set_pulse": [9.0, 1e-7]}).preflight()
    assert lim.value.param == "deploy.set_pulse" and lim.value.value == 9.0
    with pytest.raises(ConfigError) as err:  # the PCM window is 0.1 to 12 uS
        build(deploy={"g_window_s": [1e-6, 1e-3]}).preflight()
    assert err.value.key == "deploy.g_window_s" and "device window" in err.value.reason
    table = Split(torch.zeros(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ConfigError) as err:  # tabular, not sequences
        MARS(MARS.configure({}, {}, {}), ClassificationData("flat", table, table, 2), tiny)
    assert err.value.key == "dataset"


def test_the_mars_example_runs_through_memhil_run(experiment_file, tmp_path, capsys):
    # the shipped file on a generated set (JapaneseVowels loads through sktime: slow)
    data = {"name": "copy_first_input", "seq_len": 8, "n_train": 60, "n_test": 30}
    path = experiment_file("mars_vowels.yaml", dataset=data, deploy={"max_iterations": 10})
    assert main(["run", str(path), "--db", str(tmp_path / "r.db"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "algorithm mars" in out and "% on the backend" in out
    line = next(s for s in out.splitlines() if "on the backend" in s)
    assert not math.isnan(float(line.split("accuracy")[1].split("%")[0]))
