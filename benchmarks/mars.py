"""MARS vs MF-ESN, leaky ESN and a gradient-trained LRU: accuracy and training time, one run.

For each dataset (JapaneseVowels T <= 29, sequential digits T = 64, ACSF1 T = 1460), on the
same standardised data and the same validation split (20 % of train, stratified, seed 0):
* ESN, MF-ESN: N = 100, sequential loop over time (vectorised over the batch), last-state
  ridge readout as published (plus an MF-ESN row with the MARS pooling, for fairness);
* MARS: N = 100 units per layer, depth 1 and 3, subtractive skip none / input / temporal /
  equilibrium, mean+last pooling of all layers, ridge readout. Depth 1 is timed with each
  evaluation of the recurrence (parallel scan, chunked scan, sequential loop: identical
  states); deeper stacks use the fastest of the three on this machine;
* LRU: ``LRUClassifier`` trained with Adam (lr 2e-3, batch 32), epoch chosen on validation.
Training time = reservoir states of train + validation + ridge fit with λ chosen on the
validation grid (then refit on train + validation); for the LRU, wall time of the epochs
up to the selected one (evaluation excluded). Accuracies are on the test split.
``torch.set_num_threads(1)``: single-thread CPU timings. Then: the skip ablation (mean
accuracy per skip), a speed sweep of the states alone (MF-ESN loop vs MARS by batch size
and T: the parallel form pays off when the loop is overhead-bound, i.e. small batches and
long T), and the accuracy lost when W_in and the readout run in memory (simulator with
NeuroSim and PCM devices, mock-lab array board). Full run: about 5 min on a loaded
2-core machine.

Run: ``python benchmarks/mars.py`` (``--quick`` for a < 1 min smoke run); writes
``results.json`` and ``mars.png`` under ``--out``. The deployment rows are MARS
experiments (``algorithm: mars``) run through the experiment runner: ``--db runs.db``
keeps each as a run (``memhil runs show ID``), ``--backend mock_lab=STATION.yaml`` (or
``station=BENCH.yaml``, ``sim``) runs that row on another backend.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from experiment_runs import (  # benchmarks/experiment_runs.py (scripts run from this folder)
    add_run_options,
    backend_label,
    run_example,
    run_experiment,
)

from memhil.algorithms.mars.layer import MARS, SKIPS
from memhil.algorithms.mars.readout import fit_ridge
from memhil.algorithms.mars.reservoirs import MFESN, LeakyESN
from memhil.datasets import (
    ClassificationData,
    Split,
    acsf1,
    japanese_vowels,
    sequential_digits,
    standardize,
)
from memhil.nn.lru import LRUClassifier

MARS_KW = {"n_units": 100, "dt": (0.001, 0.09), "input_scale": 1.0, "p": 5.0, "gamma": 1.0}


@dataclass
class Row:
    dataset: str
    model: str
    accuracy: float
    train_s: float
    note: str = ""
    val_accuracy: float = float("nan")  # at the chosen λ: what model choices are made on


def _subset(split: Split, n: int | None) -> Split:
    if n is None or n >= len(split):
        return split
    return split.subset(torch.arange(0, len(split), max(1, len(split) // n))[:n])


def fit_reservoir(
    name: str,
    data: ClassificationData,
    val: Split,
    features: Callable[[Split], torch.Tensor],
    note: str = "",
) -> Row:
    """Time states (train + val) and the ridge fit; score on the test split."""
    t0 = time.perf_counter()
    f_tr, f_va = features(data.train), features(val)
    readout = fit_ridge(f_tr, data.train.y, data.n_classes, val_features=f_va, val_labels=val.y)
    train_s = time.perf_counter() - t0
    acc = readout.accuracy(features(data.test), data.test.y)
    val_acc = readout.val_accuracy[readout.lam]
    return Row(data.name, name, acc, train_s, note or f"λ={readout.lam:g}", val_acc)


def train_lru(
    data: ClassificationData,
    val: Split,
    epochs: int,
    *,
    d_model: int,
    d_state: int,
    lr: float = 2e-3,
    batch: int = 32,
    seed: int = 0,
) -> tuple[Row, list]:
    """Adam on the LRU classifier; returns the row (epoch picked on validation) and the
    curve [(cumulative train s, val acc, test acc)] per epoch."""
    torch.manual_seed(seed)
    model = LRUClassifier(
        data.n_features, data.n_classes, d_model=d_model, d_state=d_state, depth=2, seed=seed
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    tr = data.train
    elapsed, curve = 0.0, []

    def accuracy(split: Split) -> float:
        model.eval()
        with torch.no_grad():
            pred = torch.cat(
                [
                    model(
                        split.x[i : i + 256],
                        None if split.lengths is None else split.lengths[i : i + 256],
                    ).argmax(-1)
                    for i in range(0, len(split), 256)
                ]
            )
        model.train()
        return float((pred == split.y).double().mean())

    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(tr), batch):
            idx = order[i : i + batch]
            lengths = None if tr.lengths is None else tr.lengths[idx]
            loss = torch.nn.functional.cross_entropy(model(tr.x[idx], lengths), tr.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        elapsed += time.perf_counter() - t0
        curve.append((elapsed, accuracy(val), accuracy(data.test)))
    best = max(range(len(curve)), key=lambda k: (curve[k][1], -k))
    row = Row(
        data.name,
        "LRU (Adam)",
        curve[best][2],
        curve[best][0],
        f"epoch {best + 1}/{epochs}, d={d_model}",
    )
    return row, curve


def run_dataset(
    data: ClassificationData,
    *,
    lru_epochs: int,
    lru_dims: tuple[int, int],
    depth: int,
    methods: tuple[str, ...],
) -> tuple[list[Row], list, str]:
    data = standardize(data)
    data, val = data.with_validation(0.2, seed=0)
    d = data.n_features
    rows: list[Row] = []
    esn = LeakyESN(d, 100, rho=0.9, input_scale=0.5, leak=0.5, seed=0)
    rows.append(fit_reservoir("ESN (leaky)", data, val, lambda s: esn.features(s.x, s.lengths)))
    mf = MFESN(d, 100, rho=0.9, input_scale=1.0, dt=0.01, gamma=1.0, p=5.0, seed=0)
    rows.append(fit_reservoir("MF-ESN", data, val, lambda s: mf.features(s.x, s.lengths)))
    rows.append(
        fit_reservoir(
            "MF-ESN mean+last", data, val, lambda s: mf.features(s.x, s.lengths, pool="mean_last")
        )
    )
    mars1 = MARS(d, depth=1, seed=0, **MARS_KW)
    timings = {}
    for method in methods:  # load the compiled kernels once per process, outside the timing
        mars1.features(data.train.x[:1], None, method=method)
    for method in methods:
        row = fit_reservoir(
            f"MARS d1 [{method}]",
            data,
            val,
            lambda s, m=method: mars1.features(s.x, s.lengths, method=m),
        )
        rows.append(row)
        timings[method] = row.train_s
    fastest = min(timings, key=timings.get)
    for skip in SKIPS:
        deep = MARS(d, depth=depth, skip=skip, seed=0, **MARS_KW)
        rows.append(
            fit_reservoir(
                f"MARS d{depth} skip={skip}",
                data,
                val,
                lambda s, m=deep: m.features(s.x, s.lengths, method=fastest),
                note=f"[{fastest}]",
            )
        )
    lru_row, curve = train_lru(data, val, lru_epochs, d_model=lru_dims[0], d_state=lru_dims[1])
    rows.append(lru_row)
    return rows, curve, fastest


def ratios(rows: list[Row], curve: list) -> list[str]:
    by = {r.model: r for r in rows}
    mf = by["MF-ESN"]
    lines = []
    for r in rows:
        if r.model.startswith("MARS d1 ["):
            lines.append(f"MF-ESN time / {r.model} time = {mf.train_s / r.train_s:.2f}x")
    lru = by["LRU (Adam)"]
    mars_rows = [r for r in rows if r.model.startswith("MARS")]
    reach = [r for r in mars_rows if r.accuracy >= lru.accuracy]
    if reach:
        quick = min(reach, key=lambda r: r.train_s)
        lines.append(
            f"LRU time / MARS time to reach LRU accuracy ({lru.accuracy:.3f}): "
            f"{lru.train_s:.2f}s / {quick.train_s:.2f}s ({quick.model}) = "
            f"{lru.train_s / quick.train_s:.0f}x"
        )
    else:
        best = max(mars_rows, key=lambda r: r.accuracy)
        lines.append(
            f"no MARS configuration reaches the LRU accuracy {lru.accuracy:.3f} "
            f"(best MARS {best.accuracy:.3f}, {best.model}, {best.train_s:.2f}s)"
        )
    best_mars = max(mars_rows, key=lambda r: r.accuracy)
    hit = next((t for t, _, test in curve if test >= best_mars.accuracy), None)
    lines.append(
        f"LRU time to reach the best MARS accuracy ({best_mars.accuracy:.3f}): "
        + (
            f"{hit:.2f}s = {hit / best_mars.train_s:.0f}x MARS"
            if hit is not None
            else f"not reached in {curve[-1][0]:.1f}s of training"
        )
    )
    return lines


def speed_sweep(batches: tuple[int, ...], lengths: tuple[int, ...]) -> list[str]:
    """States of N = 100 units for random univariate inputs: MF-ESN loop vs each MARS
    evaluation, best of 2 runs, by batch size and T."""
    lines = [f"{'batch':>5s} {'T':>5s} {'MF-ESN ms':>10s}   MARS d1 ms (MF-ESN/MARS)"]
    for batch in batches:
        for steps in lengths:
            x = torch.randn(batch, steps, 1, generator=torch.Generator().manual_seed(steps))
            mf, mars = MFESN(1, 100, seed=0), MARS(1, 100, 1, seed=0)
            t_mf = _best_time(lambda mf=mf, x=x: mf.features(x))
            cells = []
            for method in ("scan", "chunked", "loop"):
                t = _best_time(lambda m=method, r=mars, x=x: r.features(x, method=m))
                cells.append(f"{method} {1e3 * t:7.1f} ({t_mf / t:5.1f}x)")
            lines.append(f"{batch:5d} {steps:5d} {1e3 * t_mf:10.1f}   " + "  ".join(cells))
    return lines


def speed_table(quick: bool, clock: Callable[[], float] = time.perf_counter) -> list[str]:
    """MF-ESN time / MARS d1 time, interleaved medians in one process: the states alone
    (batch 32, univariate random input) and full training (states of train + validation
    and the ridge fit with λ chosen on validation) on ACSF1 and PLAID; test accuracies
    alongside, and the process's peak resident memory."""
    import resource

    from timing import median_times  # benchmarks/timing.py (scripts run from this folder)

    from memhil.datasets import plaid

    reps = 3 if quick else 5
    kind = "CPU" if clock is time.process_time else "wall"
    lines = [
        f"MF-ESN / MARS d1 (N = 100, default scan path), 1 thread, {kind} time, "
        "interleaved medians:"
    ]
    for steps in (1000,) if quick else (1000, 4000):
        x = torch.randn(32, steps, 1, generator=torch.Generator().manual_seed(steps))
        mf, mars = MFESN(1, 100, seed=0), MARS(1, 100, 1, seed=0)
        t = median_times(
            {"mf": lambda: mf.features(x), "mars": lambda: mars.features(x)}, reps, clock=clock
        )
        lines.append(
            f"  states, batch 32, T = {steps:4d}: MF-ESN {1e3 * t['mf']:8.1f} ms, MARS "
            f"{1e3 * t['mars']:7.1f} ms, ratio {t['mf'] / t['mars']:5.1f}x (target >= 10x)"
        )
    for name, load in (("ACSF1", acsf1), ("PLAID", plaid)):
        data = load()
        if quick:
            data = ClassificationData(
                data.name, _subset(data.train, 40), _subset(data.test, 40), data.n_classes
            )
        data, val = standardize(data).with_validation(0.2, seed=0)
        mf = MFESN(data.n_features, 100, rho=0.9, input_scale=1.0, dt=0.01, seed=0)
        mars = MARS(data.n_features, depth=1, seed=0, **MARS_KW)
        models = {
            "mf": lambda s: mf.features(s.x, s.lengths),
            "mars": lambda s: mars.features(s.x, s.lengths),
        }

        def train(feats: Callable[[Split], torch.Tensor]) -> object:
            return fit_ridge(
                feats(data.train),
                data.train.y,
                data.n_classes,
                val_features=feats(val),
                val_labels=val.y,
            )

        t = median_times(
            {k: (lambda f=f: train(f)) for k, f in models.items()}, reps, warmup=1, clock=clock
        )
        acc = {k: train(f).accuracy(f(data.test), data.test.y) for k, f in models.items()}
        lines.append(
            f"  full training, {name} (T = {data.seq_len}, {len(data.train) + len(val)} "
            f"sequences): MF-ESN {1e3 * t['mf']:6.1f} ms, MARS {1e3 * t['mars']:5.1f} ms, ratio "
            f"{t['mf'] / t['mars']:5.1f}x (target >= 10x); test accuracy MF-ESN "
            f"{acc['mf']:.3f}, MARS {acc['mars']:.3f}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(f"  peak resident memory of this process: {peak:.0f} MiB")
    return lines


def _best_time(fn: Callable[[], object], repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def deployment(n_units: int, backend=None, db: str | None = None) -> list[str]:
    """Accuracy lost when W_in and the readout run in memory (JapaneseVowels, MARS d1): the
    MARS experiment (``algorithm: mars``) through the experiment runner, each row a run in
    the store ``db``. Default rows: the simulator with NeuroSim and PCM devices (W_in and
    the readout deployed) and the mock lab's array board (readout only). With ``backend``:
    the shipped ``examples/experiments/mars_vowels.yaml`` (three speakers, readout only,
    sized and pulsed for the 8 x 8 VTEAM chip of ``examples/mock_station.yaml``) on it."""
    if backend is not None:
        return [run_example("mars_vowels", backend=backend, db=db)[2]]
    rows = 2 * n_units + 16
    mock_station = {
        "name": "mars-bench",
        "chip": {"rows": rows, "cols": 2 * 9 + 2, "device": "neurosim"},
        "limits": {
            "v_pulse_max_v": 3.0,
            "v_read_max_v": 0.5,
            "width_min_s": 1e-9,
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-3,
        },
        "instruments": {"board": {"type": "memhil_array_board", "address": "memhilboard://mars"}},
        "wiring": {},
        "mock": {"device": {"model": "neurosim"}, "read": {"read_noise_rel": 0.01}, "seed": 11},
    }
    read = {"read_noise_rel": 0.01, "dac_bits": 8, "adc_bits": 10}
    neurosim = {"set_pulse": [2.0, 80e-9], "reset_pulse": [-2.0, 80e-9], "v_read": 0.2}
    pcm = {"set_pulse": [1.0, 100e-9], "reset_pulse": [-2.5, 50e-9], "v_read": 0.2}

    def sim(device: str) -> dict:
        return {
            "sim": {
                "tiles": 2,
                "rows": rows,
                "cols": rows,
                "seed": 1,
                "device": device,
                "read": read,
            }
        }

    with tempfile.TemporaryDirectory() as tmp:
        station_path = Path(tmp) / "mars_bench_station.yaml"
        station_path.write_text(yaml.safe_dump(mock_station))
        targets = [
            (sim("neurosim"), {**neurosim, "projections": True}),
            (sim("pcm"), {**pcm, "projections": True}),
            ({"mock_lab": str(station_path)}, {**neurosim, "projections": False}),
        ]
        lines: list[str] = []
        for target, deploy in targets:
            spec = {
                "algorithm": "mars",
                "dataset": {"name": "japanese_vowels", "standardize": True},
                "model": {"n_units": n_units, "depth": 1},
                "train": {"epochs": 1, "seed": 0},
                "deploy": {"tolerance_s": None, **deploy},
                "backend": target,
            }
            run_id, m = run_experiment(spec, db=db, name="mars_deployment")
            acc, float_acc = m["backend"]["accuracy"], m["float"]["accuracy"]
            if not any(line.startswith("JapaneseVowels") for line in lines):
                lines.insert(
                    0, f"JapaneseVowels, MARS d1 N={n_units}: float accuracy {float_acc:.3f}"
                )
            ro = m["backend"].get("readout_accuracy", acc)
            full = (
                f"; W_in + readout {acc:.3f} (drop {float_acc - acc:+.3f})"
                if deploy["projections"]
                else ""
            )
            lines.append(
                f"  {backend_label(target):22s} readout in memory {ro:.3f} "
                f"(drop {float_acc - ro:+.3f}){full}; within ±2 %: "
                f"{100 * m['deploy']['within_tolerance']:.0f} % of the cells (run {run_id})"
            )
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in results if isinstance(results[k], dict)]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for j, name in enumerate(names):
        rows = results[name]["rows"]
        labels = [r["model"] for r in rows]
        axes[0, j].barh(labels, [r["accuracy"] for r in rows])
        axes[0, j].set_title(f"{name}: test accuracy")
        axes[1, j].barh(labels, [r["train_s"] for r in rows])
        axes[1, j].set_xscale("log")
        axes[1, j].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[1, j].set_title("training time (s, log)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small slices, few epochs (< 1 min)")
    ap.add_argument("--out", default="benchmarks/out/mars")
    ap.add_argument("--depth", type=int, default=3)
    add_run_options(ap)
    ap.add_argument(
        "--speed", action="store_true", help="only the MF-ESN / MARS speed table (~1 min)"
    )
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the speed table in CPU seconds, not wall: steadier on a shared machine",
    )
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.speed:
        for line in speed_table(args.quick, clock):
            print(line, flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    methods = ("scan", "chunked", "loop")
    if args.quick:
        specs = [
            ("JapaneseVowels", japanese_vowels, 120, 5, (16, 16)),
            ("seq-digits", sequential_digits, 200, 3, (16, 16)),
            ("ACSF1", acsf1, 30, 1, (16, 16)),
        ]
    else:
        specs = [
            ("JapaneseVowels", japanese_vowels, None, 40, (64, 64)),
            ("seq-digits", sequential_digits, None, 15, (64, 64)),
            ("ACSF1", acsf1, None, 25, (32, 32)),
        ]
    results = {}
    header = f"{'dataset':15s} {'model':26s} {'acc':>6s} {'train s':>9s}  note"
    print(header)
    print("-" * len(header))
    for name, load, n_max, epochs, dims in specs:
        data = load()
        data = ClassificationData(
            data.name, _subset(data.train, n_max), _subset(data.test, n_max), data.n_classes
        )
        rows, curve, fastest = run_dataset(
            data, lru_epochs=epochs, lru_dims=dims, depth=args.depth, methods=methods
        )
        for r in rows:
            print(
                f"{name:15s} {r.model:26s} {r.accuracy:6.3f} {r.train_s:9.3f}  {r.note}", flush=True
            )
        extra = ratios(rows, curve)
        for line in extra:
            print(f"{'':15s} {line}")
        print()
        results[name] = {
            "T": data.seq_len,
            "n_train": len(data.train),
            "fastest": fastest,
            "rows": [r.__dict__ for r in rows],
            "ratios": extra,
            "lru_curve": curve,
        }
    seq_sets = [k for k in results]
    mean_val, mean_test = {}, {}
    for skip in SKIPS:
        rows = [
            r
            for k in seq_sets
            for r in results[k]["rows"]
            if r["model"] == f"MARS d{args.depth} skip={skip}"
        ]
        mean_val[skip] = sum(r["val_accuracy"] for r in rows) / len(rows)
        mean_test[skip] = sum(r["accuracy"] for r in rows) / len(rows)
    ablation = (
        f"skip ablation at depth {args.depth} over {len(seq_sets)} sets, mean validation "
        "accuracy (the choice) / test accuracy (reported only): "
        + ", ".join(f"{k} {mean_val[k]:.3f} / {mean_test[k]:.3f}" for k in SKIPS)
        + f"; best on validation: {max(mean_val, key=mean_val.get)} (library default: temporal)"
    )
    print(ablation)
    print()
    results["skip_ablation"] = ablation
    speed = speed_table(args.quick, clock)
    for line in speed:
        print(line, flush=True)
    results["speed_table"] = speed
    print()
    print("Speed of the states alone vs batch size and T (random inputs):")
    sweep = speed_sweep(
        (1, 8) if args.quick else (1, 32), (100, 1000) if args.quick else (100, 1000, 4000)
    )
    for line in sweep:
        print(line, flush=True)
    results["speed_sweep"] = sweep
    print()
    print("In-memory deployment (program-and-verify to ±2 % of the window):")
    dep_lines = deployment(16 if args.quick else 32, args.backend, args.db)
    for line in dep_lines:
        print(line, flush=True)
    results["deployment"] = dep_lines
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "mars.png")
    print(f"wall time {time.perf_counter() - t_start:.1f} s; wrote {out}/results.json, mars.png")


if __name__ == "__main__":
    main()
