"""e-prop as an experiment (``algorithm: eprop``): the network is put on the devices in
``prepare`` and trained there (updates are device pulses); a checkpoint (its state and the
simulator's) resumes to the same training as an uninterrupted run; bad entries name the
key; the shipped example runs through ``memhil run``."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.algorithms.experiment import get_algorithm
from memhil.backends.sim import SimBackend
from memhil.cli import main
from memhil.core.errors import ConfigError, LimitError
from memhil.datasets import copy_first_input, pattern_generation
from memhil.runs.experiment_run import run_experiment_file
from memhil.store import RunStore
from tests.experiments.conftest import EXAMPLES
from tests.experiments.test_mars_experiment import drive

EPROP = get_algorithm("eprop")
SIM = {"rows": 4, "cols": 14, "seed": 0}  # PCM, side by side: 4 rows, 2 x (3 + 3 + 1) cols
TASK = {"n_in": 4, "steps": 40, "n_samples": 3, "n_train": 2, "seed": 0}


def build(backend=None, **sections):
    config = EPROP.configure(
        {"n_rec": 3, "lr_in": 1e-3, "lr_rec": 1e-3, "lr_out": 1e-3, **sections.get("model", {})},
        {"epochs": 2, "seed": 0, **sections.get("train", {})},
        sections.get("deploy", {}),
    )
    data = sections.get("data") or pattern_generation(**TASK)
    return EPROP(config, data, backend if backend is not None else SimBackend(SIM))


def test_eprop_trains_with_the_devices_in_the_loop():
    exp = build()
    exp.preflight()
    assert exp.backend.tally.set_pulses == 0  # building and the pre-flight pulse nothing
    prep, _ = drive(exp.prepare())
    assert prep["set_step_s"] > 0
    after_prepare = exp.backend.tally.set_pulses
    metrics, steps = drive(exp.train_epoch(0))
    assert [s.index for s in steps] == [0, 1] and all(s.metrics["loss"] >= 0 for s in steps)
    assert metrics["updates"] == 2 and metrics["test_loss"] >= 0
    assert drive(exp.deploy()) == ({}, [])  # the weights are already on the devices
    final, in_float = exp.evaluate(), exp.evaluate_float()
    assert set(final) == set(in_float) == {"loss", "train_loss"}  # test and training splits
    assert min(final.values()) >= 0 and min(in_float.values()) >= 0
    _, y_train = exp.net.forward(exp.train_split.x)  # train_loss is the training split's MSE
    again = exp._metrics(y_train, exp.train_split.y)["loss"]
    # each forward draws new read noise (a few % of G here): the loss moves by a few %
    assert final["train_loss"] == pytest.approx(again, rel=0.1)
    assert exp.backend.tally.set_pulses >= after_prepare


def test_a_checkpoint_resumes_to_the_same_training_as_an_uninterrupted_run():
    # mixed precision: the float accumulators are digital state, the weights device state
    run = build()
    drive(run.prepare())
    drive(run.train_epoch(0))
    saved, chip = run.state_dict(), run.backend.state_dict()
    resumed_backend = SimBackend(SIM)
    resumed_backend.load_state_dict(chip)
    resumed = build(resumed_backend)
    resumed.load_state(saved)  # no prepare: nothing is pulsed again
    assert resumed_backend.tally.set_pulses == 0
    assert drive(resumed.train_epoch(1))[0] == drive(run.train_epoch(1))[0]
    for name, scheme in run.net.schemes.items():
        # the float64 accumulators gather float32 gradients whose BLAS reductions may round
        # differently (1 ulp, ~1e-9 here) in two processes' memory layouts: 1e-6 of the
        # transfer quantum (~0.04) is far below anything that changes a pulse count
        torch.testing.assert_close(
            resumed.net.schemes[name].chi, scheme.chi, atol=1e-6 * scheme.quantum, rtol=0
        )


def test_a_classification_set_trains_with_cross_entropy():
    data = copy_first_input(30, n_symbols=2, n_train=4, n_test=4, seed=0)  # 3 channels, 2 classes
    exp = build(SimBackend({**SIM, "cols": 16}), data=data, model={"loss": "ce", "ce_window": 5})
    drive(exp.prepare())
    metrics, _ = drive(exp.train_epoch(0))
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"model": {"scheme": "magic"}}, "model.scheme"),
        ({"model": {"scheme_params": {"transfer_every": 0}}}, "model.scheme_params.transfer_every"),
        ({"model": {"tau_rec_s": 0.0}}, "model.tau_rec_s"),
        ({"model": {"loss": "ce"}}, "model.loss"),  # a regression task
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"deploy": {"g_window_s": [1e-5, 1e-6]}}, "deploy.g_window_s"),
    ],
)
def test_a_bad_eprop_entry_names_its_key(sections, key):
    with pytest.raises(ConfigError) as err:
        build(**sections)
    assert err.value.key == key


def test_eprop_preflight_refuses_what_does_not_fit_or_exceeds_the_limits():
    with pytest.raises(ConfigError) as err:
        build(model={"n_rec": 8}).preflight()
    assert err.value.key == "model.n_rec"
    with pytest.raises(LimitError) as lim:
        build(deploy={"reset_pulse": [-2.5, 1e-12]}).preflight()
    assert lim.value.param == "deploy.reset_pulse"


def test_the_eprop_example_runs_through_memhil_run(experiment_file, tmp_path, capsys):
    path = experiment_file(
        "eprop_pattern.yaml", dataset={"steps": 40, "n_samples": 3}, train={"epochs": 1}
    )
    assert main(["run", str(path), "--db", str(tmp_path / "r.db"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "algorithm eprop" in out and "on the backend" in out and " SET" in out


def test_the_eprop_example_runs_on_a_mock_lab_of_its_station_file(experiment_file, tmp_path):
    """The example with only ``backend:`` (and, for time, its sizes) changed, on an
    in-process mock lab of examples/mock_pcm_station.yaml: the three matrices side by side
    on the one PCM array, reads over the array board, updates as its pulses."""
    station = EXAMPLES.parent / "mock_pcm_station.yaml"
    path = experiment_file(
        "eprop_pattern.yaml",
        dataset={"n_in": 4, "steps": 10},
        model={"n_rec": 3, "response_pulses": 3},  # each pulse is read back: 20 board reads
        train={"epochs": 1},
        backend={"mock_lab": str(station)},
    )
    db = tmp_path / "runs.db"
    rid = run_experiment_file(path, db=db, progress=False)
    with RunStore(db) as store:
        df = store.load(rid)
        md = store.metadata(rid)
        arrays = store.arrays(rid)
    assert md["station_identity"]["kind"] == "mock_lab"
    backend = df[df["phase"] == "backend"].set_index("metric")["value"]
    assert math.isfinite(backend["train_loss"]) and backend["train_loss"] >= 0
    pulses = df[df["metric"] == "set_pulses"]["value"]
    assert pulses.max() > 0  # the network was written by the board's pulses
    assert {n for n, _, _ in arrays} >= {"g_s.tile0"}  # one array: one snapshot tile
