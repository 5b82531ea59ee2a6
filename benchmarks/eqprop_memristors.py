"""EqProp with nonlinear memristor weight updates: accuracy across device models and the
resistance ratio R_off / R_on (``docs/algorithms.md#eqprop``).

For each of the six memristor models (HP linear drift, Joglekar, Biolek, Prodromakis
windows, VTEAM, Yakopcic) and each ratio, a 4-10-3 resistive EqProp network is trained on
Iris with its conductances on simulated devices: every step's desired dG becomes pulses
through the model's linearised (``local``, default) or trajectory inverse, the device
model decides the realised dG, and the network reads the conductances back. An ``ideal``
row applies the same clipped steps exactly. Prints the final test accuracy (mean +- std
over seeds) per model x ratio and the mean update fidelity (cosine of realised vs
requested dG); writes learning curves (PNG) and all numbers (JSON) under ``--out``.

    python benchmarks/eqprop_memristors.py --quick          # smoke run, < 1 min
    python benchmarks/eqprop_memristors.py                  # full sweep (see --help)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from experiment_runs import add_run_options, run_example  # benchmarks/experiment_runs.py

from memhil.algorithms.eqprop.devices import (
    MEMRISTOR_MODELS,
    memristor_device_config,
    memristor_store,
    usable_range,
)
from memhil.algorithms.eqprop.network import NetworkSpec, ResistiveNetwork
from memhil.algorithms.eqprop.training import (
    EqPropConfig,
    EqPropTrainer,
    IdealConductances,
    init_conductances,
)
from memhil.algorithms.metrics import prediction_summary
from memhil.backends.sim import SimBackend
from memhil.datasets import digits, iris, standardize

RATIOS = (2.0, 5.0, 10.0, 30.0, 100.0, 1000.0)
# Simulator limits for the sweep: HP devices at 1 V and R_on = 100 ohm draw 10 mA, and
# HP pulses at large ratios last seconds (virtual time), beyond the 1 mA / 1 s defaults.
SIM_LIMITS = {"compliance_max_a": 0.05, "compliance_default_a": 0.05, "width_max_s": 100.0}


def task(name: str):
    if name == "iris":
        return iris(), (4, 10, 3)
    return standardize(digits()), (64, 32, 10)


def run_one(model: str, ratio: float, seed: int, args, data, sizes) -> dict:
    """Train one network; returns the learning curve and summary numbers."""
    spec = NetworkSpec(sizes)
    cfg = EqPropConfig(lr=args.lr, batch_size=args.batch_size)
    t0 = time.perf_counter()
    if model == "ideal":
        g_max = 1e-4
        g_min = g_max / ratio
        store = IdealConductances(init_conductances(spec, g_min, g_max, seed=seed), g_min, g_max)
        fidelity = float("nan")
    else:
        dev = memristor_device_config(model, ratio, variability=args.variability)
        shapes = spec.layer_shapes()
        backend = SimBackend(
            {
                "tiles": len(shapes),
                "rows": max(r for r, _ in shapes),
                "cols": max(c for _, c in shapes),
                "device": dev,
                "seed": seed,
                "limits": SIM_LIMITS,
            }
        )
        store = memristor_store(backend, shapes, dev, ratio, inverse=args.inverse, seed=seed)
        g_min, g_max = usable_range(dev, ratio)
        store.program(init_conductances(spec, g_min, g_max, seed=seed))
    trainer = EqPropTrainer(ResistiveNetwork(spec, g_max), store, cfg, seed=seed)
    hist = trainer.fit(data, args.epochs)
    test_logits = trainer.net.outputs(trainer.net.solve(store.read(), data.test.x))
    predictions = prediction_summary(test_logits.argmax(1), data.n_classes, data.test.y)
    if model != "ideal":
        fid = store.update_fidelity
        fidelity = sum(c for c, _ in fid) / max(1, len(fid))
    return {
        "model": model,
        "ratio": ratio,
        "seed": seed,
        "test_acc": hist.test_acc,
        "train_loss": hist.train_loss,
        "final_test_acc": hist.test_acc[-1],
        **predictions.as_dict(),
        "fidelity_cos": fidelity,
        "wall_s": time.perf_counter() - t0,
    }


def table(results: list[dict], models, ratios, key: str, fmt) -> str:
    head = f"{'model':<12}" + "".join(f"{f'R_off/R_on={r:g}':>16}" for r in ratios)
    lines = [head, "-" * len(head)]
    for m in models:
        row = f"{m:<12}"
        for r in ratios:
            vals = torch.tensor(
                [x[key] for x in results if x["model"] == m and x["ratio"] == r],
                dtype=torch.float64,
            )
            n_coll = sum(x["collapsed"] for x in results if x["model"] == m and x["ratio"] == r)
            # a collapsed run's accuracy never stands without the flag beside it
            flag = f" [{n_coll} collapsed]" if n_coll and key == "final_test_acc" else ""
            row += f"{fmt(vals):>16}{flag}"
        lines.append(row)
    return "\n".join(lines)


def pct(vals: torch.Tensor) -> str:
    if vals.numel() == 0:
        return "-"
    std = float(vals.std()) if vals.numel() > 1 else 0.0
    return f"{100 * float(vals.mean()):.1f} +- {100 * std:.1f}"


def cos(vals: torch.Tensor) -> str:
    return "-" if vals.numel() == 0 or bool(vals.isnan().all()) else f"{float(vals.mean()):.3f}"


def plot(results: list[dict], models, ratios, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(models)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
    colours = plt.cm.viridis(torch.linspace(0, 0.9, len(ratios)).tolist())
    for ax, m in zip(axes.flat, models):
        for r, c in zip(ratios, colours):
            curves = [x["test_acc"] for x in results if x["model"] == m and x["ratio"] == r]
            if curves:
                mean = torch.tensor(curves).mean(0)
                ax.plot(range(len(mean)), 100 * mean, color=c, label=f"{r:g}")
        ax.set_title(m)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(title="R_off/R_on", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 ratios, 1 seed, 4 epochs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/eqprop_memristors"))
    p.add_argument("--task", choices=("iris", "digits"), default="iris")
    p.add_argument("--models", nargs="+", default=["ideal", *MEMRISTOR_MODELS])
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=35)
    p.add_argument("--lr", type=float, default=10.0)
    p.add_argument("--inverse", choices=("local", "trajectory"), default="local")
    p.add_argument(
        "--variability",
        action="store_true",
        help="keep the models' default 5 %% D2D and C2C spreads (default: off)",
    )
    add_run_options(p)
    args = p.parse_args(argv)
    if args.quick:
        args.ratios, args.seeds, args.epochs = [2.0, 100.0], 1, 4
    data, sizes = task(args.task)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = []
    for model in args.models:
        for ratio in args.ratios:
            for seed in range(args.seeds):
                res = run_one(model, ratio, seed, args, data, sizes)
                results.append(res)
                print(
                    f"  {model:<12} ratio {ratio:>6g} seed {seed}: test acc "
                    f"{100 * res['final_test_acc']:5.1f} %  ({res['wall_s']:.1f} s)",
                    flush=True,
                )
    wall = time.perf_counter() - t0
    print(
        f"\nEqProp on {args.task} {'-'.join(map(str, sizes))}, {args.epochs} epochs, batch "
        f"{args.batch_size}, lr {args.lr:g}, {args.seeds} seed(s), inverse {args.inverse}, "
        f"device variability {'on' if args.variability else 'off'}"
    )
    print("\nFinal test accuracy (%, mean +- std over seeds)")
    print(table(results, args.models, args.ratios, "final_test_acc", pct))
    print("\nUpdate fidelity: mean cosine(realised dG, requested dG) per step")
    print(
        table(results, [m for m in args.models if m != "ideal"], args.ratios, "fidelity_cos", cos)
    )
    print("\nexperiment run (EqProp updates on the devices of one chip):")
    quick = {"train": {"epochs": 2}} if args.quick else {}
    _, _, line = run_example("eqprop_iris", backend=args.backend, db=args.db, **quick)
    print(line, flush=True)
    print(f"\nwall time {wall:.0f} s")
    plot(results, args.models, args.ratios, args.out / f"learning_curves_{args.task}.png")
    (args.out / f"results_{args.task}.json").write_text(
        json.dumps(
            {
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "results": results,
                "wall_s": wall,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}/learning_curves_{args.task}.png and results_{args.task}.json")


if __name__ == "__main__":
    main()
