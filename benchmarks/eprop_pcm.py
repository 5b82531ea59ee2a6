"""e-prop on PCM crossbars: loss curves of the six update variants on the pattern task.

A 100-input, 100-neuron LIF network learns srnn-pcm's pattern-generation task (3 training
sequences of 1 s at 1 ms, batch 1, one device write per sequence, 38.6 s of device time
between writes) with its three weight matrices on differential Nandakumar-PCM pairs of the
simulator. Variants (``memhil.algorithms.eprop.VARIANTS``): float e-prop (no device
writes), ideal device (4-bit perf-mode PCM + accumulation), sign (gradient threshold 0.9),
stochastic, multi-memristor (N = 4 pairs, refresh at 9 µS), mixed precision. Then an
ablation: the device schemes with PCM drift off and with PCM noise off. Prints the loss
table, the loss curves and the pulse counts; writes a PNG plot and a JSON of the curves.

    python benchmarks/eprop_pcm.py            # full run (60 epochs = 180 updates per arm;
                                              # ablation arms 30 epochs): 10 min wall on a
                                              # shared 2-core box (3.8 min CPU)
    python benchmarks/eprop_pcm.py --quick    # smoke run (< 1 min)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from memhil.algorithms.eprop import VARIANTS, EpropConfig, build_variant
from memhil.datasets import pattern_generation

ABLATION_SCHEMES = ("mixed_precision", "sign", "stochastic", "multi")
ABLATION_MODES = ("no_drift", "no_noise")


def train_arm(variant: str, config: EpropConfig, task, epochs: int, seed: int,
              device_mode: str | None = None) -> dict:
    """Train one arm; the curve holds the mean training MSE (measured before each update)
    per epoch."""
    t0 = time.perf_counter()
    # per-sample read noise: the same Gaussian per read as per-read noise for batch-1
    # steps, without drawing a whole-tile realization every time step (2x faster)
    net = build_variant(variant, config, seed=seed, device_mode=device_mode,
                        read={"noise_mode": "per_sample"})
    x, y = task.train.x, task.train.y
    curve = []
    for _ in range(epochs):
        losses = [net.train_step(x[i:i + 1], y[i:i + 1]) for i in range(len(x))]
        curve.append(sum(losses) / len(losses))
    record, _ = net.forward(x)
    tally = net.training_pulses()
    tail = curve[-min(5, len(curve)):]
    return {"variant": variant, "device": device_mode or VARIANTS[variant].device,
            "curve": curve, "final": sum(tail) / len(tail), "best": min(curve),
            "rate_hz": float(record.z.mean()) / config.lif.dt_s,
            "set_pulses": tally.set_pulses, "reset_pulses": tally.reset_pulses,
            "refreshes": tally.refreshes, "clock_s": net.backend.clock.now(),
            "seconds": time.perf_counter() - t0}


def prefix(row: dict, epochs: int) -> dict:
    """The first ``epochs`` of a run: training is deterministic for a seed, so this is what
    a run of ``epochs`` would give (pulse counts are not split by epoch: shown as -)."""
    curve = row["curve"][:epochs]
    tail = curve[-min(5, len(curve)):]
    return {**row, "curve": curve, "final": sum(tail) / len(tail), "best": min(curve),
            "rate_hz": float("nan"), "set_pulses": None, "reset_pulses": None,
            "refreshes": None, "seconds": float("nan")}


def _count(n) -> str:
    return "-" if n is None else str(n)


def print_table(title: str, rows: list[dict], reference: float) -> None:
    print(f"\n{title}")
    print(f"{'variant':<16} {'PCM mode':<11} {'final MSE':>9} {'x float':>7} {'best':>7} "
          f"{'rate Hz':>7} {'SET pulses':>10} {'RESETs':>7} {'refresh':>7} {'wall s':>6}")
    for r in rows:
        print(f"{r['variant']:<16} {r['device']:<11} {r['final']:9.4f} {r['final'] / reference:7.2f} "
              f"{r['best']:7.4f} {r['rate_hz']:7.1f} {_count(r['set_pulses']):>10} "
              f"{_count(r['reset_pulses']):>7} {_count(r['refreshes']):>7} {r['seconds']:6.1f}")


def print_curves(rows: list[dict], every: int) -> None:
    names = [r["variant"] if r["device"] in ("nandakumar", "ideal") else
             f"{r['variant']}/{r['device']}" for r in rows]
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

    fig, axes = plt.subplots(1, 2 if ablation else 1, figsize=(12 if ablation else 6, 4.5),
                             squeeze=False)
    colors = {name: f"C{i}" for i, name in enumerate(VARIANTS)}
    low = 0.8 * min(min(r["curve"]) for r in main + ablation)
    ax = axes[0, 0]
    for r in main:
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], color=colors[r["variant"]],
                label=r["variant"])
    ax.axhline(baseline, color="gray", ls=":", label="zero output")
    ax.set(xlabel="epoch (3 sequences)", ylabel="training MSE (clipped at 10)", yscale="log",
           title="e-prop on PCM: update schemes", ylim=(low, 10.0))
    ax.legend(fontsize=8)
    if ablation:
        ax = axes[0, 1]
        for r in ablation:
            ls = {"nandakumar": "-", "no_drift": "--", "no_noise": ":"}[r["device"]]
            ax.plot(range(1, len(r["curve"]) + 1), r["curve"], ls=ls,
                    color=colors[r["variant"]], label=f"{r['variant']} ({r['device']})")
        ax.set(xlabel="epoch", ylabel="training MSE (clipped at 10)", yscale="log",
               title="ablation: drift off (--), noise off (:)", ylim=(low, 10.0))
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 neurons, 3 epochs, no ablation")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--ablation-epochs", type=int, default=30,
                    help="epochs of each ablation arm (compared with the same epochs of the main run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/eprop_pcm"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    config = EpropConfig(seed=args.seed)
    epochs = args.epochs
    task = pattern_generation(seed=args.seed)
    if args.quick:
        config = EpropConfig(n_in=30, n_rec=30, seed=args.seed)
        task = pattern_generation(n_in=30, steps=300, seed=args.seed)
        epochs = 3
    baseline = float((task.train.y ** 2).mean())
    print(f"e-prop pattern task: {config.n_in} inputs, {config.n_rec} LIF neurons, "
          f"{task.seq_len} steps, {len(task.train.x)} training sequences, {epochs} epochs "
          f"({epochs * len(task.train.x)} updates, {config.wait_s} s device time apart); "
          f"zero-output MSE {baseline:.4f}")

    main_rows = []
    for name in VARIANTS:
        main_rows.append(train_arm(name, config, task, epochs, args.seed))
        r = main_rows[-1]
        print(f"  {name:<16} final MSE {r['final']:.4f}  ({r['seconds']:.1f} s)", flush=True)
    ref = main_rows[0]["final"]
    print_table("six variants (Nandakumar PCM; ideal_device = perf mode)", main_rows, ref)

    ablation_rows: list[dict] = []
    if not (args.quick or args.no_ablation):
        by_name = {r["variant"]: r for r in main_rows}
        n_abl = min(args.ablation_epochs, epochs)
        for name in ABLATION_SCHEMES:
            ablation_rows.append(prefix(by_name[name], n_abl))
            for mode in ABLATION_MODES:
                ablation_rows.append(train_arm(name, config, task, n_abl, args.seed, mode))
                r = ablation_rows[-1]
                print(f"  {name}/{mode:<10} final MSE {r['final']:.4f}  ({r['seconds']:.1f} s)",
                      flush=True)
        print_table(f"ablation: PCM drift off / noise off ({n_abl} epochs; the nandakumar rows "
                    f"are the main runs' first {n_abl} epochs; x float = vs float e-prop's "
                    f"final MSE after {epochs} epochs)", ablation_rows, ref)

    print_curves(main_rows, every=max(1, epochs // 10))
    mixed = next(r for r in main_rows if r["variant"] == "mixed_precision")
    print(f"\nmixed precision / float e-prop final MSE: {mixed['final'] / ref:.2f} "
          f"(expected <= 1.5)")
    for name in ("sign", "stochastic", "multi"):
        r = next(r for r in main_rows if r["variant"] == name)
        print(f"{name} / mixed precision final MSE: {r['final'] / mixed['final']:.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    plot(main_rows, ablation_rows, args.out / "eprop_pcm_loss.png", baseline)
    (args.out / "eprop_pcm.json").write_text(json.dumps(
        {"epochs": epochs, "baseline_mse": baseline, "main": main_rows, "ablation": ablation_rows},
        indent=1))
    print(f"plot: {args.out / 'eprop_pcm_loss.png'}; wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
