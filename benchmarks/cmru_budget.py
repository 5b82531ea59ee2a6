"""Budget study for the memory units on delayed recall at long T (``docs/algorithms.md#cmru``):
does the step budget decide the ranking?

Each model (BMRU, CMRU, αCMRU with learned ε, the backbone and recipe of
``benchmarks/cmru.py``) is trained per seed at every budget of ``--budgets`` (each the
double of the one before; the cosine schedule spans the budget, early stop once the mean
mini-batch accuracy over 20 steps reaches 0.99). The table gives the test accuracy
(mean ± sd, collapsed runs flagged: one class takes >= 90 % of the test predictions), the
steps-to-converge of every seed (first step after which the 20-step mean mini-batch accuracy
stays >= 0.95; "-" when it never does) and whether doubling the budget changed the model's
mean accuracy by more than ``--margin``. ``--curriculum N`` first trains N steps at T = 100
(same recipe), then at the long T for the budget (the unchanged-budget option of the
papers' length curriculum). Diagnostics (units switching on every blank step, |s_T|) at
the first and last recorded step show the plateau's cause.

Run: ``python benchmarks/cmru_budget.py --seq-len 1000 --budgets 300,600,1200 --seeds 5``
(``--quick``: T = 50, budgets 10,20, 1 seed, a smoke run). Results append to
``benchmarks/out/cmru_budget/<tag>.json`` after every run, so a partial study survives.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from cmru import D_MODEL, D_STATE_REF, MODELS, build_model, make_data  # benchmarks/cmru.py

from memhil.algorithms.cmru.backbone import build_cell, count_parameters, state_size_for_budget
from memhil.algorithms.cmru.training import TrainConfig, train
from memhil.algorithms.metrics import format_accuracy, steps_to_converge

CONVERGED_BATCH_ACCURACY = 0.95  # the retention tasks' threshold in benchmarks/cmru.py
WINDOW = 20


def run_one(name: str, seq_len: int, budget: int, seed: int, args, data, data_short) -> dict:
    """Train one model and seed at one budget; the row of the results file."""
    kind = MODELS[name]
    ref = count_parameters(build_cell("cmru", D_MODEL, D_STATE_REF))
    model = build_model(kind, data, state_size_for_budget(kind, D_MODEL, ref), seed, "recall")
    t0 = time.time()
    pre_steps = 0
    if args.curriculum:
        cfg = TrainConfig(
            steps=args.curriculum,
            batch_size=args.batch_size,
            lr=5e-3,
            seed=seed,
            stop_accuracy=0.99,
            eval_train=False,
        )
        pre_steps = train(model, data_short.train, cfg).steps
    cfg = TrainConfig(
        steps=budget,
        batch_size=args.batch_size,
        lr=5e-3,
        seed=seed,
        stop_accuracy=0.99,
        eval_train=False,
        diagnostics_every=args.diagnostics_every,
    )
    res = train(model, data.train, cfg, data.test)
    assert res.test_predictions is not None  # a test split was given
    conv = steps_to_converge(
        res.batch_accuracies, target=1.0, margin=1.0 - CONVERGED_BATCH_ACCURACY, window=WINDOW
    )
    return {
        "model": name,
        "T": seq_len,
        "budget": budget,
        "seed": seed,
        "curriculum_steps": pre_steps,
        "steps": res.steps,
        "steps_to_converge": conv,
        "acc": res.test_accuracy,
        **res.test_predictions.as_dict(),
        "diagnostics": res.diagnostics,
        "wall_s": time.time() - t0,
    }


def report(rows: list[dict], margin: float) -> None:
    """Per model and budget: accuracy with collapse flags, steps-to-converge per seed, and the
    change of the mean accuracy against the previous (half) budget."""
    head = f"{'model':<7}{'budget':>7}  {'test acc (mean ± sd)':<34}{'Δ vs B/2':>9}  steps-to-converge per seed"
    print(head)
    print("-" * len(head))
    for name in dict.fromkeys(r["model"] for r in rows):
        prev = None
        for budget in sorted({r["budget"] for r in rows if r["model"] == name}):
            rs = sorted(
                (r for r in rows if r["model"] == name and r["budget"] == budget),
                key=lambda r: r["seed"],
            )
            accs = [r["acc"] for r in rs]
            mean = statistics.mean(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            n_coll = sum(r["collapsed"] for r in rs)
            delta = (
                ""
                if prev is None
                else f"{mean - prev:+.3f}{'*' if abs(mean - prev) > margin else ''}"
            )
            conv = " ".join(
                "-" if r["steps_to_converge"] is None else str(r["steps_to_converge"]) for r in rs
            )
            acc = format_accuracy(mean, sd, n_coll, len(rs)) + f" (n={len(rs)})"
            print(f"{name:<7}{budget:>7}  {acc:<34}{delta:>9}  {conv}", flush=True)
            prev = mean
    if len({r["budget"] for r in rows}) > 1:
        print(f"* doubling the budget moved the mean accuracy by more than the margin {margin}")


def report_files(paths: list[Path], margin: float) -> None:
    """The table of several results files (e.g. seeds run in parallel processes), one table
    per curriculum setting."""
    merged: dict[tuple, dict] = {}
    for path in paths:
        for r in json.loads(path.read_text())["rows"]:
            merged[(r["model"], r["T"], r["budget"], r["seed"], r["curriculum_steps"] > 0)] = r
    for curriculum in (False, True):
        rows = [r for k, r in merged.items() if k[-1] == curriculum]
        if rows:
            print(f"\n{'with' if curriculum else 'without'} the T = 100 curriculum:")
            report(rows, margin)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--budgets", default="300,600,1200", help="comma-separated, each 2x the last")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--models", default="CMRU,BMRU,aCMRU")
    ap.add_argument("--curriculum", type=int, default=0, help="steps at T = 100 first (0: none)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--margin", type=float, default=0.02, help="largest accepted Δ mean accuracy")
    ap.add_argument("--diagnostics-every", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/out/cmru_budget")
    ap.add_argument(
        "--report",
        nargs="+",
        metavar="JSON",
        help="print the table of stored results files (rows merged; a run once per model, "
        "budget, seed and curriculum) instead of training",
    )
    args = ap.parse_args()
    if args.report:
        report_files([Path(p) for p in args.report], args.margin)
        return
    if args.quick:
        args.seq_len, args.budgets, args.seeds, args.batch_size = 50, "10,20", 1, 16
        args.curriculum = min(args.curriculum, 20)
    budgets = [int(b) for b in args.budgets.split(",")]
    if any(b2 != 2 * b1 for b1, b2 in zip(budgets, budgets[1:], strict=False)):
        raise SystemExit(f"--budgets {args.budgets}: each budget must double the one before")
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown} (known: {', '.join(MODELS)})")
    torch.set_num_threads(1)
    n_train, n_test = (256, 128) if args.quick else (1000, 256)
    data = make_data("recall", args.seq_len, n_train, n_test, seed=0)
    short_len = min(100, args.seq_len)
    data_short = (
        make_data("recall", short_len, n_train, n_test, seed=0) if args.curriculum else None
    )
    # one file per invocation: processes run side by side never share one
    tag = f"T{args.seq_len}_{'-'.join(names)}_B{'-'.join(map(str, budgets))}"
    tag += f"_curriculum{args.curriculum}" if args.curriculum else ""
    tag += f"_seeds{args.first_seed}-{args.first_seed + args.seeds - 1}"
    tag += "_quick" if args.quick else ""
    out = Path(args.out) / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"delayed recall T = {args.seq_len}, batch {args.batch_size}, budgets {budgets}, "
        f"{args.seeds} seed(s) from {args.first_seed}"
        + (
            f", curriculum: {args.curriculum} steps at T = {short_len} first"
            if args.curriculum
            else ""
        )
    )
    rows: list[dict] = []
    for name in names:
        for budget in budgets:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                row = run_one(name, args.seq_len, budget, seed, args, data, data_short)
                rows.append(row)
                d0, d1 = (
                    (row["diagnostics"][0], row["diagnostics"][-1])
                    if row["diagnostics"]
                    else ({}, {})
                )
                print(
                    f"  {name} B={budget} seed {seed}: acc {row['acc']:.3f}"
                    f"{' COLLAPSED' if row['collapsed'] else ''} histogram {row['histogram']}, "
                    f"{row['steps']} steps (converged at {row['steps_to_converge']})"
                    + (f" after {row['curriculum_steps']} at T = 100" if args.curriculum else "")
                    + ", "
                    f"units switching every blank {d0.get('units_switching_every_blank', float('nan')):.1f}"
                    f" -> {d1.get('units_switching_every_blank', float('nan')):.1f}, "
                    f"mean |s_T| {d0.get('abs_s_T_mean', float('nan')):.0f} -> "
                    f"{d1.get('abs_s_T_mean', float('nan')):.0f}, {row['wall_s']:.0f} s",
                    flush=True,
                )
                out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print()
    report(rows, args.margin)


if __name__ == "__main__":
    main()
