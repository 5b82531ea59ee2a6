"""Digital twin, end to end (docs/twin.md): characterize a chip, build its twin, train a
network on the twin, deploy it on the chip, and compare the chip's accuracy with what the
twin and a generic device model predicted.

    python examples/twin/worked_example.py [--epochs 15] [--replicas 20] [--per-class 1000]

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
import math
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


def generated_test_set(data, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of each Iris class from a Gaussian with that class's mean and
    covariance (all 150 samples, standardized as ``data``): a test set large enough that
    an accuracy resolves to about 0.01 (Iris's 150 samples: 0.03), drawn from the same
    distribution, none of it seen in training."""
    x = torch.cat([data.train.x, data.test.x]).double()
    y = torch.cat([data.train.y, data.test.y])
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(data.n_classes):  # a loop over the three classes
        xc = x[y == c]
        root = torch.linalg.cholesky(torch.cov(xc.T))
        z = torch.randn((per_class, xc.shape[1]), generator=gen, dtype=torch.float64)
        xs.append(xc.mean(0) + z @ root.T)
        ys.append(torch.full((per_class,), c, dtype=torch.long))
    return torch.cat(xs).float(), torch.cat(ys)


def deploy_and_evaluate(backend, plan_device, targets, tests, rounds: int) -> list[float]:
    """Program ``targets`` on ``backend`` with pulses planned on ``plan_device``'s mean
    trajectory (``rounds`` read-pulse rounds), then (loss V^2, accuracy) on each test set
    of ``tests`` in turn, flattened: the deployed network is the same in every case, so
    every sample measures how faithfully it was deployed."""
    store = memristor_store(backend, SPEC.layer_shapes(), plan_device, mode="count", seed=0)
    store.program(targets, rounds=rounds)
    trainer = EqPropTrainer(ResistiveNetwork(SPEC, store.g_max_s), store, EqPropConfig())
    return [m for x, y in tests for m in trainer.evaluate(x, y)]


def prediction_error(predicted: list[float], measured: float) -> tuple[float, float, float]:
    """(mean prediction - measured, its standard error over the replicas, and the
    measured value's distance from the prediction in units of the replicas' sd: how
    typical the chip is of the chips the model predicts)."""
    p = torch.tensor(predicted, dtype=torch.float64)
    sd = float(p.std()) if p.numel() > 1 else float("nan")
    err = float(p.mean()) - measured
    return err, sd / math.sqrt(p.numel()), abs(err) / sd if sd > 0 else float("inf")


def run(
    epochs: int = 15,
    db: str | Path = "twin_example.db",
    rounds: int = 1,
    replicas: int = 20,
    per_class: int = 1000,
) -> dict:
    """The three steps; predictions on ``replicas`` simulated chips (fresh devices each),
    evaluated on Iris (150 samples) and on ``per_class`` generated samples per class."""
    data = iris()
    tests = {
        "iris": (torch.cat([data.train.x, data.test.x]), torch.cat([data.train.y, data.test.y])),
        "generated": generated_test_set(data, per_class),
    }
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
            on_twin = [m for x, y in tests.values() for m in trainer.evaluate(x, y)]
        # 3. deploy the trained conductances on the chip, and predict that deployment
        results = {"trained on twin": [on_twin]}
        results["chip"] = [deploy_and_evaluate(chip, twin, trained, tests.values(), rounds)]
        for name, device in (("twin prediction", twin), ("generic prediction", GENERIC)):
            results[name] = []
            for seed in range(2, 2 + replicas):
                with _sim(device, seed=seed) as sim:
                    results[name].append(
                        deploy_and_evaluate(sim, twin, trained, tests.values(), rounds)
                    )
    finally:
        chip.close()
    # per test set: {result: (losses, accuracies)} over replicas
    metrics = {
        test: {
            name: ([r[2 * i] for r in runs], [r[2 * i + 1] for r in runs])
            for name, runs in results.items()
        }
        for i, test in enumerate(tests)
    }
    return {
        "metrics": metrics,
        "fidelity": fidelity,
        "sizes": {k: len(v[1]) for k, v in tests.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--db", default="twin_example.db")
    ap.add_argument("--rounds", type=int, default=1, help="deployment read-pulse rounds")
    ap.add_argument("--replicas", type=int, default=20, help="simulated chips per prediction")
    ap.add_argument("--per-class", type=int, default=1000, help="generated test samples per class")
    args = ap.parse_args(argv)
    out = run(args.epochs, args.db, args.rounds, args.replicas, args.per_class)
    for name, chk in out["fidelity"].items():
        print(
            f"{name:<8} model on held-out pulse trains: mean error {chk.mean_error_rel:.2%}, "
            f"KS D {chk.ks_distance:.3f}, log-likelihood {chk.log_likelihood:.2f} nats/step "
            f"({'consistent' if chk.consistent else 'inconsistent'})"
        )
    for test, by_name in out["metrics"].items():
        print(f"\n{test} ({out['sizes'][test]} samples)")
        chip_loss, chip_acc = (v[0] for v in by_name["chip"])
        for name, (losses, accs) in by_name.items():
            line = f"  {name:<20} accuracy {_mean_sd(accs, 3)}  loss {_mean_sd(losses, 4)} V^2"
            if name.endswith("prediction"):
                e_acc, se_acc, z_acc = prediction_error(accs, chip_acc)
                e_loss, se_loss, z_loss = prediction_error(losses, chip_loss)
                line += (
                    f"  error: accuracy {e_acc:+.3f} ± {se_acc:.3f} ({z_acc:.1f} sd),"
                    f" loss {e_loss:+.4f} ± {se_loss:.4f} ({z_loss:.1f} sd)"
                )
            print(line)
    return 0


def _mean_sd(values: list[float], digits: int) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    sd = f" ± {float(t.std()):.{digits}f}" if t.numel() > 1 else " " * (digits + 5)
    return f"{float(t.mean()):.{digits}f}{sd}"


if __name__ == "__main__":
    sys.exit(main())
