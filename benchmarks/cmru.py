"""BMRU / CMRU / αCMRU vs LRU and minGRU at equal parameter counts
(``docs/algorithms.md#cmru``), plus a noise table.

Tasks: copy-first-input, 3-bit flip-flop (per-step targets) and delayed recall with
distractors at T = 100; delayed recall at T = 1000 (the CPU budget buys one T = 1000 task
trained long enough to converge, rather than three undertrained ones); sequential digits
(T = 64, pixels standardized with training-split statistics, 32-dim sinusoidal positional
encoding concatenated after the input Linear — without it an input-gated latch or
counter fed one pixel per step cannot tell *where* a pixel was, and at init only ~6 % of its
units had input-dependent gates). Models: one pre-norm residual block (d_model 16, GLU-MLP ×2,
no dropout, last-step readout) around each cell; the CMRU has 16 memory units and every other
cell gets the state size that matches its parameter count (printed). Baseline inits for long
memory: LRU ring |λ| ∈ [0.9, 0.999], phase ≤ π/10 (Orvieto et al. 2023); minGRU chrono gate
bias with timescales up to T (Tallec & Ollivier 2018). Training: AdamW (β₂ 0.99, wd 1e-4,
none on recurrent parameters), lr 5e-3 cosine to 1 % (lr 1e-2 left CMRU at chance on a
digits validation split, 2e-3 was no better than 5e-3), clip 1.0; T = 100: batch 64, ≤ 400
steps; T = 1000: batch 32, ≤ 300 steps; digits: batch 64, ≤ 600 steps; a run stops early
once its mean mini-batch accuracy over 20 steps reaches 0.99. Full run: 737 s (12 min) wall
on a 2-core machine shared with one other job, one thread (two seed processes in parallel
were measured to take twice as long each there, so the runs are sequential).

Convergence criterion: test accuracy ≥ 0.95 on the retention tasks (flip-flop: per-step bit
accuracy), ≥ 0.80 on sequential digits, and not collapsed: a run whose test predictions are
≥ 90 % one class (a constant predictor) is printed ``[k/n collapsed]`` beside its mean and
never counts as converged. Steps-to-converge per seed: first step after which the 20-step
mean mini-batch accuracy stays ≥ the threshold. Memory-unit diagnostics every 25 steps
(units switching on every blank step, mean |s_T|, cell-gradient norm), and length
generalisation: the T = 100 models tested on fresh sequences of 2T and 10T. The T = 1000
budget question is ``benchmarks/cmru_budget.py``'s. Noise tables: the delayed-recall (T = 100) models of
every seed and the flip-flop (T = 100) models, evaluated with Gaussian noise on the candidate
(std relative to its RMS) and on every weight matrix (std relative to the matrix's max |w|),
mean over 3 draws.

Run: ``python benchmarks/cmru.py`` (``--quick``: T ∈ {20, 50}, 2 seeds, 60 steps, < 1 min).
The last row runs ``examples/experiments/cmru_copy_first.yaml`` through the experiment
runner: ``--backend mock_lab=examples/mock_station.yaml`` (or ``sim``, ``station=...``)
moves it, ``--db runs.db`` keeps it as a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from experiment_runs import add_run_options, run_example  # benchmarks/experiment_runs.py

from memhil.algorithms.cmru.backbone import (
    RecurrentBackbone,
    build_cell,
    count_parameters,
    state_size_for_budget,
)
from memhil.algorithms.cmru.deploy import noise_robustness
from memhil.algorithms.cmru.training import TrainConfig, evaluate, summarize_predictions, train
from memhil.algorithms.metrics import format_accuracy, steps_to_converge
from memhil.datasets import (
    copy_first_input,
    delayed_recall,
    flip_flop,
    sequential_digits,
    standardize,
)

MODELS = {
    "BMRU": "bmru",
    "CMRU": "cmru",
    "aCMRU": "acmru_learned",
    "LRU": "lru",
    "minGRU": "mingru",
}
D_MODEL, D_STATE_REF, MLP_RATIO = 16, 16, 2
MEMORY_UNITS = ("bmru", "cmru", "acmru_learned")
DIAGNOSTICS_EVERY = 25  # steps between diagnostics records (one extra scan of the batch)
LENGTH_TASKS, LENGTH_FACTORS = ("copy", "flipflop", "recall"), (2, 10)
DIGITS_POSITIONAL_DIMS = 32


@dataclass
class Setting:
    task: str
    seq_len: int
    batch_size: int
    steps: int
    threshold: float


def make_data(task: str, seq_len: int, n_train: int, n_test: int, seed: int):
    if task == "copy":
        return copy_first_input(seq_len, n_train=n_train, n_test=n_test, seed=seed)
    if task == "flipflop":
        return flip_flop(seq_len, n_train=n_train, n_test=n_test, seed=seed)
    if task == "recall":
        return delayed_recall(seq_len, n_train=n_train, n_test=n_test, seed=seed)
    return standardize(sequential_digits(permuted=False, seed=seed))


def build_model(kind: str, data, d_state: int, seed: int, task: str) -> RecurrentBackbone:
    """The shared backbone around ``kind``; minGRU timescales up to the sequence length,
    positional encoding on the pixel-by-pixel digits."""
    per_step = data.train.y.dim() == 3
    n_out = data.train.y.shape[-1] if per_step else data.n_classes
    readout = "all" if per_step else "last"
    seq_len = data.train.x.shape[1]
    return RecurrentBackbone(
        data.n_features,
        n_out,
        cell=kind,
        d_model=D_MODEL,
        d_state=d_state,
        mlp_ratio=MLP_RATIO,
        dropout=0.0,
        readout=readout,
        seed=seed,
        positional_dims=DIGITS_POSITIONAL_DIMS if task == "digits" else 0,
        mingru_max_timescale=max(float(seq_len), 3.0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/out/cmru")
    add_run_options(ap)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()
    if args.quick:
        settings = [
            Setting(t, n, 16, 60, 0.95) for n in (20, 50) for t in ("copy", "flipflop", "recall")
        ]
        settings.append(Setting("digits", 64, 16, 60, 0.80))
        seeds, n_train, n_test = args.seeds or 2, 256, 128
    else:
        settings = [Setting(t, 100, 64, 400, 0.95) for t in ("copy", "flipflop", "recall")]
        settings.append(Setting("recall", 1000, 32, 300, 0.95))
        settings.append(Setting("digits", 64, 64, 600, 0.80))
        seeds, n_train, n_test = args.seeds or 5, 1000, 256

    ref_cell = count_parameters(build_cell("cmru", D_MODEL, D_STATE_REF))
    d_states = {
        name: state_size_for_budget(kind, D_MODEL, ref_cell) for name, kind in MODELS.items()
    }
    print(
        f"one block, d_model {D_MODEL}, GLU-MLP x{MLP_RATIO}; state sizes at equal cell budgets "
        f"(CMRU cell: {ref_cell} parameters): " + ", ".join(f"{k} {v}" for k, v in d_states.items())
    )
    print(f"{seeds} seeds; converged = test accuracy >= threshold; torch threads 1\n")
    noise_tasks = ("recall", "flipflop")
    rows = []
    noise_models = {task: {name: [] for name in MODELS} for task in noise_tasks}
    header = f"{'task':<10}{'T':>5}  {'model':<7}{'params':>7}  {'test acc (mean ± sd)':<30}{'conv.':>6}  {'steps':>6}"
    header += "  steps-to-converge per seed"
    print(header)
    print("-" * len(header))
    for st in settings:
        data = make_data(st.task, st.seq_len, n_train, n_test, seed=0)
        for name, kind in MODELS.items():
            accs, steps, params, preds, diags, to_conv, longer = [], [], 0, [], [], [], []
            for seed in range(seeds):
                model = build_model(kind, data, d_states[name], seed, st.task)
                params = count_parameters(model)
                cfg = TrainConfig(
                    steps=st.steps,
                    batch_size=st.batch_size,
                    lr=5e-3,
                    seed=seed,
                    stop_accuracy=0.99,
                    eval_train=False,
                    diagnostics_every=DIAGNOSTICS_EVERY if kind in MEMORY_UNITS else 0,
                )
                result = train(model, data.train, cfg, data.test)
                assert result.test_predictions is not None  # a test split was given
                accs.append(result.test_accuracy)
                steps.append(result.steps)
                preds.append(result.test_predictions.as_dict())
                diags.append(result.diagnostics)
                to_conv.append(_steps_to_converge(result.batch_accuracies, st.threshold))
                if st.task in LENGTH_TASKS and st.seq_len == settings[0].seq_len:
                    longer.append(_length_generalisation(model, st, n_test))
                if st.task in noise_tasks and st.seq_len == settings[0].seq_len:
                    noise_models[st.task][name].append((model, data.test))
            collapsed = [p["collapsed"] for p in preds]
            # a collapsed run (constant predictor) never counts as converged
            conv = sum(a >= st.threshold and not c for a, c in zip(accs, collapsed)) / len(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            row = {
                "task": st.task,
                "T": st.seq_len,
                "model": name,
                "params": params,
                "acc": accs,
                "mean": statistics.mean(accs),
                "sd": sd,
                "converged": conv,
                "steps": steps,
                "steps_to_converge": to_conv,
                "collapsed": collapsed,
                "predictions": preds,
                "diagnostics": diags,
                "length_generalisation": longer,
            }
            rows.append(row)
            acc = format_accuracy(row["mean"], sd, sum(collapsed), len(accs))
            print(
                f"{st.task:<10}{st.seq_len:>5}  {name:<7}{params:>7}  "
                f"{acc:<30}{conv:>6.2f}  {statistics.mean(steps):>6.0f}  "
                + " ".join("-" if c is None else str(c) for c in to_conv),
                flush=True,
            )

    _print_length_generalisation(rows)
    _print_diagnostics(rows)

    cand_stds, weight_stds = (0.0, 0.1, 0.3, 1.0), (0.0, 0.02, 0.05, 0.1)
    noise = {}
    for task in noise_tasks:
        print(
            f"\nnoise table: {task} T={settings[0].seq_len} models, mean test accuracy over "
            f"{seeds} seeds x 3 draws (c: candidate noise / RMS, w: weight noise / max|w|)"
        )
        head = (
            f"{'model':<8}"
            + "".join(f"{'c ' + str(s):>8}" for s in cand_stds)
            + "   "
            + "".join(f"{'w ' + str(s):>8}" for s in weight_stds)
        )
        print(head)
        print("-" * len(head))
        noise[task] = {}
        for name, entries in noise_models[task].items():
            tables = [
                noise_robustness(
                    m, split, candidate_stds=cand_stds, weight_stds=weight_stds, n_draws=3, seed=k
                )
                for k, (m, split) in enumerate(entries)
            ]
            mean = {key: statistics.mean(t[key] for t in tables) for key in tables[0]}
            noise[task][name] = {f"{k[0]}:{k[1]}": v for k, v in mean.items()}
            print(
                f"{name:<8}"
                + "".join(f"{mean[('candidate', s)]:>8.3f}" for s in cand_stds)
                + "   "
                + "".join(f"{mean[('weight', s)]:>8.3f}" for s in weight_stds),
                flush=True,
            )

    # the same recipe as an experiment run: trained in float, projections programmed on a chip
    print("\nexperiment run (memory-unit projections deployed by program-and-verify):")
    quick = {"train": {"epochs": 1}, "deploy": {"max_iterations": 10}} if args.quick else {}
    _, _, line = run_example("cmru_copy_first", backend=args.backend, db=args.db, **quick)
    print(line, flush=True)

    wall = time.time() - t_start
    print(f"\nwall time {wall:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("results_quick.json" if args.quick else "results.json")).write_text(
        json.dumps({"rows": rows, "noise": noise, "d_states": d_states, "wall_s": wall}, indent=1)
    )
    _plot(rows, out / ("accuracy_quick.png" if args.quick else "accuracy.png"))


def _steps_to_converge(batch_accuracies: list[float], threshold: float) -> int | None:
    """First step after which the 20-step mean mini-batch accuracy stays >= ``threshold``."""
    return steps_to_converge(batch_accuracies, target=1.0, margin=1.0 - threshold, window=20)


def _length_generalisation(model: RecurrentBackbone, st: Setting, n_test: int) -> dict[str, float]:
    """Test accuracy of a model trained at T on fresh test sequences of 2T and 10T (the
    same generator; the cue window and flip rate scale with T as the generator defines)."""
    out: dict[str, float] = {}
    for factor in LENGTH_FACTORS:
        split = _test_split(st.task, factor * st.seq_len, n_test)
        out[f"{factor}T"] = evaluate(model, split, batch_size=64)
        out[f"{factor}T_collapsed"] = float(summarize_predictions(model, split).collapsed)
    return out


_TEST_SPLITS: dict[tuple[str, int, int], object] = {}


def _test_split(task: str, seq_len: int, n_test: int):
    """A test split of ``task`` at ``seq_len`` (generated once per length)."""
    key = (task, seq_len, n_test)
    if key not in _TEST_SPLITS:
        _TEST_SPLITS[key] = make_data(task, seq_len, 2, n_test, seed=1).test
    return _TEST_SPLITS[key]


def _print_length_generalisation(rows: list[dict]) -> None:
    """Train at T, test at 2T and 10T (mean ± sd over seeds)."""
    rows = [r for r in rows if r["length_generalisation"]]
    if not rows:
        return
    print(
        "\nlength generalisation: trained at T, tested at "
        + ", ".join(f"{f}T" for f in LENGTH_FACTORS)
    )
    head = f"{'task':<10}{'T':>5}  {'model':<7}  {'at T':<30}" + "".join(
        f"{f'at {f}T':<30}" for f in LENGTH_FACTORS
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for f in LENGTH_FACTORS:
            v = [g[f"{f}T"] for g in r["length_generalisation"]]
            n_coll = int(sum(g[f"{f}T_collapsed"] for g in r["length_generalisation"]))
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(format_accuracy(statistics.mean(v), sd, n_coll, len(v)))
        at_t = format_accuracy(r["mean"], r["sd"], sum(r["collapsed"]), len(r["collapsed"]))
        print(
            f"{r['task']:<10}{r['T']:>5}  {r['model']:<7}  {at_t:<30}"
            + "".join(f"{c:<30}" for c in cells),
            flush=True,
        )


def _print_diagnostics(rows: list[dict]) -> None:
    """Memory units: units switching on every blank step and mean |s_T| at the first and the
    last recorded training step, largest cell-gradient norm, steps-to-converge per seed."""
    rows = [r for r in rows if any(r["diagnostics"])]
    if not rows:
        return
    print(
        "\nmemory-unit diagnostics (mean over seeds; first -> last recorded step): units switching"
        " on every blank step, mean |s_T|, max cell-gradient norm; steps-to-converge per seed"
    )
    head = f"{'task':<10}{'T':>5}  {'model':<7}{'blank units':>14}{'|s_T|':>16}{'grad cell':>11}  steps-to-converge"
    print(head)
    print("-" * len(head))
    for r in rows:
        d = [seed for seed in r["diagnostics"] if seed]

        def ends(key: str, d: list[list[dict]] = d) -> str:
            a = statistics.mean(s[0].get(key, float("nan")) for s in d)
            b = statistics.mean(s[-1].get(key, float("nan")) for s in d)
            return "-" if a != a else f"{a:.1f} -> {b:.1f}"  # NaN: the task has no blank steps

        grad = max(x.get("grad_norm_cell", 0.0) for s in d for x in s)
        conv = " ".join("-" if c is None else str(c) for c in r["steps_to_converge"])
        print(
            f"{r['task']:<10}{r['T']:>5}  {r['model']:<7}{ends('units_switching_every_blank'):>14}"
            f"{ends('abs_s_T_mean'):>16}{grad:>11.2g}  {conv}",
            flush=True,
        )


def _plot(rows: list[dict], path: Path) -> None:
    """Mean test accuracy per task and model (bars) with every seed (dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["task"], r["T"]) for r in rows}, key=lambda g: (g[1], g[0]))
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 3.5))
    width = 0.8 / len(MODELS)
    for j, name in enumerate(MODELS):
        for i, g in enumerate(groups):
            r = next(r for r in rows if (r["task"], r["T"]) == g and r["model"] == name)
            x = i + (j - len(MODELS) / 2 + 0.5) * width
            ax.bar(x, r["mean"], width, color=f"C{j}", label=name if i == 0 else None)
            ax.plot([x] * len(r["acc"]), r["acc"], "k.", ms=3)
    ax.set_xticks(range(len(groups)), [f"{t}\nT={n}" for t, n in groups])
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, ncol=len(MODELS))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
