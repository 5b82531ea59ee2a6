"""Digital twin, end to end (docs/twin.md): characterize a chip, build its twin, train a
network on the twin, deploy it on the chip, and compare the chip's accuracy with what the
twin and a generic device model predicted.

    python examples/twin/worked_example.py [--epochs 15] [--db twin_example.db]

The chip is the mock lab's ``hidden_chip_station.yaml`` (NeuroSim physics with parameters
the script never reads). The network is an Iris classifier trained by equilibrium
propagation (Scellier & Bengio, Front. Comput. Neurosci. 11, 24 (2017)) with the twin's
devices in the loop. Deployment programs the trained conductances with one round of pulses
planned on the twin's mean trajectory (no verify), so what the devices do with those
pulses decides the accuracy; the same pulses on the twin's and on a generic NeuroSim
model's simulated devices are the two predictions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from memhil.algorithms.eqprop import (
    EqPropConfig,
    EqPropTrainer,
    NetworkSpec,
    ResistiveNetwork,
    memristor_store,
)
from memhil.algorithms.eqprop.training import init_conductances
from memhil.backends.sim import SimBackend
from memhil.calibration.twin import build_empirical, check_model
from memhil.datasets import iris
from memhil.devices import build_device_model
from memhil.mock_hw.lab import MockLab
from memhil.runs.protocol_run import run_protocol_file
from memhil.runs.twin import traces_from_run
from memhil.store import RunStore

HERE = Path(__file__).resolve().parent
SPEC = NetworkSpec((4, 6, 3))
GENERIC = "neurosim"  # the model a user without a twin would simulate with


def _sim(device, seed: int) -> SimBackend:
    return SimBackend({"rows": 12, "cols": 12, "device": device, "seed": seed})


def deploy_and_evaluate(backend, plan_device, targets, data, rounds: int) -> tuple[float, float]:
    """Program ``targets`` on ``backend`` with pulses planned on ``plan_device``'s mean
    trajectory (``rounds`` read-pulse rounds), then (loss V^2, accuracy) over all 150 Iris
    samples: the deployed network is the same in every case, so every sample measures how
    faithfully it was deployed (45 test samples alone resolve accuracy only to 2 %)."""
    store = memristor_store(backend, SPEC.layer_shapes(), plan_device, mode="count", seed=0)
    store.program(targets, rounds=rounds)
    trainer = EqPropTrainer(ResistiveNetwork(SPEC, store.g_max_s), store, EqPropConfig())
    x = torch.cat([data.train.x, data.test.x])
    y = torch.cat([data.train.y, data.test.y])
    return trainer.evaluate(x, y)


def run(
    epochs: int = 15, db: str | Path = "twin_example.db", rounds: int = 1, replicas: int = 5
) -> dict:
    """The three steps; predictions on ``replicas`` simulated chips (fresh devices each)."""
    data = iris()
    chip = MockLab.open_backend(HERE / "hidden_chip_station.yaml", strategy="parallel")
    try:
        # 1. characterize: two pulse-train runs, one to build from, one held out
        for _ in range(2):
            run_protocol_file(HERE / "pulse_trains.yaml", backend=chip, db=db, progress=False)
        with RunStore(db) as runs:
            ids = runs.run_ids()[-2:]
            build, held = (traces_from_run(runs, r) for r in ids)
        twin = build_empirical([build], source=f"{db} run {ids[0]}").device_config()
        fidelity = {
            name: check_model(build_device_model(spec), held)
            for name, spec in (("twin", twin), ("generic", GENERIC))
        }
        # 2. train on the twin: EqProp with the twin's simulated devices in the loop
        with _sim(twin, seed=1) as sim:
            store = memristor_store(sim, SPEC.layer_shapes(), twin, mode="count", seed=0)
            store.program(init_conductances(SPEC, store.g_min_s, store.g_max_s, seed=0), rounds=3)
            trainer = EqPropTrainer(
                ResistiveNetwork(SPEC, store.g_max_s), store, EqPropConfig(lr=20.0, batch_size=15)
            )
            for _ in range(epochs):
                trainer.train_epoch(data.train.x, data.train.y)
            trained = store.read()
            x = torch.cat([data.train.x, data.test.x])
            on_twin = trainer.evaluate(x, torch.cat([data.train.y, data.test.y]))
        # 3. deploy the trained conductances on the chip, and predict that deployment
        results = {"trained on twin": [on_twin]}
        results["chip"] = [deploy_and_evaluate(chip, twin, trained, data, rounds)]
        for name, device in (("twin prediction", twin), ("generic prediction", GENERIC)):
            results[name] = []
            for seed in range(2, 2 + replicas):
                with _sim(device, seed=seed) as sim:
                    results[name].append(deploy_and_evaluate(sim, twin, trained, data, rounds))
    finally:
        chip.close()
    return {"results": results, "fidelity": fidelity}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--db", default="twin_example.db")
    ap.add_argument("--rounds", type=int, default=1, help="deployment read-pulse rounds")
    ap.add_argument("--replicas", type=int, default=5, help="simulated chips per prediction")
    args = ap.parse_args(argv)
    out = run(args.epochs, args.db, args.rounds, args.replicas)
    for name, chk in out["fidelity"].items():
        print(
            f"{name:<8} model on held-out pulse trains: mean error {chk.mean_error_rel:.2%}, "
            f"KS D {chk.ks_distance:.3f}, log-likelihood {chk.log_likelihood:.2f} nats/step "
            f"({'consistent' if chk.consistent else 'inconsistent'})"
        )
    for name, runs in out["results"].items():
        loss, acc = torch.tensor(runs, dtype=torch.float64).T
        spread = (
            f" ± {float(acc.std()):.3f}" if len(runs) > 1 else "        "
        ) + f"  loss {float(loss.mean()):.4f}"
        spread += f" ± {float(loss.std()):.4f} V^2" if len(runs) > 1 else " V^2"
        print(f"{name:<20} accuracy {float(acc.mean()):.3f}{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
