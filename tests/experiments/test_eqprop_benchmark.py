"""benchmarks/eqprop_memristors.py prints its table from the run store: the table printed
after running a (tiny) sweep equals the one ``--from-db`` rebuilds from the stored runs, and
its cells are the stored trials' accuracies (mean ± sd over seeds); an opt-in row (the
trajectory inverse, zero device spreads) is labelled from its stored configuration."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_table_from_store_reproduces_printed_table(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import eqprop_memristors as bench

    from memhil.store import RunStore
    from memhil.sweeps.results import sweep_trials

    sweep = tmp_path / "tiny.yaml"
    base = ROOT / "examples" / "experiments" / "eqprop_iris.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base": str(base),
                "name": "tiny",
                "grid": {"train.epochs": [1], "deploy.updates": ["exact", "devices"]},
                "seeds": [0, 1],
            }
        )
    )
    # an opt-in row's kind (eqprop_trajectory.yaml, eqprop_variability.yaml): the
    # trajectory inverse on the deterministic model, one seed
    opt_in = tmp_path / "opt_in.yaml"
    spreads = ("r_on_dtod", "r_off_dtod", "mu_v_dtod", "dx_std")
    opt_in.write_text(
        yaml.safe_dump(
            {
                "base": str(base),
                "name": "opt_in",
                "grid": {
                    "train.epochs": [1],
                    "deploy.inverse": ["trajectory"],
                    **{f"backend.sim.device.{k}": [0.0] for k in spreads},
                },
                "seeds": [0],
            }
        )
    )
    db = tmp_path / "runs.db"
    args = ["--sweep-files", str(sweep), str(opt_in), "--db", str(db), "--out", str(tmp_path)]
    printed = bench.main([*args, "--executor", "inline"])
    assert "ideal" in printed and "hp" in printed
    with RunStore(db) as store:
        sweep_id, opt_in_id = (int(r.run_id) for r in store.runs() if "#" not in r.name)
        trials = sweep_trials(store, sweep_id)
    assert list(trials["status"]) == ["completed"] * 4
    reprinted = bench.main(["--from-db", str(db), "--sweep", str(sweep_id), str(opt_in_id)])
    assert reprinted == printed
    # the spreads axes collapse into one flag; the other axis names the row
    assert any(line.startswith("hp no-spread inverse=trajectory") for line in printed.splitlines())
    # the ideal row's cell is the stored accuracies' mean ± sample sd, in %
    exact_trials = trials[trials["deploy.updates"] == "exact"]
    assert (exact_trials["set_pulses"] == 0).all()  # exact updates: nothing pulsed
    assert (trials[trials["deploy.updates"] == "devices"]["set_pulses"] > 0).all()
    exact = exact_trials["accuracy"].astype(float)
    cell = f"{100 * exact.mean():.1f} ± {100 * exact.std(ddof=1):.1f} (2)"
    ideal_line = next(line for line in printed.splitlines() if line.startswith("ideal"))
    assert cell in ideal_line
    capsys.readouterr()
