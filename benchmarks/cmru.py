"""BMRU / CMRU / αCMRU vs LRU and minGRU at equal parameter counts (``docs/algorithms.md#cmru``),
run as sweeps of experiment files into a run store and tabulated from the stored runs.

Sweeps (``examples/sweeps/``): ``cmru_retention.yaml`` — copy-first-input, 3-bit flip-flop
and delayed recall with distractors at T = 100 x five cells x five seeds (75 trials of
``examples/experiments/cmru_retention_T100.yaml``: one pre-norm residual block, d_model 16,
GLU-MLP x2, the CMRU with 16 memory units and every other cell at the state size of equal
parameter count; AdamW, lr 5e-3 cosine to 1 %, batch 64, cap 400 updates, early stop at a
20-update mean mini-batch accuracy of 0.99); ``cmru_digits.yaml`` — sequential digits
(T = 64, 32 positional channels, cap 600 updates) x five cells x five seeds (25 trials).
Delayed recall at T = 1000, where the budget decides the ranking, is
``benchmarks/cmru_budget.py``'s study.

The table (one function of the store and a sweep id, so ``--from-db DB --sweep ID`` reprints
it without training) gives per task and cell: the parameter count, test accuracy mean ± sd
over the seeds with ``[k/n collapsed]`` beside it when any run predicted one class for
>= 90 % of the test set and ``[j/n miss a class]`` when another never predicted some class
(``memhil.algorithms.metrics``), the share of seeds converged (test accuracy >= 0.95,
digits 0.80, and neither flag), the updates made against the cap, and per seed: accuracy,
``c`` when collapsed, ``p`` when a class is never predicted, and steps-to-converge (first
update after which the 20-update mean mini-batch accuracy stays >= the threshold; ``-``
never). A second table
gives length generalisation where the runs recorded it (``train.length_test_factors``; the
retention tasks: trained at T = 100, tested on sequences drawn anew at 2T and 10T). A third
gives the memory-unit diagnostics recorded every 25 updates (units switching on every blank
step and mean |s_T|, first -> last record; largest cell-gradient norm).

Cost: the default run (100 trials, one after the other in this process, one torch thread)
takes ~12 min on an idle 2-core machine (the same recipe took 737 s before it ran through
the runner; most runs stop early); ``--quick`` (T = 20, two seeds, 60 updates) ~1 min.
The last row runs ``examples/experiments/cmru_copy_first.yaml`` (projections deployed by
program-and-verify) through the runner: ``--backend mock_lab=examples/mock_station.yaml``
(or ``sim``, ``station=...``) moves it, and the sweeps' runs with it (they train in float,
``deploy.program: none``, and touch no device).

Run: ``python benchmarks/cmru.py [--quick] [--db DB]``; ``python benchmarks/cmru.py
--from-db DB --sweep ID [--sweep ID]`` reprints the tables of stored sweeps.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from experiment_runs import add_run_options, run_example  # benchmarks/experiment_runs.py

from memhil.algorithms.metrics import format_accuracy, is_partial_collapse
from memhil.store import RunStore
from memhil.sweeps import SweepFile, load_sweep_file, run_sweep
from memhil.sweeps.results import sweep_definition, sweep_trials
from memhil.sweeps.sweep_file import set_dotted

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = [ROOT / "examples/sweeps/cmru_retention.yaml", ROOT / "examples/sweeps/cmru_digits.yaml"]
#: --quick: the same sweep files with the data, the budget and the seeds shrunk
QUICK_KEYS = {
    "cmru_retention": {
        "dataset.seq_len": 20,
        "dataset.n_train": 256,
        "dataset.n_test": 128,
        "train.epochs": 3,
        "train.steps_per_epoch": 20,
        "train.batch_size": 16,
        "train.diagnostics_every": 10,
    },
    "cmru_digits": {
        "train.epochs": 3,
        "train.steps_per_epoch": 20,
        "train.batch_size": 16,
        "train.diagnostics_every": 10,
    },
}
QUICK_SEEDS = (0, 1)
CELL_NAMES = {
    "bmru": "BMRU",
    "cmru": "CMRU",
    "acmru_learned": "aCMRU",
    "lru": "LRU",
    "mingru": "minGRU",
}
#: width of the accuracy column: "mean ± sd" with both flags
ACC_WIDTH = 50
TASK_NAMES = {
    "copy_first_input": "copy",
    "flip_flop": "flipflop",
    "delayed_recall": "recall",
    "sequential_digits": "digits",
}


def sweep_variant(
    sweep: SweepFile,
    keys: dict[str, Any],
    seeds: Iterable[int] | None = None,
    axis_value: Callable[[str, Any], Any] | None = None,
) -> SweepFile:
    """``sweep`` with ``keys`` set in its base file's content, only the trials of ``seeds``
    (renumbered) and each axis value passed through ``axis_value(key, value)``: the smoke
    runs of a published sweep (every trial is still stored with its axis values)."""
    base = copy.deepcopy(sweep.base_data)
    for key, value in keys.items():
        set_dotted(base, key, value)
    trials = [t for t in sweep.trials if seeds is None or t.seed in set(seeds)]
    if axis_value is not None:
        trials = [
            replace(
                t,
                axes={k: axis_value(k, v) for k, v in t.axes.items()},
                overrides={k: axis_value(k, v) for k, v in t.overrides.items()},
            )
            for t in trials
        ]
    trials = [replace(t, index=i) for i, t in enumerate(trials)]
    return replace(sweep, base_data=base, trials=trials)


def only_tasks(sweep: SweepFile, tasks: list[str]) -> SweepFile:
    """``sweep`` with the trials whose dataset is one of ``tasks`` (``--tasks``)."""
    name = sweep.base_data.get("dataset", {}).get("name")
    keep = [t for t in sweep.trials if t.axes.get("dataset.name", name) in tasks]
    return replace(sweep, trials=[replace(t, index=i) for i, t in enumerate(keep)])


def with_backend(sweep: SweepFile, backend: Any) -> SweepFile:
    """``sweep`` with its base file's ``backend:`` replaced (``--backend``)."""
    if backend is None:
        return sweep
    return replace(sweep, base_data={**sweep.base_data, "backend": backend})


def run_into_store(sweep: SweepFile, db: Path) -> int:
    """Run ``sweep``'s trials one after the other in this process into ``db``; its id."""
    out = run_sweep(sweep, db=db, executor="inline", progress=False)
    if out.failed:
        for trial, error in out.failed.items():
            print(f"  trial {trial} failed: {error}")
    return out.sweep_id


def trial_rows(store: RunStore, sweep_id: int) -> list[dict[str, Any]]:
    """One dict per completed trial of sweep ``sweep_id``: its axes, seed, final metrics,
    the experiment configuration it ran and its stored points."""
    definition = sweep_definition(store, sweep_id)
    axes = list(definition.get("axes") or [])
    trials = sweep_trials(store, sweep_id)
    rows = []
    for _, t in trials[trials["status"] == "completed"].iterrows():
        run_id = int(t["run_id"])
        rows.append(
            {
                **{a: t[a] for a in axes},
                "seed": int(t["seed"]),
                "run_id": run_id,
                "metrics": {k: t[k] for k in t.index if k not in ("trial", "run_id", *axes)},
                "config": store.metadata(run_id)["experiment_config"],
                "points": store.load(run_id),
            }
        )
    return rows


def _task(row: dict) -> tuple[str, int]:
    data = row["config"]["dataset"]
    return TASK_NAMES.get(data["name"], data["name"]), int(data.get("seq_len") or 64)


def _nan_to_none(x: Any) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def seed_cell(acc: float, collapsed: bool, to_converge: int | None, partial: bool = False) -> str:
    """One seed of a table row: accuracy, ``c`` when collapsed, ``p`` when some class is
    never predicted (a partial collapse), / steps-to-converge."""
    flag = "c" if collapsed else "p" if partial else ""
    return f"{acc:.3f}{flag}/{'-' if to_converge is None else to_converge}"


def cmru_table(store: RunStore, sweep_id: int) -> str:
    """The benchmark's tables of sweep ``sweep_id`` in ``store``: accuracy per task and
    cell with collapse flags, convergence, budget and steps-to-converge per seed, then the
    memory-unit diagnostics (module docstring)."""
    rows = trial_rows(store, sweep_id)
    if not rows:
        return f"sweep {sweep_id}: no completed trial"
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((*_task(r), r["model.cell"]), []).append(r)
    train = rows[0]["config"]["train"]
    cap = train["epochs"] * train["steps_per_epoch"]
    lines = [
        f"sweep {sweep_id} ({definition_name(store, sweep_id)}): budget cap {cap} updates of "
        f"batch {train['batch_size']}, lr {train['lr']} {train.get('schedule', 'cosine')}, "
        f"early stop at {train.get('stop_accuracy')}; seeds "
        + ",".join(str(s) for s in sorted({r["seed"] for r in rows})),
    ]
    head = (
        f"{'task':<9}{'T':>5}  {'model':<7}{'params':>7}  {'test acc (mean ± sd)':<{ACC_WIDTH}}"
        f"{'conv.':>6}{'updates':>8}  per seed: acc[c|p]/steps-to-converge"
    )
    lines += [head, "-" * len(head)]
    diag_lines = []
    for (task, seq_len, cell), rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        m = [r["metrics"] for r in rs]
        accs = [float(x["accuracy"]) for x in m]
        coll = [bool(x["collapsed"]) for x in m]
        part = [is_partial_collapse(x) for x in m]
        conv_at = [_nan_to_none(x["steps_to_converge"]) for x in m]
        threshold = float(rs[0]["config"]["train"]["converge_accuracy"])
        conv = sum(a >= threshold and not c and not p for a, c, p in zip(accs, coll, part)) / len(
            rs
        )
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        acc = format_accuracy(statistics.mean(accs), sd, sum(coll), len(rs), sum(part))
        steps = statistics.mean(float(x["steps"]) for x in m)
        per_seed = " ".join(map(seed_cell, accs, coll, conv_at, part))
        name = CELL_NAMES.get(cell, cell)
        lines.append(
            f"{task:<9}{seq_len:>5}  {name:<7}{int(m[0]['parameters']):>7}  {acc:<{ACC_WIDTH}}"
            f"{conv:>6.2f}{steps:>8.0f}  {per_seed}"
        )
        diag = _diagnostics(rs)
        if diag:
            diag_lines.append(f"{task:<9}{seq_len:>5}  {name:<7}{diag}")
    lines += _length_table(groups)
    if diag_lines:
        head = f"{'task':<9}{'T':>5}  {'model':<7}{'blank units':>14}{'mean |s_T|':>16}{'grad cell':>11}"
        lines += [
            "",
            "memory-unit diagnostics (mean over seeds, first -> last record): units switching "
            "on every blank step, mean |s_T|, largest cell-gradient norm",
            head,
            "-" * len(head),
            *diag_lines,
        ]
    return "\n".join(lines)


def _length_factors(metrics: dict[str, Any]) -> list[int]:
    """The factors f of the ``length_x<f>_accuracy`` metrics a run recorded, ascending."""
    out = []
    for key, value in metrics.items():
        if key.startswith("length_x") and key.endswith("_accuracy") and not _isnan(value):
            out.append(int(key[len("length_x") : -len("_accuracy")]))
    return sorted(out)


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _length_table(groups: dict[tuple, list[dict]]) -> list[str]:
    """Length generalisation per task and cell: test accuracy at T and at each recorded
    f x T (mean ± sd over the seeds with the collapse flags); no lines when none recorded."""
    rows = []
    factors: list[int] = []
    for (task, seq_len, cell), rs in groups.items():
        fs = _length_factors(rs[0]["metrics"])
        if not fs:
            continue
        factors = sorted({*factors, *fs})
        cells = []
        for prefix in ["", *(f"length_x{f}_" for f in fs)]:
            m = [
                {k[len(prefix) :]: v for k, v in r["metrics"].items() if k.startswith(prefix)}
                for r in rs
            ]
            accs = [float(x["accuracy"]) for x in m]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            coll = sum(bool(x["collapsed"]) for x in m)
            part = sum(is_partial_collapse(x) for x in m)
            cells.append(format_accuracy(statistics.mean(accs), sd, coll, len(m), part))
        name = CELL_NAMES.get(cell, cell)
        rows.append((f"{task:<9}{seq_len:>5}  {name:<7}", cells))
    if not rows:
        return []
    width = max(len(c) for _, cells in rows for c in cells) + 2
    head = f"{'task':<9}{'T':>5}  {'model':<7}" + "".join(
        f"{label:<{width}}" for label in ["at T", *(f"at {f}T" for f in factors)]
    )
    return [
        "",
        "length generalisation: trained at T, tested on sequences drawn anew at f x T "
        "(test accuracy mean ± sd over the seeds)",
        head,
        "-" * len(head.rstrip()),
        *(lead + "".join(f"{c:<{width}}" for c in cells) for lead, cells in rows),
    ]


def definition_name(store: RunStore, sweep_id: int) -> str:
    return str(sweep_definition(store, sweep_id).get("name"))


def _diagnostics(rs: list[dict]) -> str:
    """The diagnostics columns of one task and cell ("" when none were recorded)."""
    ends: dict[str, list[tuple[float, float]]] = {}
    grad = 0.0
    for r in rs:
        p = r["points"]
        p = p[p["phase"] == "step"]
        for key in ("units_switching_every_blank", "abs_s_T_mean"):
            v = p.loc[p["metric"] == key, "value"].astype(float)
            if len(v):
                ends.setdefault(key, []).append((float(v.iloc[0]), float(v.iloc[-1])))
        g = p.loc[p["metric"] == "grad_norm_cell", "value"].astype(float)
        grad = max([grad, *g])
    if not ends:
        return ""

    def span(key: str) -> str:
        v = [(a, b) for a, b in ends.get(key, []) if not (math.isnan(a) or math.isnan(b))]
        if not v:
            return "-"  # the task has no blank steps
        return f"{statistics.mean(a for a, _ in v):.1f} -> {statistics.mean(b for _, b in v):.1f}"

    return f"{span('units_switching_every_blank'):>14}{span('abs_s_T_mean'):>16}{grad:>11.2g}"


def print_tables(db: Path, sweep_ids: list[int]) -> str:
    """Print (and return) the tables of ``sweep_ids`` from the run store ``db``."""
    with RunStore(db) as store:
        text = "\n\n".join(cmru_table(store, s) for s in sweep_ids)
    print(text, flush=True)
    return text


def _plot(db: Path, sweep_ids: list[int], path: Path) -> None:
    """Mean test accuracy per task and cell (bars) with every seed (dots), from the store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with RunStore(db) as store:
        rows = [r for s in sweep_ids for r in trial_rows(store, s)]
    groups = list(dict.fromkeys(_task(r) for r in rows))
    cells = list(dict.fromkeys(r["model.cell"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 3.5))
    width = 0.8 / len(cells)
    for j, cell in enumerate(cells):
        for i, g in enumerate(groups):
            accs = [
                float(r["metrics"]["accuracy"])
                for r in rows
                if _task(r) == g and r["model.cell"] == cell
            ]
            x = i + (j - len(cells) / 2 + 0.5) * width
            label = CELL_NAMES.get(cell, cell) if i == 0 else None
            ax.bar(x, statistics.mean(accs), width, color=f"C{j}", label=label)
            ax.plot([x] * len(accs), accs, "k.", ms=3)
    ax.set_xticks(range(len(groups)), [f"{t}\nT={n}" for t, n in groups])
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, ncol=len(cells))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 20, 2 seeds, 60 updates")
    ap.add_argument("--out", default="benchmarks/out/cmru", help="folder of the store and plot")
    ap.add_argument("--from-db", type=Path, help="print the tables of stored sweeps instead")
    ap.add_argument("--sweep", type=int, action="append", help="sweep id in --from-db")
    ap.add_argument(
        "--tasks",
        help="comma-separated dataset names to run (e.g. delayed_recall,sequential_digits; "
        "default: every task of the sweeps)",
    )
    add_run_options(ap)
    args = ap.parse_args(argv)
    if args.from_db is not None:
        if not args.sweep:
            ap.error("--from-db needs --sweep ID (the sweep run's id: memhil runs list)")
        print_tables(args.from_db, args.sweep)
        return
    torch.set_num_threads(1)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else out / ("cmru_quick.db" if args.quick else "cmru.db")
    sweep_ids = []
    for path in SWEEPS:
        sweep = with_backend(load_sweep_file(path), args.backend)
        if args.quick:
            sweep = sweep_variant(sweep, QUICK_KEYS[sweep.name], QUICK_SEEDS)
        if args.tasks:
            sweep = only_tasks(sweep, args.tasks.split(","))
            if not sweep.trials:
                continue
        sweep_id = run_into_store(sweep, db)
        sweep_ids.append(sweep_id)
        print_tables(db, [sweep_id])
        print(
            f"(stored: python benchmarks/cmru.py --from-db {db} --sweep {sweep_id})\n", flush=True
        )
    if not sweep_ids:
        ap.error(f"--tasks {args.tasks}: no trial of the sweeps runs one of these datasets")
    _plot(db, sweep_ids, out / ("accuracy_quick.png" if args.quick else "accuracy.png"))

    # the same recipe as an experiment run: trained in float, projections programmed on a chip
    print("experiment run (memory-unit projections deployed by program-and-verify):")
    quick = {"train": {"epochs": 1}, "deploy": {"max_iterations": 10}} if args.quick else {}
    _, _, line = run_example("cmru_copy_first", backend=args.backend, db=str(db), **quick)
    print(line, flush=True)
    print(f"\nwall time {time.time() - t_start:.0f} s; runs in {db}")


if __name__ == "__main__":
    main()
