"""Budget study of the memory units on delayed recall at T = 1000 (``docs/algorithms.md#cmru``):
does the step budget decide the ranking? Run as the sweep
``examples/sweeps/cmru_budget_T1000.yaml`` into a run store and tabulated from the stored runs.

Each of BMRU, CMRU and αCMRU (learned ε; the backbone of ``benchmarks/cmru.py``, equal
parameter counts) trains per seed, without and with a length curriculum (first at most 300
updates at T = 100), under a convergence criterion with the budget as a cap: a constant
learning rate 5e-3, stop once the 20-update mean mini-batch accuracy reaches 0.99, at most
4800 updates. With a constant rate a run capped at B updates is exactly the first B updates
of one capped at 2B, so the test accuracy the run records after every 300-update epoch IS
the result at cap B (tested: ``tests/experiments/test_cmru_sweeps.py``), and one run per
model and seed gives every budget B = 300, 600, 1200, 2400, 4800.

The table gives per curriculum setting, model and budget: test accuracy mean ± sd over the
seeds with ``[k/n collapsed]`` (>= 90 % of the test predictions in one class) and ``[j/n
miss a class]`` (another run that never predicts some class: a partial collapse, e.g. the
0.73-0.77 plateaus of delayed recall with 4 classes), the change of the mean against the
half budget (``*`` beyond ``--margin``), and per seed: accuracy, ``c`` when collapsed, ``p``
when a class is never predicted, / steps-to-converge when reached within B (first update
after which the 20-update mean mini-batch accuracy stays >= 0.95). Diagnostics (units
switching on every blank step, mean |s_T|, first -> last record) show the plateau. Then
the verdict of each setting and model (the smallest budget from which on no measured
doubling moves its mean by more than the margin, and the seeds still training at the cap,
whose later updates nobody measured), and of each setting over all models.

Cost: ~0.04 s per update at T = 1000 on an idle core (one torch thread; 0.05-0.08 s measured
with the 2-core machine at load ~3, 0.1-0.3 s more loaded); a seed that never converges takes
the full cap (9600 updates: ~8-10 min at load ~3), one that converges stops early. The 30
trials at ``--cap 9600`` took 3833 s wall, 2934 s CPU (load ~3 on 2 cores, nice 0; three
runs reached the cap), one after the other; ``--extend 1 --cap 19200`` of those still
training (two) 1386 s wall.
``--quick``: T = 50, caps of 10/20/40 updates, one seed (a smoke run, ~1 min).

By the same property a larger cap needs only the runs still training at the old one:
``--extend ID --cap 9600`` reruns just those at cap 9600 into the same store (a new sweep,
whose runs repeat the old ones' per-epoch results before going on), and ``--sweep ID
--sweep ID2`` tabulates the study with each run at the largest cap stored for it.

Run: ``python benchmarks/cmru_budget.py [--db DB] [--cap 9600]`` (``--cap``: every run's cap);
``python benchmarks/cmru_budget.py --db DB --extend ID --cap 9600``;
``python benchmarks/cmru_budget.py --from-db DB --sweep ID [--sweep ID2]`` reprints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from cmru import (  # benchmarks/cmru.py
    ACC_WIDTH,
    CELL_NAMES,
    ROOT,
    run_into_store,
    seed_cell,
    sweep_variant,
    trial_rows,
    with_backend,
)
from experiment_runs import add_run_options

from memhil.algorithms.metrics import format_accuracy
from memhil.store import RunStore
from memhil.sweeps import SweepFile, load_sweep_file

SWEEP = ROOT / "examples/sweeps/cmru_budget_T1000.yaml"
QUICK_KEYS = {
    "dataset.seq_len": 50,
    "dataset.n_train": 256,
    "dataset.n_test": 128,
    "train.epochs": 4,
    "train.steps_per_epoch": 10,
    "train.batch_size": 16,
    "train.diagnostics_every": 10,
}
QUICK_CURRICULUM = {"steps": 20, "dataset": {"name": "delayed_recall", "seq_len": 20}}


def _quick_axis(key: str, value: Any) -> Any:
    return QUICK_CURRICULUM if key == "train.curriculum" and value else value


def _per_epoch(points, metric: str) -> list[float]:
    """The per-epoch values of ``metric`` (the runner's ``epoch`` records), in order."""
    p = points[(points["phase"] == "epoch") & (points["metric"] == metric)]
    return [float(v) for v in p.sort_values("epoch")["value"]]


def _blank_units(points) -> str:
    p = points[(points["phase"] == "step") & (points["metric"] == "units_switching_every_blank")]
    s = points[(points["phase"] == "step") & (points["metric"] == "abs_s_T_mean")]
    if p.empty:
        return ""
    a, b = p["value"].astype(float), s["value"].astype(float)
    return f"{a.iloc[0]:.0f}->{a.iloc[-1]:.0f} units, |s_T| {b.iloc[0]:.0f}->{b.iloc[-1]:.0f}"


def _model_verdict(means: dict[int, float], margin: float, stopped: bool) -> int | None:
    """The smallest budget from which on no measured doubling moves ``means`` (budget ->
    mean accuracy) by more than ``margin``; a run set that every seed stopped before the
    cap adds the doubling of the cap with Δ = 0 (the prefix property)."""
    budgets = sorted(means)
    deltas = {b: abs(means[2 * b] - means[b]) for b in budgets if 2 * b in means}
    if stopped and budgets:
        deltas[budgets[-1]] = 0.0
    ok = [b for b in sorted(deltas) if all(d <= margin for b2, d in deltas.items() if b2 >= b)]
    return ok[0] if ok else None


def _run_key(row: dict[str, Any]) -> tuple[str, str, int]:
    """Model, curriculum (canonical JSON) and seed: what names one run of the study."""
    return row["model.cell"], json.dumps(row.get("train.curriculum"), sort_keys=True), row["seed"]


def _reached_cap(row: dict[str, Any]) -> bool:
    """Whether the run made every update its cap allowed (still training when it ended)."""
    train = row["config"]["train"]
    return float(row["metrics"]["steps"]) >= int(train["epochs"]) * int(train["steps_per_epoch"])


def combined_rows(store: RunStore, sweep_ids: list[int]) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of ``sweep_ids`` (the study and its extensions to larger caps), one per
    model, curriculum and seed: the one with the most epochs recorded. A run at a larger cap
    must repeat the shorter one's per-epoch test accuracies (the prefix property); a
    mismatch raises. Also the lines that say which runs the later sweeps replaced."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    notes = []
    for sweep_id in sweep_ids:
        for row in trial_rows(store, sweep_id):
            key = _run_key(row)
            old = best.get(key)
            if old is None:
                best[key] = row
                continue
            a_old = _per_epoch(old["points"], "test_accuracy")
            a_new = _per_epoch(row["points"], "test_accuracy")
            short, long_ = sorted((a_old, a_new), key=len)
            if long_[: len(short)] != short:
                raise ValueError(
                    f"{key}: run {old['run_id']} and run {row['run_id']} differ in their first "
                    f"{len(short)} epochs; a larger cap must extend the same run"
                )
            if len(a_new) > len(a_old):
                best[key] = row
                notes.append(
                    f"{CELL_NAMES.get(key[0], key[0])} seed {key[2]}: run {row['run_id']} "
                    f"(sweep {sweep_id}, {len(a_new)} epochs) extends run {old['run_id']} "
                    f"({len(a_old)} epochs, the same test accuracies)"
                )
    order = {k: i for i, k in enumerate(best)}
    return sorted(best.values(), key=lambda r: order[_run_key(r)]), notes


def budget_table(store: RunStore, sweep_ids: int | list[int], margin: float) -> str:
    """The budget table of the runs of ``sweep_ids`` (module docstring): a sweep and its
    extensions (``--extend``), each run at the largest cap stored for it."""
    ids = [sweep_ids] if isinstance(sweep_ids, int) else list(sweep_ids)
    rows, notes = combined_rows(store, ids)
    if not rows:
        return f"sweep {','.join(map(str, ids))}: no completed trial"
    train = rows[0]["config"]["train"]
    per_epoch = int(train["steps_per_epoch"])
    data = rows[0]["config"]["dataset"]
    caps = sorted({int(r["config"]["train"]["epochs"]) * per_epoch for r in rows})
    lines = [
        f"sweep {','.join(map(str, ids))}: {data['name']} T = {data['seq_len']}, batch "
        f"{train['batch_size']}, lr {train['lr']} {train['schedule']}, stop at "
        f"{train['stop_accuracy']}, cap {'/'.join(map(str, caps))} updates; seeds "
        + ",".join(str(s) for s in sorted({r["seed"] for r in rows})),
        *notes,
    ]
    verdict: dict[str, dict[int, float]] = {}  # setting -> budget -> largest |Δ| over models
    # setting -> its models in table order (a dict: a set's order changes with the process)
    models_per_setting: dict[str, dict[str, None]] = {}
    training: dict[str, list[str]] = {}  # setting -> "model seed s" still training at the cap
    all_stopped: dict[str, bool] = {}  # setting -> every run stopped before the cap
    per_model: list[str] = []  # the verdict of each setting and model
    for curriculum in dict.fromkeys(repr(r.get("train.curriculum")) for r in rows):
        rs_c = [r for r in rows if repr(r.get("train.curriculum")) == curriculum]
        cur = rs_c[0].get("train.curriculum")
        setting = (
            "without curriculum"
            if not cur
            else f"with curriculum: <= {cur['steps']} updates at T = {cur['dataset']['seq_len']} first"
        )
        lines += ["", setting]
        head = (
            f"{'model':<7}{'budget':>7}  {'test acc (mean ± sd)':<{ACC_WIDTH}}{'Δ vs B/2':>9}  "
            "per seed: acc[c|p]/steps-to-converge (- : not within B)"
        )
        lines += [head, "-" * len(head)]
        for cell in dict.fromkeys(r["model.cell"] for r in rs_c):
            rs = sorted((r for r in rs_c if r["model.cell"] == cell), key=lambda r: r["seed"])
            models_per_setting.setdefault(setting, {})[cell] = None
            accs_e = [_per_epoch(r["points"], "test_accuracy") for r in rs]
            coll_e = [_per_epoch(r["points"], "test_collapsed") for r in rs]
            miss_e = [_per_epoch(r["points"], "test_classes_never_predicted") for r in rs]
            # a run stopped before its cap is the run at any larger cap (no further update):
            # its last record repeats; one that reached its cap ends the measured budgets
            n_epochs = min(
                (len(a) for r, a in zip(rs, accs_e) if _reached_cap(r)),
                default=max(len(a) for a in accs_e),
            )
            for series in (accs_e, coll_e, miss_e):
                for s in series:
                    s += s[-1:] * (n_epochs - len(s))
            budgets = [
                per_epoch * 2**k for k in range(20) if per_epoch * 2**k <= n_epochs * per_epoch
            ]
            prev = None
            means: dict[int, float] = {}
            for b in budgets:
                e = b // per_epoch - 1
                accs = [a[e] for a in accs_e]
                coll = [bool(c[e]) for c in coll_e]
                # a partial collapse: some class never predicted (runs stored without it: no)
                part = [not c and len(m) > e and m[e] >= 1 for c, m in zip(coll, miss_e)]
                mean = statistics.mean(accs)
                means[b] = mean
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                conv = []
                for r in rs:
                    s = r["metrics"]["steps_to_converge"]
                    ok = s is not None and not math.isnan(float(s)) and float(s) <= b
                    conv.append(int(s) if ok else None)
                delta = ""
                if prev is not None:
                    d = mean - prev
                    delta = f"{d:+.3f}{'*' if abs(d) > margin else ''}"
                    worst = verdict.setdefault(setting, {})
                    worst[b // 2] = max(worst.get(b // 2, 0.0), abs(d))
                per_seed = " ".join(map(seed_cell, accs, coll, conv, part))
                acc = format_accuracy(mean, sd, sum(coll), len(rs), sum(part))
                lines.append(
                    f"{CELL_NAMES.get(cell, cell):<7}{b:>7}  {acc:<{ACC_WIDTH}}{delta:>9}  {per_seed}"
                )
                prev = mean
            cap = n_epochs * per_epoch
            made = [int(float(r["metrics"]["steps"])) for r in rs]
            stopped = max(made) < cap  # every seed met the stop criterion before the cap
            all_stopped[setting] = all_stopped.get(setting, True) and stopped
            if stopped:  # every run stopped before the largest cap measured
                lines.append(
                    f"{'':<16}every seed stopped converged (at most {max(made)} updates): "
                    f"a cap of {2 * cap} gives the same runs, Δ = 0"
                )
            diag = [_blank_units(r["points"]) for r in rs]
            if any(diag):
                lines.append(f"{'':<16}diagnostics per seed: " + "; ".join(diag))
            name = CELL_NAMES.get(cell, cell)
            from_b = _model_verdict(means, margin, stopped)
            running = [r["seed"] for r, n in zip(rs, made) if n >= cap]
            training.setdefault(setting, []).extend(f"{name} seed {s}" for s in running)
            text = (
                f"stable within {margin} from B = {from_b} on"
                if from_b is not None
                else f"no measured budget is stable within {margin}"
            )
            if running:  # stable at the cap need not mean stable beyond it
                text += (
                    f"; seed(s) {','.join(map(str, running))} still training at the cap "
                    f"{cap} (their later updates are unmeasured)"
                )
            per_model.append(f"{setting}, {name}: {text}")
    lines.append("")
    lines += per_model
    lines.append("")
    for setting, worst in verdict.items():
        if all_stopped.get(setting):  # the prefix property: doubling the cap changes nothing
            worst[max(worst) * 2] = 0.0
        # the smallest B from which on no measured doubling moves any model's mean beyond
        # the margin
        ok = [b for b in sorted(worst) if all(d <= margin for b2, d in worst.items() if b2 >= b)]
        names = ", ".join(CELL_NAMES.get(c, c) for c in models_per_setting[setting])
        changes = ", ".join(f"{b}->{2 * b}: {d:.3f}" for b, d in sorted(worst.items()))
        if ok:
            text = (
                f"from B = {ok[0]} on, doubling the cap moves no model's mean by more than "
                f"{margin} ({names}; largest change per doubling: {changes})"
            )
        else:
            text = (
                f"no measured budget passes the doubling test at margin {margin} ({names}; "
                f"largest change per doubling: {changes})"
            )
        if training.get(setting):
            text += (
                f"; still training at their cap: {', '.join(training[setting])} "
                "(their later updates are unmeasured)"
            )
        lines.append(f"{setting}: {text}")
    return "\n".join(lines)


def with_cap(sweep: SweepFile, cap: int) -> SweepFile:
    """``sweep`` with every run capped at ``cap`` updates (``train.epochs`` of its base file)."""
    per_epoch = int(sweep.base_data["train"]["steps_per_epoch"])
    if cap % per_epoch or cap <= 0:
        raise SystemExit(f"--cap {cap}: must be a positive multiple of {per_epoch} updates")
    return sweep_variant(sweep, {"train.epochs": cap // per_epoch})


def extension(sweep: SweepFile, rows: list[dict[str, Any]], cap: int) -> SweepFile:
    """The trials of ``sweep`` whose stored run in ``rows`` made every update of its cap
    (still training), at the cap ``cap`` updates: by the prefix property their first
    updates repeat the stored runs, so only these runs need the larger cap."""
    per_epoch = int(sweep.base_data["train"]["steps_per_epoch"])
    training = {_run_key(r) for r in rows if _reached_cap(r)}
    larger = [r for r in rows if int(r["config"]["train"]["epochs"]) * per_epoch >= cap]
    if larger:
        raise SystemExit(f"--cap {cap}: run {larger[0]['run_id']} already has a cap >= {cap}")
    longer = with_cap(sweep, cap)
    keep = [t for t in longer.trials if _run_key({**t.axes, "seed": t.seed}) in training]
    return replace(longer, trials=[replace(t, index=i) for i, t in enumerate(keep)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 50, caps 10-40, one seed")
    ap.add_argument("--margin", type=float, default=0.02, help="largest accepted Δ mean accuracy")
    ap.add_argument("--out", default="benchmarks/out/cmru_budget", help="folder of the store")
    ap.add_argument("--from-db", type=Path, help="print the table of stored sweeps instead")
    ap.add_argument(
        "--sweep",
        type=int,
        action="append",
        help="sweep id in --from-db; repeat it to combine a sweep with its --extend sweeps",
    )
    ap.add_argument(
        "--extend",
        type=int,
        metavar="SWEEP",
        help="rerun only the runs of sweep SWEEP in --db that were still training at their "
        "cap, at the cap --cap, into the same store (a new sweep)",
    )
    ap.add_argument(
        "--cap",
        type=int,
        help="updates at most per run (a multiple of 300): of the --extend runs, or of the "
        "whole study (default: the sweep file's 4800)",
    )
    add_run_options(ap)
    args = ap.parse_args(argv)
    if args.from_db is not None:
        if not args.sweep:
            ap.error("--from-db needs --sweep ID (the sweep run's id: memhil runs list)")
        with RunStore(args.from_db) as store:
            print(budget_table(store, args.sweep, args.margin), flush=True)
        return
    torch.set_num_threads(1)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else out / ("budget_quick.db" if args.quick else "budget.db")
    sweep = with_backend(load_sweep_file(SWEEP), args.backend)
    if args.quick:
        sweep = sweep_variant(sweep, QUICK_KEYS, seeds=(0,), axis_value=_quick_axis)
    ids = []
    if args.extend is not None:
        if args.cap is None or not args.db:
            ap.error("--extend SWEEP needs --cap UPDATES and --db (the store holding SWEEP)")
        with RunStore(db) as store:
            sweep = extension(sweep, trial_rows(store, args.extend), args.cap)
        if not sweep.trials:
            print(f"sweep {args.extend}: no run was still training at its cap; nothing to run")
            return
        ids.append(args.extend)
    elif args.cap is not None:
        sweep = with_cap(sweep, args.cap)
    sweep_id = run_into_store(sweep, db)
    ids.append(sweep_id)
    with RunStore(db) as store:
        print(budget_table(store, ids, args.margin), flush=True)
    again = " ".join(f"--sweep {i}" for i in ids)
    print(f"\n(stored: python benchmarks/cmru_budget.py --from-db {db} {again})")
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
