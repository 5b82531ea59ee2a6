"""The README's demo end to end (smaller chip), and the simulator showcase."""

from __future__ import annotations

from memhil.cli.demo import TRUE_DEVICE, run_demo
from memhil.cli.showcase import run_showcase
from memhil.store import RunStore


def test_demo_forms_characterizes_fits_and_predicts(tmp_path):
    lines = []
    res = run_demo(
        rows=6,
        cols=6,
        db=tmp_path / "demo.db",
        out_dir=tmp_path / "out",
        seed=3,
        n_pulses=25,
        out=lines.append,
    )
    # forming: the ramp reaches every cell's breakdown voltage (N(2.0, 0.2) V, ramp to 2.8 V)
    assert res["formed_fraction"] >= 0.95
    assert 1.7 < res["v_form_median"] < 2.3
    # the fit finds the true parameters: within 5 standard errors plus the model-mismatch
    # allowance of tests/calibration/test_fit.py (C2C clipping biases the bounds slightly)
    fit = res["fit"]
    span = TRUE_DEVICE["g_max_s"] - TRUE_DEVICE["g_min_s"]
    for name, allowance in (
        ("g_min_s", 0.6 * 0.005 * span),
        ("g_max_s", 0.6 * 0.005 * span),
        ("a_ltp", 0.05 * TRUE_DEVICE["a_ltp"]),
        ("a_ltd", 0.05 * TRUE_DEVICE["a_ltd"]),
    ):
        assert abs(fit.params[name] - TRUE_DEVICE[name]) <= 5 * fit.stderr[name] + allowance, name
    assert res["prediction_error"] < 0.03
    # everything is in the store, and the plots and the fitted model were written
    with RunStore(tmp_path / "demo.db") as store:
        names = {r.name for r in store.runs()}
    assert {"forming_die0", "map_die0", "pulse_train_die1", "pulse_train_simulator"} <= names
    assert (tmp_path / "out" / "fitted_device.yaml").exists()
    assert (tmp_path / "out" / "pulse_train_die1.yaml").exists()  # rerunnable protocol files
    assert (tmp_path / "out" / "ltp_ltd_chip_vs_simulator.png").stat().st_size > 1000
    assert any("simulator vs chip" in line for line in lines)


def test_simulator_showcase_runs():
    lines = []
    res = run_showcase(rows=16, outputs=8, seed=0, out=lines.append)
    assert 0.5 < res["weight_corr"] <= 1.0
    assert len(res["drift"]) == 4 and res["drift"][-1].g_mean_s < res["drift"][0].g_mean_s


def test_the_demo_protocol_files_rerun_with_memhil_run(tmp_path, capsys):
    """As the README says: each written file names its backend (the saved station, the die,
    the fitted simulator), so ``memhil run FILE`` reruns the step."""
    from memhil.cli import main

    out = tmp_path / "out"
    run_demo(
        rows=4,
        cols=4,
        db=tmp_path / "demo.db",
        out_dir=out,
        seed=1,
        n_pulses=5,
        out=lambda line: None,
    )
    assert (out / "station.yaml").exists()
    db = tmp_path / "again.db"
    for name in ("pulse_train_die1", "pulse_train_simulator"):
        assert main(["run", str(out / f"{name}.yaml"), "--db", str(db), "--no-progress"]) == 0
    with RunStore(db) as store:
        kinds = [store.metadata(r.run_id)["station_identity"]["kind"] for r in store.runs()]
    assert kinds == ["mock_lab", "sim"]


def test_showcase_compensation_never_widens_the_drift(capsys):
    lines = []
    res = run_showcase(rows=16, outputs=8, seed=0, out=lines.append)
    assert lines[0].startswith("memhil showcase:")
    for p in res["drift"]:
        assert p.mvm_rel_error_compensated <= p.mvm_rel_error, p
