"""CMRU as an experiment (``algorithm: cmru``): trained in float step by step, its memory
units' projections deployed by program-and-verify with progress and evaluated on a small
simulator; a restored state continues training exactly; bad entries name the key; the
shipped example runs through ``memhil run``."""

from __future__ import annotations

import pytest
import torch

from memhil.algorithms.experiment import get_algorithm
from memhil.analog.linear import AnalogLinear
from memhil.backends.sim import SimBackend
from memhil.cli import main
from memhil.core.errors import ConfigError
from memhil.datasets import copy_first_input
from tests.experiments.test_mars_experiment import drive

CMRU = get_algorithm("cmru")


def build(backend=None, **sections):
    config = CMRU.configure(
        {"d_model": 4, "d_state": 2, "mlp_ratio": 1, **sections.get("model", {})},
        {
            "epochs": 2,
            "seed": 0,
            "steps_per_epoch": 3,
            "batch_size": 8,
            **sections.get("train", {}),
        },
        {"max_iterations": 6, **sections.get("deploy", {})},
    )
    data = copy_first_input(6, n_symbols=3, n_train=40, n_test=20, seed=0)
    if backend is None:
        backend = SimBackend({"rows": 16, "cols": 24, "seed": 0})
    return CMRU(config, data, backend)


def test_cmru_trains_deploys_with_progress_and_evaluates_on_the_backend():
    exp = build()
    exp.preflight()
    metrics, steps = drive(exp.train_epoch(0))
    assert [s.index for s in steps] == [0, 1, 2] and all("loss" in s.metrics for s in steps)
    assert metrics["loss"] > 0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    dep, dep_steps = drive(exp.deploy())
    # [W_c; W_beta] (4 -> 4), W_out (2 -> 4) and the readout (4 -> 3), on pairs
    assert dep["matrices"] == 3 and dep["cells"] == 4 * 8 + 2 * 8 + 4 * 6
    assert dep_steps and exp.backend.tally.set_pulses > 0
    cell = exp.model.blocks[0].cell
    assert isinstance(cell.input_projection, AnalogLinear) and isinstance(cell.out, AnalogLinear)
    assert 0.0 <= exp.evaluate()["accuracy"] <= 1.0
    # the float reference is the trained model, untouched by the deployment
    assert exp.float_model is not None and exp.float_model.blocks[0].cell.input_projection is None
    assert 0.0 <= exp.evaluate_float()["accuracy"] <= 1.0


def test_a_restored_cmru_state_gives_identical_outputs_and_continues_identically():
    exp = build()
    drive(exp.train_epoch(0))
    fresh = build()
    fresh.load_state(exp.state_dict())
    x = exp.split.test.x
    exp.model.eval(), fresh.model.eval()
    assert torch.equal(fresh.model(x), exp.model(x))
    # optimiser moments, schedule and sampler come back too: the next epoch is the same
    assert drive(fresh.train_epoch(1))[0] == drive(exp.train_epoch(1))[0]


def test_only_the_projections_deploy_when_outputs_and_readout_stay_digital():
    exp = build(SimBackend({"rows": 4, "cols": 8}), deploy={"outputs": False, "readout": False})
    exp.preflight()  # [W_c; W_beta] alone: 4 rows x 8 columns
    drive(exp.train_epoch(0))
    assert drive(exp.deploy())[0]["matrices"] == 1
    with pytest.raises(ConfigError) as err:
        build(SimBackend({"rows": 4, "cols": 8})).preflight()
    assert err.value.key == "deploy.outputs"


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"model": {"cell": "gru"}}, "model.cell"),  # no such cell
        ({"model": {"positional_dims": 3}}, "model.positional_dims"),
        ({"train": {"lr": 0.0}}, "train.lr"),
        ({"deploy": {"g_window_s": [2e-6, 1e-6]}}, "deploy.g_window_s"),
    ],
)
def test_a_bad_cmru_entry_names_its_key(sections, key):
    with pytest.raises(ConfigError) as err:
        build(**sections)
    assert err.value.key == key


def test_a_baseline_cell_deploys_nothing_and_is_refused_a_deployment():
    with pytest.raises(ConfigError) as err:  # an LRU has no memory-unit projections
        build(model={"cell": "lru"}).preflight()
    assert err.value.key == "model.cell"
    exp = build(model={"cell": "lru"}, deploy={"program": "none"})
    exp.preflight()
    drive(exp.train_epoch(0))
    drive(exp.deploy())
    assert exp.evaluate()["accuracy"] == exp.evaluate_float()["accuracy"]


def test_the_cmru_example_runs_through_memhil_run(experiment_file, tmp_path, capsys):
    path = experiment_file(
        "cmru_copy_first.yaml",
        dataset={"n_train": 40, "n_test": 20},
        train={"epochs": 1, "steps_per_epoch": 2},
        deploy={"max_iterations": 5},
    )
    assert main(["run", str(path), "--db", str(tmp_path / "r.db"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "algorithm cmru" in out and "% on the backend" in out and " J" in out
