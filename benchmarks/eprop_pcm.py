"""e-prop on PCM crossbars: loss curves of the six update variants on the pattern task.

A 100-input, 100-neuron LIF network learns srnn-pcm's pattern-generation task (3 training
sequences of 1 s at 1 ms, batch 1, one device write per sequence, 38.6 s of device time
between writes) with its three weight matrices on differential Nandakumar-PCM pairs of the
simulator. Variants (``memhil.algorithms.eprop.training.VARIANTS``, each with its own hyperparameters,
documented there; ``--untuned`` runs all with the float-tuned defaults): float e-prop (no
device writes), ideal device (4-bit perf-mode PCM + accumulation), sign, stochastic,
multi-memristor (N = 4 pairs, refresh at 9 µS), mixed precision. Main table per seed and
the mean over seeds (default 0 and 1); then, on the first seed, an ablation: the device
schemes with PCM drift off and with PCM noise off. Prints the loss tables, the (mean) loss
curves and the pulse counts; writes a PNG plot and a JSON of the curves.

    python benchmarks/eprop_pcm.py            # full run: 2 seeds x 60 epochs (180 updates
                                              # per arm) + ablation (30 epochs), arms in 2
                                              # processes: ~10 min wall on a shared 2-core box
    python benchmarks/eprop_pcm.py --quick    # smoke run (< 1 min)

The last row runs ``examples/experiments/eprop_pattern.yaml`` through the experiment
runner (``--backend``, ``--db``: see ``benchmarks/experiment_runs.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from experiment_runs import add_run_options, run_example  # benchmarks/experiment_runs.py

from memhil.algorithms.eprop.training import VARIANTS, EpropConfig
from memhil.datasets import pattern_generation
from memhil.runs.eprop_variants import build_variant

ABLATION_SCHEMES = ("mixed_precision", "sign", "stochastic", "multi")
ABLATION_MODES = ("no_drift", "no_noise")


def train_arm(
    variant: str,
    config: EpropConfig,
    task,
    epochs: int,
    seed: int,
    device_mode: str | None = None,
    tuned: bool = True,
) -> dict:
    """Train one arm (with the variant's own hyperparameters unless ``tuned`` is False);
    the curve holds the mean training MSE (measured before each update) per epoch."""
    torch.set_num_threads(1)  # also in pool workers
    t0 = time.perf_counter()
    # per-sample read noise: the same Gaussian per read as per-read noise for batch-1
    # steps, without drawing a whole-tile realization every time step (2x faster)
    net = build_variant(
        variant,
        config,
        seed=seed,
        device_mode=device_mode,
        tuned=tuned,
        read={"noise_mode": "per_sample"},
    )
    x, y = task.train.x, task.train.y
    curve = []
    for _ in range(epochs):
        losses = [net.train_step(x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
        curve.append(sum(losses) / len(losses))
    record, _ = net.forward(x)
    tally = net.training_pulses()
    tail = curve[-min(5, len(curve)) :]
    return {
        "variant": variant,
        "seed": seed,
        "device": device_mode or VARIANTS[variant].device,
        "curve": curve,
        "final": sum(tail) / len(tail),
        "best": min(curve),
        "rate_hz": float(record.z.mean()) / config.lif.dt_s,
        "set_pulses": tally.set_pulses,
        "reset_pulses": tally.reset_pulses,
        "refreshes": tally.refreshes,
        "clock_s": net.backend.clock.now(),
        "seconds": time.perf_counter() - t0,
    }


def prefix(row: dict, epochs: int) -> dict:
    """The first ``epochs`` of a run: training is deterministic for a seed, so this is what
    a run of ``epochs`` would give (pulse counts are not split by epoch: shown as -)."""
    curve = row["curve"][:epochs]
    tail = curve[-min(5, len(curve)) :]
    return {
        **row,
        "curve": curve,
        "final": sum(tail) / len(tail),
        "best": min(curve),
        "rate_hz": float("nan"),
        "set_pulses": None,
        "reset_pulses": None,
        "refreshes": None,
        "seconds": float("nan"),
    }


def _count(n) -> str:
    return "-" if n is None else str(n)


def print_table(title: str, rows: list[dict], reference: float) -> None:
    print(f"\n{title}")
    print(
        f"{'variant':<16} {'PCM mode':<11} {'final MSE':>9} {'x float':>7} {'best':>7} "
        f"{'rate Hz':>7} {'SET pulses':>10} {'RESETs':>7} {'refresh':>7} {'wall s':>6}"
    )
    for r in rows:
        print(
            f"{r['variant']:<16} {r['device']:<11} {r['final']:9.4f} {r['final'] / reference:7.2f} "
            f"{r['best']:7.4f} {r['rate_hz']:7.1f} {_count(r['set_pulses']):>10} "
            f"{_count(r['reset_pulses']):>7} {_count(r['refreshes']):>7} {r['seconds']:6.1f}"
        )


def print_curves(rows: list[dict], every: int) -> None:
    names = [
        r["variant"] if r["device"] in ("nandakumar", "ideal") else f"{r['variant']}/{r['device']}"
        for r in rows
    ]
    width = max(10, *(len(n) for n in names)) + 1
    print("\nloss curves (mean training MSE per epoch)")
    print("epoch " + "".join(f"{n:>{width}}" for n in names))
    n = len(rows[0]["curve"])
    for e in list(range(0, n, every)) + ([n - 1] if (n - 1) % every else []):
        print(f"{e + 1:5d} " + "".join(f"{r['curve'][e]:>{width}.4f}" for r in rows))


def plot(main: list[dict], ablation: list[dict], path: Path, baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2 if ablation else 1, figsize=(12 if ablation else 6, 4.5), squeeze=False
    )
    colors = {name: f"C{i}" for i, name in enumerate(VARIANTS)}
    low = 0.8 * min(min(r["curve"]) for r in main + ablation)
    ax = axes[0, 0]
    for r in main:
        ax.plot(
            range(1, len(r["curve"]) + 1),
            r["curve"],
            color=colors[r["variant"]],
            label=r["variant"],
        )
    ax.axhline(baseline, color="gray", ls=":", label="zero output")
    ax.set(
        xlabel="epoch (3 sequences)",
        ylabel="training MSE (clipped at 10)",
        yscale="log",
        title="e-prop on PCM: update schemes",
        ylim=(low, 10.0),
    )
    ax.legend(fontsize=8)
    if ablation:
        ax = axes[0, 1]
        for r in ablation:
            ls = {"nandakumar": "-", "no_drift": "--", "no_noise": ":"}[r["device"]]
            ax.plot(
                range(1, len(r["curve"]) + 1),
                r["curve"],
                ls=ls,
                color=colors[r["variant"]],
                label=f"{r['variant']} ({r['device']})",
            )
        ax.set(
            xlabel="epoch",
            ylabel="training MSE (clipped at 10)",
            yscale="log",
            title="ablation: drift off (--), noise off (:)",
            ylim=(low, 10.0),
        )
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_rows(per_seed: list[list[dict]]) -> list[dict]:
    """Row-wise mean over seeds (curves averaged epoch by epoch); ``ratios`` keeps each
    seed's final MSE / that seed's float final MSE."""
    out = []
    for rows in zip(*per_seed):
        m = {**rows[0], "seed": "mean"}
        m["curve"] = [sum(c) / len(c) for c in zip(*(r["curve"] for r in rows))]
        for key in ("final", "best", "rate_hz", "seconds"):
            m[key] = sum(r[key] for r in rows) / len(rows)
        for key in ("set_pulses", "reset_pulses", "refreshes"):
            vals = [r[key] for r in rows]
            m[key] = None if None in vals else round(sum(vals) / len(vals))
        out.append(m)
    for i, m in enumerate(out):
        m["ratios"] = [rows[i]["final"] / rows[0]["final"] for rows in per_seed]
    return out


def run_arms(jobs: list[tuple], workers: int) -> list[dict]:
    """``train_arm(*job)`` for every job, in order; ``workers`` > 1 runs them in parallel
    processes (arms are independent and seeded, so the results are the same)."""
    from concurrent.futures import ProcessPoolExecutor

    def report(r: dict) -> dict:
        mode = "" if r["device"] in ("nandakumar", "ideal") else f"/{r['device']}"
        print(
            f"  seed {r['seed']} {r['variant'] + mode:<26} final MSE {r['final']:.4f}  "
            f"({r['seconds']:.1f} s)",
            flush=True,
        )
        return r

    if workers <= 1:
        return [report(train_arm(*j)) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return [report(r) for r in pool.map(train_arm, *zip(*jobs))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 30 neurons, 3 epochs, no ablation"
    )
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument(
        "--ablation-epochs",
        type=int,
        default=30,
        help="epochs of each ablation arm (compared with the same epochs of the main run)",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="task/network seeds of the main table (reported per seed and as the mean); "
        "the ablation runs on the first",
    )
    ap.add_argument("--jobs", type=int, default=2, help="arms trained in parallel processes")
    ap.add_argument(
        "--untuned",
        action="store_true",
        help="every variant with the float-tuned EpropConfig defaults (no per-variant "
        "hyperparameters)",
    )
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/eprop_pcm"))
    add_run_options(ap)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    tuned = not args.untuned

    seeds, epochs = args.seeds, args.epochs
    configs = {s: EpropConfig(seed=s) for s in seeds}
    tasks = {s: pattern_generation(seed=s) for s in seeds}
    if args.quick:
        configs = {s: EpropConfig(n_in=30, n_rec=30, seed=s) for s in seeds}
        tasks = {s: pattern_generation(n_in=30, steps=300, seed=s) for s in seeds}
        epochs = 3
    s0 = seeds[0]
    config, task = configs[s0], tasks[s0]
    baseline = sum(float((t.train.y**2).mean()) for t in tasks.values()) / len(seeds)
    print(
        f"e-prop pattern task: {config.n_in} inputs, {config.n_rec} LIF neurons, "
        f"{task.seq_len} steps, {len(task.train.x)} training sequences, {epochs} epochs "
        f"({epochs * len(task.train.x)} updates, {config.wait_s} s device time apart); "
        f"seeds {seeds}; zero-output MSE {baseline:.4f} (mean); "
        f"{'per-variant' if tuned else 'float-tuned (untuned)'} hyperparameters"
    )

    do_ablation = not (args.quick or args.no_ablation)
    n_abl = min(args.ablation_epochs, epochs)
    jobs = [
        (name, configs[s], tasks[s], epochs, s, None, tuned) for s in seeds for name in VARIANTS
    ]
    abl_jobs = (
        [
            (name, config, task, n_abl, s0, mode, tuned)
            for name in ABLATION_SCHEMES
            for mode in ABLATION_MODES
        ]
        if do_ablation
        else []
    )
    results = run_arms(jobs + abl_jobs, args.jobs)
    n_var = len(VARIANTS)
    per_seed = [results[i * n_var : (i + 1) * n_var] for i in range(len(seeds))]
    for rows in per_seed:
        print_table(
            f"seed {rows[0]['seed']}: six variants (Nandakumar PCM; ideal_device = perf mode)",
            rows,
            rows[0]["final"],
        )
    main_rows = mean_rows(per_seed) if len(seeds) > 1 else per_seed[0]
    ref = main_rows[0]["final"]
    if len(seeds) > 1:
        print_table(
            f"mean over seeds {seeds} (x float = mean final / mean float final; "
            f"pulses and wall s are means per run)",
            main_rows,
            ref,
        )
        print(
            "per-seed final / float: "
            + ", ".join(
                f"{r['variant']} " + "/".join(f"{x:.2f}" for x in r["ratios"]) for r in main_rows
            )
        )

    ablation_rows: list[dict] = []
    if do_ablation:
        by_name = {r["variant"]: r for r in per_seed[0]}
        done = iter(results[len(jobs) :])
        for name in ABLATION_SCHEMES:
            ablation_rows.append(prefix(by_name[name], n_abl))
            ablation_rows += [next(done) for _ in ABLATION_MODES]
        print_table(
            f"ablation, seed {s0}: PCM drift off / noise off ({n_abl} epochs; the "
            f"nandakumar rows are the main runs' first {n_abl} epochs; x float = vs float "
            f"e-prop's final MSE after {epochs} epochs, seed {s0})",
            ablation_rows,
            per_seed[0][0]["final"],
        )

    print_curves(main_rows, every=max(1, epochs // 10))
    mixed = next(r for r in main_rows if r["variant"] == "mixed_precision")
    print(
        f"\nmixed precision / float e-prop final MSE: {mixed['final'] / ref:.2f} (expected <= 1.5)"
    )
    for name in ("sign", "stochastic", "multi"):
        r = next(r for r in main_rows if r["variant"] == name)
        print(f"{name} / mixed precision final MSE: {r['final'] / mixed['final']:.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    plot(main_rows, ablation_rows, args.out / "eprop_pcm_loss.png", baseline)
    (args.out / "eprop_pcm.json").write_text(
        json.dumps(
            {
                "epochs": epochs,
                "seeds": seeds,
                "tuned": tuned,
                "baseline_mse": baseline,
                "main": main_rows,
                "per_seed": per_seed,
                "ablation": ablation_rows,
            },
            indent=1,
        )
    )
    # the same learning rule as an experiment run, with the devices in the loop
    print("\nexperiment run (mixed precision on the devices of one chip):")
    quick = {"train": {"epochs": 2}} if args.quick else {}
    _, _, line = run_example("eprop_pattern", backend=args.backend, db=args.db, **quick)
    print(line, flush=True)
    print(
        f"plot: {args.out / 'eprop_pcm_loss.png'}; wall time {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
