"""Edge pruning of random RRAM weights vs programmed weights, from stored sweep runs
(``docs/algorithms.md#pruning``; Li et al., arXiv 2311.07164).

Per task, sweep files of ``examples/sweeps/`` run into a run store:

* ``pruning_<task>_pruned``: the network's weights formed at random on a simulated
  stochastic-forming RRAM chip, edge-popup with fresh readouts and every mask flip
  programmed on the chip, tested by mvm on the chip;
* ``pruning_<task>_programmed``: the same network trained in float, then programmed by
  program-and-verify on a simulated PCM chip (its residual error is the write noise:
  no assumed percentage) or with an assumed write noise (15 %, 30 % of the target, 15 % of
  the window) and 3 % read noise in software; ``ideal`` is the float network;
* with ``--ablation``: ``pruning_<task>_switch_limit`` (the switch-limit thresholds 5x
  stricter, and off, with the mask flips each costs) and ``pruning_<task>_readout`` (the
  random layers kept, only the readout trained).

Tasks: ``digits`` and ``mnist1d`` (MLPs; the default), and ``digits_cnn`` (CNN on 8 x 8
digit images), ``vowels_crnn`` (CRNN on JapaneseVowels) and ``vessels_unet`` (U-Net on the
generated vessel task, scored by PR-AUC); ``--full`` runs all five with the ablation.

The table is built from the stored runs only (:func:`pruning_table`): the metric's mean ±
sd over the seeds, ``c`` where a run collapsed (>= 90 % of its test predictions in one
class, ``memhil.algorithms.metrics``), the budget, the gap pruned - program-verify, the
mask flips of the ablation, and what doubling the budget changed where a task was run at
E and 2E epochs (``--set train.epochs=E``, one store).

    python benchmarks/pruning.py [--tasks digits,mnist1d] [--ablation] [--out DIR] [--db PATH] [--quick]
    python benchmarks/pruning.py --full                                 # every network and the ablation
    python benchmarks/pruning.py --tasks digits --set train.epochs=40   # another budget, same store
    python benchmarks/pruning.py --sweep-file MY_SWEEP.yaml [...]  # your own sweeps
    python benchmarks/pruning.py --from-db PATH --sweep ID [--sweep ID ...]  # reprint
    python benchmarks/pruning.py --backend mock_lab=examples/mock_station.yaml  # other chip

Cost, trials one at a time (``--num-cpus N``: on Ray), per task 5 pruned + 20 programmed
trials (5 with ``--set deploy.write_noise=null``), CPU time with imports, one torch thread
on a shared 2-core machine (load 2-3.6): digits 27 s at 20 epochs; MNIST-1D 70 s at 20,
211 s at 80; with ``deploy.write_noise=null``: MNIST-1D 269 s at 160 epochs, CRNN 33 s at
20 and 78 s at 80, U-Net 170 s at 20 and 488 s at 80, CNN 66 s at 20; the wall time was
1.0-2.4x the CPU time. ``--quick`` (2 seeds, 1 epoch, hidden 16, 500 MNIST-1D signals):
82 s CPU (an earlier measurement).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from experiment_runs import add_run_options  # benchmarks/experiment_runs.py

from memhil.core.errors import ConfigError, LimitError
from memhil.store import RunStore
from memhil.sweeps import run_sweep
from memhil.sweeps.results import sweep_definition, sweep_table, trial_runs

SWEEPS = Path(__file__).resolve().parents[1] / "examples" / "sweeps"
#: Tasks the default run measures (MLPs), and the other networks of the old study (opt-in).
TASKS = ("digits", "mnist1d")
NETWORK_TASKS = ("digits_cnn", "vowels_crnn", "vessels_unet")
METRICS = ["accuracy", "accuracy_float", "collapsed", "write_error_window", "selected_epoch"]
#: Smoke-run overrides (a few seconds per trial): one epoch, small layers.
QUICK_GRID: dict[str, dict[str, list]] = {
    "digits": {"train.epochs": [1], "model.sizes": [[64, 16, 10]]},
    "mnist1d": {"train.epochs": [1], "model.sizes": [[40, 16, 10]], "dataset.n_samples": [500]},
    "digits_cnn": {"train.epochs": [1], "model.cnn": [{"channels": [8, 8], "hidden": 16}]},
    "vowels_crnn": {"train.epochs": [1], "model.crnn": [{"channels": 8, "hidden": 16}]},
    "vessels_unet": {
        "train.epochs": [1],
        "model.unet": [{"base": 4, "depth": 2}],
        "dataset.n_train": [20],
        "dataset.n_test": [8],
    },
}


def sweep_files(task: str, ablation: bool = False) -> list[Path]:
    """The sweep files of ``task``: pruned, its programmed baseline, and with
    ``ablation`` the switch-limit ablation and the readout-only baseline."""
    kinds = ["pruned", "programmed"] + (["switch_limit", "readout"] if ablation else [])
    return [SWEEPS / f"pruning_{task}_{kind}.yaml" for kind in kinds]


def derived_sweep(
    path: Path,
    tmp: Path,
    *,
    quick: str | None,
    backend: Any,
    settings: Sequence[str] = (),
) -> Path:
    """``path`` as a new sweep file in ``tmp`` (base made absolute): with ``quick`` (a
    task) the smoke-run grid and two seeds; with ``backend`` every trial on that backend
    (the file's own ``backend.*`` axes dropped); each ``KEY=VALUE`` of ``settings`` (the
    value read as YAML) set in every trial."""
    data = yaml.safe_load(path.read_text())
    data["base"] = str((path.parent / data["base"]).resolve())
    grid = dict(data.get("grid") or {})
    if quick is not None:
        grid.update(QUICK_GRID[quick])
        data["seeds"] = [0, 1]
    if backend is not None:
        grid = {k: v for k, v in grid.items() if not k.startswith("backend")}
        grid["backend"] = [backend]
    for item in settings:
        key, _, value = item.partition("=")
        grid[key] = [yaml.safe_load(value)]
    data["grid"] = grid
    out = tmp / path.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# -- the table, from the store only ------------------------------------------------------
#: Accuracy columns, in order: the pruned network (switch limit as the paper, 5x stricter,
#: off), the programmed baselines, the readout-only baseline, float.
COLUMNS = [
    "pruned",
    "SLx5",
    "noSL",
    "prog-verify",
    "noise15%",
    "noise30%",
    "noise15%win",
    "readout",
    "ideal",
]


def _variant(row: Any) -> str:
    """Column name of one point of a sweep's axes."""
    method = row.get("model.method", "pruned")
    if method == "readout_only":
        return "readout"
    if method != "programmed":
        scale = float(row.get("train.switch_limit_scale", 1.0))
        if row.get("train.switch_limit") is False or scale == 0:
            return "noSL"
        return "pruned" if scale == 1 else f"SLx{scale:g}"
    noise = row.get("deploy.write_noise")
    if not noise:
        return "prog-verify"
    ref = "win" if noise.get("reference") == "window" else ""
    return f"noise{round(100 * float(noise['rel']))}%{ref}"


def _cell(mean: float, sd: float, collapsed: float = 0.0) -> str:
    """``mean ± sd`` in %, ``c`` when any run of the point collapsed."""
    sd_txt = "   -" if math.isnan(sd) else f"{100 * sd:4.1f}"
    return f"{100 * mean:5.1f}±{sd_txt}{'c' if collapsed > 0 else ' '}"


def _network(model: dict[str, Any]) -> str:
    """Short name of the network of a stored ``model:`` section."""
    kind = model.get("kind", "mlp")
    if kind == "cnn":
        c = model.get("cnn") or {"channels": [32, 32], "hidden": 64}
        return "CNN " + "-".join(map(str, [*c["channels"], c["hidden"]]))
    if kind == "crnn":
        c = model.get("crnn") or {"channels": 32, "hidden": 64}
        return f"CRNN {c['channels']}-{c['hidden']}"
    if kind == "unet":
        c = model.get("unet") or {"base": 8, "depth": 2}
        return f"U-Net {c['base']}x{c['depth']}"
    return "MLP " + "-".join(str(s) for s in model["sizes"])


def _mean_flips(store: RunStore, run_ids: Any) -> float:
    """Mean over runs of the mask flips of training: the sum of each run's per-epoch
    ``flips`` (what the final ``mask_flips`` holds; runs stored before it existed have
    only the epochs)."""
    totals = []
    for rid in run_ids:
        df = store.load(int(rid))
        sel = df[(df["phase"] == "epoch") & (df["metric"] == "flips")]
        totals.append(float(sel["value"].sum()))
    return sum(totals) / len(totals) if totals else math.nan


def pruning_table(store: RunStore, sweep_ids: Sequence[int]) -> str:
    """The pruning table of sweeps ``sweep_ids`` in ``store``, from their stored runs only:
    one row per task, network and budget, one column per variant, the headline metric
    (accuracy; PR-AUC for the U-Net) mean ± sd over the completed seeds; the gap pruned -
    program-verify; the mask flips of the switch-limit ablation; for a task and network
    measured at two budgets E and 2E, what doubling the budget changed."""
    rows: dict[tuple[str, str, int], dict[str, str]] = {}
    facts: dict[tuple[str, str, int], dict[str, Any]] = {}
    for sid in sweep_ids:
        table, axes, _ = sweep_table(store, sid)
        runs = trial_runs(store, sid)
        done = runs[runs["status"] == "completed"]
        if done.empty:
            continue
        config = store.metadata(int(done["run_id"].iloc[0]))["experiment_config"]
        task = str(config["dataset"]["name"])
        train = config["train"]
        key = (task, _network(config["model"]), int(train["epochs"]))
        metric = "pr_auc" if config["model"].get("kind") == "unet" else "accuracy"
        f = facts.setdefault(key, {"batch": train["batch_size"], "seeds": set(), "metric": metric})
        f["seeds"].update(int(s) for s in done["seed"])
        row = rows.setdefault(key, {})
        for _, point in table.iterrows():
            name = _variant({a: point[a] for a in axes})
            collapsed = point.get("collapsed_mean", 0.0)
            row[name] = _cell(point[f"{metric}_mean"], point[f"{metric}_sd"], collapsed)
            f[f"{name}_mean"] = float(point[f"{metric}_mean"])
            f[f"{name}_n"] = int(point["n"])
            at = done[[all(r[a] == point[a] for a in axes) for _, r in done.iterrows()]]
            if "selected_epoch" in at and at["selected_epoch"].notna().any():
                f[f"{name}_selected"] = [
                    int(e) for e in at.sort_values("seed")["selected_epoch"].fillna(0)
                ]
            if name in ("pruned", "SLx5", "noSL"):
                f[f"{name}_flips"] = _mean_flips(store, at["run_id"])
            if name == "prog-verify":
                row["ideal"] = _cell(point[f"{metric}_float_mean"], point[f"{metric}_float_sd"])
                f["ideal_mean"] = float(point[f"{metric}_float_mean"])
                f["residual"] = float(point.get("write_error_window_mean", math.nan))
    shown = [c for c in COLUMNS if any(c in r for r in rows.values())]
    head = (
        f"{'task':<17}{'network':<15}{'ep':>3} {'metric':<9}"
        + "".join(f"{c:>13}" for c in shown)
        + f"{'gap':>8}"
    )
    lines = [head, "-" * len(head)]
    for key, row in rows.items():
        task, net, epochs = key
        f = facts[key]
        gap = f.get("pruned_mean", math.nan) - f.get("prog-verify_mean", math.nan)
        lines.append(
            f"{task:<17}{net:<15}{epochs:>3} {f['metric']:<9}"
            + "".join(f"{row.get(c, '-'):>13}" for c in shown)
            + ("       -" if math.isnan(gap) else f"{100 * gap:>+8.1f}")
        )
    flips = {k: f for k, f in facts.items() if "pruned_flips" in f or "noSL_flips" in f}
    if any("noSL_flips" in f or "SLx5_flips" in f for f in flips.values()):
        lines += [
            "",
            "mask flips during training (SET/RESET programming operations), mean over seeds",
        ]
        lines.append(
            f"{'task':<17}{'network':<15}{'ep':>3}{'SL':>10}{'SLx5':>10}{'noSL':>10}"
            f"{'noSL/SL':>9}{'noSL/SLx5':>10}"
        )
        for (task, net, epochs), f in flips.items():
            sl, x5, off = (f.get(f"{c}_flips", math.nan) for c in ("pruned", "SLx5", "noSL"))
            lines.append(
                f"{task:<17}{net:<15}{epochs:>3}{sl:>10.0f}{x5:>10.0f}{off:>10.0f}"
                f"{off / sl:>9.1f}{off / x5:>10.1f}"
            )
    doubled = [(k, (k[0], k[1], 2 * k[2])) for k in facts if (k[0], k[1], 2 * k[2]) in facts]
    for (task, net, e), k2 in doubled:
        a, b = facts[(task, net, e)], facts[k2]
        moved = {
            c: 100 * (b[f"{c}_mean"] - a[f"{c}_mean"])
            for c in COLUMNS
            if f"{c}_mean" in a and f"{c}_mean" in b
        }
        lines.append(
            f"{task} {net}: doubling the budget {e} -> {2 * e} epochs moved the means by "
            + ", ".join(f"{c} {v:+.1f}" for c, v in moved.items())
            + f" points (largest |change| {max(map(abs, moved.values()), default=math.nan):.1f})"
        )
    for (task, net, epochs), f in facts.items():
        picked = {c: f[f"{c}_selected"] for c in COLUMNS if f"{c}_selected" in f}
        if picked:
            lines.append(
                f"{task} {net} {epochs} ep: epoch of the best validation metric, tested "
                "(per seed): " + ", ".join(f"{c} {v}" for c, v in picked.items())
            )
    for (task, net, epochs), f in facts.items():
        seeds = sorted(f["seeds"])
        residual = f.get("residual", math.nan)
        verify = (
            ""
            if math.isnan(residual)
            else f"; program-and-verify residual {100 * residual:.1f} % of the window (RMS)"
        )
        lines.append(
            f"{task} {net}: budget {epochs} epochs of batch {f['batch']}; seeds {seeds} "
            f"(n = {f.get('pruned_n', 0)} pruned, {f.get('prog-verify_n', 0)} programmed){verify}"
        )
    lines.append(
        "metric % on the test set (pr_auc: PR-AUC of the vessel pixels), mean ± sd over seeds; "
        "c: a run collapsed (>= 90 % of its predictions in one class);\n"
        "pruned: switch limit 1 % -> 0.7 % (paper), SLx5: 5 % -> 3.5 %, noSL: off; readout: "
        "random layers on the chip, readout trained in float; gap = pruned - prog-verify "
        "(points); sweeps " + ", ".join(map(str, sweep_ids))
    )
    return "\n".join(lines)


def print_from_db(db: Path, sweep_ids: Sequence[int]) -> None:
    """Reprint the table of ``sweep_ids`` from store ``db``; a missing store or a run that
    is no sweep: one line on stderr, exit 2."""
    if not db.is_file():
        print(f"--from-db {db}: no such run store", file=sys.stderr)
        sys.exit(2)
    with RunStore(db) as store:
        for sid in sweep_ids:
            try:
                sweep_definition(store, sid)
            except ConfigError as exc:
                print(f"--sweep {sid}: {exc.reason}", file=sys.stderr)
                sys.exit(2)
        print(pruning_table(store, sweep_ids))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"comma-separated of {TASKS + NETWORK_TASKS} (default: the MLP tasks)",
    )
    ap.add_argument(
        "--ablation",
        action="store_true",
        help="also the switch-limit ablation (5x stricter, off) and the readout-only baseline",
    )
    ap.add_argument(
        "--full",
        action="store_true",
        help="every task (the CNN, CRNN and U-Net too) with --ablation",
    )
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs (smoke run)")
    ap.add_argument("--from-db", type=Path, help="reprint the table of stored sweeps")
    ap.add_argument("--sweep", type=int, action="append", help="sweep id (with --from-db)")
    ap.add_argument(
        "--sweep-file",
        type=Path,
        action="append",
        help="run these sweep files (pruning experiments) instead of the tasks' own",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key in every trial, e.g. train.epochs=5 (the budget) or model.sizes=[64,32,10]",
    )
    ap.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: inline)")
    ap.add_argument(
        "--out", type=Path, default=Path("benchmarks/out/pruning"), help="table and store"
    )
    add_run_options(ap)
    args = ap.parse_args(argv)
    # one intra-op thread: trials are small, and torch's thread pool on a loaded machine
    # (other processes on the same cores) slows them down by an order of magnitude or more
    torch.set_num_threads(1)
    if args.from_db is not None:
        if not args.sweep:
            ap.error("--from-db needs --sweep ID (the ids `memhil runs list` shows as sweep)")
        print_from_db(args.from_db, args.sweep)
        return
    bad_set = [s for s in args.set if "=" not in s or not s.partition("=")[0]]
    if bad_set:
        ap.error(f"--set {bad_set[0]!r}: expected KEY=VALUE, e.g. train.epochs=5")
    known = TASKS + NETWORK_TASKS
    tasks = list(known) if args.full else [t for t in args.tasks.split(",") if t]
    bad = [t for t in tasks if t not in known]
    if bad:
        ap.error(f"--tasks: unknown task {bad[0]!r} (known: {', '.join(known)})")
    args.out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else args.out / "pruning.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    jobs = (
        [(None, p) for p in args.sweep_file]
        if args.sweep_file
        else [(t, p) for t in tasks for p in sweep_files(t, args.ablation or args.full)]
    )
    ids = []
    with tempfile.TemporaryDirectory(prefix="memhil-pruning-") as tmp:
        for task, path in jobs:
            if (args.quick and task is not None) or args.backend is not None or args.set:
                quick = task if args.quick else None
                path = derived_sweep(
                    path, Path(tmp), quick=quick, backend=args.backend, settings=args.set
                )
            try:
                out = run_sweep(
                    path,
                    db=db,
                    progress=False,
                    executor="inline" if args.num_cpus is None else "ray",
                    num_cpus=args.num_cpus,
                )
            except (ConfigError, LimitError) as exc:  # the pre-flight's refusal
                print(f"{path.name}: refused before any pulse: {exc}")
                continue
            print(
                f"[{path.name}: sweep {out.sweep_id}, {len(out.completed)} trials in "
                f"{out.elapsed_s:.0f} s, {len(out.failed)} failed]",
                flush=True,
            )
            ids.append(out.sweep_id)
    with RunStore(db) as store:
        text = pruning_table(store, ids)
    sweeps = " ".join(f"--sweep {i}" for i in ids)
    text += f"\nreprint: python benchmarks/pruning.py --from-db {db} {sweeps}"
    print(text)
    (args.out / "pruning.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
