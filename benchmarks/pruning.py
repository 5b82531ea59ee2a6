"""Edge pruning of random RRAM weights vs weight programming (``docs/algorithms.md#pruning``).

Per task, on the simulator with the stochastic-forming RRAM model (3 % read noise):
the pruned random network (edge-popup on formed weights, deployed by RESET pulses and
scored from a fresh readout of the array), with and without switch limiting; the same
architecture trained in float and programmed with 15 % / 30 % relative write noise plus
3 % read noise; the random network with only its readout trained; and ideal float.
Programming operations = mask flips during training (each a SET or RESET).

    python benchmarks/pruning.py [--quick] [--out benchmarks/out/pruning]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from experiment_runs import add_run_options, run_example  # benchmarks/experiment_runs.py

from memhil.algorithms.metrics import prediction_summary
from memhil.algorithms.pruning.edge_popup import (
    FloatWeight,
    ProgrammedWeight,
    ThresholdSchedule,
    TrainConfig,
    backend_shape_for,
    deploy_masks,
    draw_hardware_weights,
    load_deployed,
    masks_of,
    read_magnitudes,
    set_read_index,
    train,
)
from memhil.algorithms.pruning.models import MLP, ConvRNN, DigitCNN, UNet, layer_shapes
from memhil.backends.sim import SimBackend
from memhil.datasets import digit_images, digits, japanese_vowels, standardize, vessels

READ_NOISE_REL = 0.03
WRITE_NOISES = ((0.15, "target"), (0.30, "target"), (0.15, "window"))
N_READS = 16


@dataclass
class Task:
    name: str
    build: Callable
    data: object
    val: object
    metrics: tuple[str, ...]
    epochs: int
    batch_size: int
    seq: bool = False


def _tasks(quick: bool, seed: int) -> list[Task]:
    def split(d):
        return d.with_validation(0.2, seed)

    dg, dg_val = split(digits(seed=seed))
    di, di_val = split(digit_images(seed=seed))
    jv, jv_val = split(standardize(japanese_vowels()))
    n_tr, n_te, size = (24, 8, 32) if quick else (160, 48, 32)
    vs = vessels(n_train=n_tr + n_tr // 4, n_test=n_te, size=size, seed=seed)
    vs_train = type(vs.train)(vs.train.x[:n_tr], vs.train.y[:n_tr])
    vs_val = type(vs.train)(vs.train.x[n_tr:], vs.train.y[n_tr:])
    vs = type(vs)(vs.name, vs_train, vs.test, 2)
    e = (lambda full: 3) if quick else (lambda full: full)
    return [
        Task(
            "digits MLP 64-128-10",
            lambda f: MLP(f, (64, 128, 10), bits=4),
            dg,
            dg_val,
            ("accuracy",),
            e(40),
            60,
        ),
        Task("digits CNN", lambda f: DigitCNN(f, bits=4), di, di_val, ("accuracy",), e(30), 60),
        Task(
            "JapaneseVowels CRNN",
            lambda f: ConvRNN(f, bits=3),
            jv,
            jv_val,
            ("accuracy",),
            e(40),
            30,
            seq=True,
        ),
        Task(
            f"vessels U-Net {size}x{size}",
            lambda f: UNet(f, base=16, depth=2, bits=6),
            vs,
            vs_val,
            ("PR-AUC", "ROC-AUC"),
            e(25),
            8,
        ),
    ]


# -- scoring --------------------------------------------------------------------------------
def _forward(model, x, lengths=None):
    return model(x, lengths=lengths) if lengths is not None else model(x)


def _scores(task: Task, model, split, read_indices=(0,)) -> dict[str, float]:
    """Metrics averaged over readouts ``read_indices`` (eval mode)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    model.eval()
    out: dict[str, list[float]] = {m: [] for m in task.metrics}
    with torch.no_grad():
        for r in read_indices:
            set_read_index(model, r)
            z = _forward(model, split.x, split.lengths if task.seq else None)
            if "accuracy" in task.metrics:
                out["accuracy"].append(float((z.argmax(-1) == split.y).float().mean()))
                # a (near-)constant predictor: one class takes >= 90 % of the predictions
                summary = prediction_summary(z.argmax(-1), z.shape[-1], split.y)
                out.setdefault("collapsed", []).append(float(summary.collapsed))
            else:
                p = F.softmax(z, 1)[:, 1].flatten().numpy()
                y = split.y.flatten().numpy()
                out["PR-AUC"].append(float(average_precision_score(y, p)))
                out["ROC-AUC"].append(float(roc_auc_score(y, p)))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _fit(task: Task, model, cfg: TrainConfig):
    data = task.data
    lengths = data.train.lengths if task.seq else None
    extra = (lambda idx: {"lengths": lengths[idx]}) if lengths is not None else None
    return train(
        model,
        data.train.x,
        data.train.y,
        F.cross_entropy,
        cfg,
        validate=lambda m: _scores(task, m, task.val)[task.metrics[0]],
        extra_inputs=extra,
    )


def _backend(shape, seed: int) -> SimBackend:
    t, r, c = shape
    return SimBackend(
        {
            "tiles": t,
            "rows": r,
            "cols": c,
            "device": "rram_forming",
            "seed": seed,
            "read": {"read_noise_rel": READ_NOISE_REL},
        }
    )


# -- one task -------------------------------------------------------------------------------
def run_task(task: Task, seed: int) -> dict:
    shapes = [s for _, s, _ in layer_shapes(task.build)]
    bshape = backend_shape_for(shapes)
    cfg = {"epochs": task.epochs, "batch_size": task.batch_size, "seed": seed}
    res: dict = {
        "task": task.name,
        "metrics": task.metrics,
        "weights": sum(a * b for a, b in shapes),
    }

    variants = (
        ("pruned_sl", ThresholdSchedule()),
        ("pruned_sl5", ThresholdSchedule(0.05, 0.035)),
        ("pruned", None),
    )
    for tag, limit in variants:
        backend = _backend(bshape, seed)  # same seed: the same formed array for both runs
        hw = draw_hardware_weights(backend, shapes, sign_seed=seed, n_reads=N_READS)
        net = task.build(hw.masked_factory(seed=seed))
        t0 = time.time()
        tr = _fit(task, net, TrainConfig(switch_limit=limit, **cfg))
        res[f"{tag}_train_s"] = time.time() - t0
        res[f"{tag}_flips"] = tr.flips
        res[f"{tag}_flips_per_epoch"] = tr.flips_per_epoch
        res[f"{tag}_simulated"] = _scores(task, net, task.data.test, range(3))
        ones = [torch.ones_like(s) for s in hw.signs]
        dep = deploy_masks(backend, hw.mappings, hw.signs, ones, masks_of(net))
        res[f"{tag}_deploy_resets"] = dep.n_reset
        load_deployed(net, read_magnitudes(backend, hw.mappings, hw.signs, 3))
        res[tag] = _scores(task, net, task.data.test, range(3))
        if tag == "pruned":
            ro = task.build(hw.readout_only_factory(seed=seed))
            _fit(task, ro, TrainConfig(**cfg))
            res["readout_only"] = _scores(task, ro, task.data.test, range(3))

    ideal = task.build(lambda n, s, g: FloatWeight(s, gain=g, seed=seed))
    _fit(task, ideal, TrainConfig(**cfg))
    res["ideal"] = _scores(task, ideal, task.data.test)
    for p, ref in WRITE_NOISES:
        runs = []
        for k in range(3):  # three programming draws
            noisy = copy.deepcopy(ideal)
            for layer in noisy.modules():
                src = getattr(layer, "source", None)
                if isinstance(src, FloatWeight):
                    layer.source = ProgrammedWeight(
                        src.weight(),
                        write_noise_rel=p,
                        noise_reference=ref,
                        read_noise_rel=READ_NOISE_REL,
                        seed=seed * 31 + k,
                    )
            runs.append(_scores(task, noisy, task.data.test))
        key = f"noisy_{round(p * 100)}" + ("" if ref == "target" else "_window")
        res[key] = {m: sum(r[m] for r in runs) / len(runs) for m in runs[0]}
    return res


# -- report ---------------------------------------------------------------------------------
COLUMNS = [
    ("pruned_sl", "pruned+SL"),
    ("pruned_sl5", "+SLx5"),
    ("pruned", "pruned"),
    ("noisy_15", "noisy15%"),
    ("noisy_30", "noisy30%"),
    ("noisy_15_window", "n15%win"),
    ("readout_only", "readout"),
    ("ideal", "ideal"),
]


def table(results: list[dict]) -> str:
    head = (
        f"{'task':<26}{'metric':<9}"
        + "".join(f"{c:>10}" for _, c in COLUMNS)
        + f"{'ops SL':>8}{'SLx5':>7}{'noSL':>7}{'ratio':>6}{'x5':>6}{'deployRST':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        for i, m in enumerate(r["metrics"]):
            # "c": a collapsed run (one class takes >= 90 % of the test predictions)
            row = f"{r['task'] if i == 0 else '':<26}{m:<9}" + "".join(
                f"{100 * r[k][m]:>9.1f}{'c' if r[k].get('collapsed') else ' '}" for k, _ in COLUMNS
            )
            if i == 0:
                ops = [r[f"{k}_flips"] for k in ("pruned_sl", "pruned_sl5", "pruned")]
                row += (
                    f"{ops[0]:>8}{ops[1]:>7}{ops[2]:>7}{ops[2] / max(ops[0], 1):>6.1f}"
                    f"{ops[2] / max(ops[1], 1):>6.1f}{r['pruned_sl_deploy_resets']:>10}"
                )
            lines.append(row)
    return "\n".join(lines)


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4 * len(results), 7), squeeze=False)
    for j, r in enumerate(results):
        m = r["metrics"][0]
        ax = axes[0, j]
        ax.bar([c for _, c in COLUMNS], [100 * r[k][m] for k, _ in COLUMNS], color="tab:blue")
        ax.set_title(r["task"], fontsize=9)
        ax.set_ylabel(f"{m} (%)")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax = axes[1, j]
        ax.plot(r["pruned_flips_per_epoch"], label="no switch limit")
        ax.plot(r["pruned_sl_flips_per_epoch"], label="switch limit 1 %")
        ax.plot(r["pruned_sl5_flips_per_epoch"], label="switch limit 5 %")
        ax.set_yscale("symlog")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mask flips (programming ops)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pruning.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 epochs, tiny vessel set (smoke run)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/pruning"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default="all", help="comma-separated task indices (0-3) or 'all'")
    add_run_options(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks = _tasks(args.quick, args.seed)
    if args.tasks != "all":
        tasks = [tasks[int(i)] for i in args.tasks.split(",")]
    results = []
    for task in tasks:
        t = time.time()
        results.append(run_task(task, args.seed))
        print(f"[{task.name}: {time.time() - t:.0f} s]", flush=True)
    print()
    print(table(results))
    print(
        f"\nread noise {100 * READ_NOISE_REL:.0f} %; noisyP% = float weights programmed with P % "
        "relative write noise (n15%win: sigma = 15 % of the 1-40 uS window); "
        "SL = switch limiting, threshold 1 % -> 0.7 % (paper), SLx5 = "
        "5 % -> 3.5 %;\nops = mask flips during training (SET/RESET events), ratio = noSL/SL "
        f"ops; deployRST = RESET pulses of the final deployment; c = collapsed (one class takes "
        f">= 90 % of the test predictions); wall {time.time() - t0:.0f} s"
    )
    print("\nexperiment run (fresh readouts and mask flips on the devices of one chip):")
    quick = {"train": {"epochs": 1}} if args.quick else {}
    _, _, line = run_example("pruning_digits", backend=args.backend, db=args.db, **quick)
    print(line, flush=True)
    (args.out / "pruning.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out)


if __name__ == "__main__":
    main()
