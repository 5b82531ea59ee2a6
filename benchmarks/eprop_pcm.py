"""e-prop on PCM crossbars: update schemes x seeds, every number read back from stored runs.

Runs sweep files of ``examples/sweeps/`` over ``examples/experiments/eprop_pcm.yaml`` (a
50-input, 50-neuron LIF network learning srnn-pcm's pattern task with its three weight
matrices on Nandakumar-PCM pairs of the simulator) through ``memhil.sweeps.run_sweep``
into a run store, then prints each table from the store with ``sweep_table_text`` (store +
sweep id -> table), so ``--from-db DB --sweep ID`` reprints it without training. Loss:
``train_loss``, the MSE per step of the three trained patterns after training, read on the
devices (``_float``: the same weights read back, in float); "x float" divides by float
e-prop's loss (the float row of the schemes sweep): seed by seed, mean ± sd, then the
ratio of the mean losses ("means"); "stuck" counts seeds not below 90 % of the zero-output MSE
(silent, or run away: nothing learned); pulses are those of training (after the initial
RESETs, response measurement and weights).

CPU time (one core, this process at nice 5 on a 2-core box at load 3, wall ~1.5x the CPU):
a 60-epoch trial with one pair per weight costs ~12 s of CPU (5 min 20 s for the first 28
trials of ``--ablation --schemes ideal mixed_precision stochastic sign``). The budget is 60
epochs (180 updates): doubling it to 120 moves float e-prop's mean train MSE by -21 %
(0.0424 -> 0.0335) and mixed precision's by -28 % (0.0491 -> 0.0353), inside the spread over
seeds (float's sd 0.0126), one seed of each getting worse and the ranking unchanged:

    python benchmarks/eprop_pcm.py              # 5 schemes x 5 seeds, 60 epochs: ~4 min of
                                                # CPU without multi (4 pairs per weight, ~5x a
                                                # trial: not re-timed at this budget)
    python benchmarks/eprop_pcm.py --ablation   # + PCM ablation, transfer threshold, w_max
                                                # (55 trials, ~11 min)
    python benchmarks/eprop_pcm.py --search     # + the held-out searches, one or two per scheme
                                                # (float 20 + 28, mixed precision 28 + 20 trials
                                                # at 60 epochs, ~20 min; the others at 20 epochs)
    python benchmarks/eprop_pcm.py --sweeps eprop_pcm_search_mixed_precision  # one file only
    python benchmarks/eprop_pcm.py --full       # srnn-pcm's size: 100 x 100, 1 s sequences,
                                                # 60 epochs, the same hyperparameters (~8x the CPU)
    python benchmarks/eprop_pcm.py --quick      # smoke run: 10 x 10 network, 2 epochs, 2 seeds
    python benchmarks/eprop_pcm.py --from-db benchmarks/out/eprop_pcm/runs.db --sweep 1 [ID ...]
    python benchmarks/eprop_pcm.py --jobs 2     # trials on a local Ray of 2 CPUs (default: inline)
    python benchmarks/eprop_pcm.py --epochs 120 --schemes ideal mixed_precision  # budget doubled

``--backend sim|mock_lab=STATION.yaml|station=BENCH.yaml`` runs the trials there instead
(each network must fit the chip: the pre-flight refuses otherwise, in one line).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from experiment_runs import parse_backend  # benchmarks/experiment_runs.py

from memhil.core.errors import ConfigError, LimitError
from memhil.runs.experiment_run import META_EXPERIMENT
from memhil.store import RunStore
from memhil.sweeps import run_sweep
from memhil.sweeps.results import sweep_definition, sweep_trials

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "examples" / "sweeps"
SCHEMES = "eprop_pcm_schemes"
ABLATIONS = ("eprop_pcm_ablation", "eprop_pcm_threshold", "eprop_pcm_wmax")
SEARCHES = tuple(
    f"eprop_pcm_search_{s}"
    for s in (
        *("float", "float_wmax", "mixed_precision", "mixed_precision_fine"),
        *("stochastic", "sign", "multi"),
    )
)
# sizes set on top of each sweep (grid keys of one value, so the stored trials say them)
QUICK = {
    "dataset.n_in": 10,
    "dataset.steps": 100,
    "model.n_rec": 10,
    "train.epochs": 2,
    "backend.sim.rows": 10,
}
FULL = {
    "dataset.n_in": 100,
    "dataset.steps": 1000,
    "model.n_rec": 100,
    "train.epochs": 60,
    "backend.sim.rows": 100,
}
STUCK = 0.9  # a seed whose loss is not below 90 % of the zero-output MSE learned nothing


# -- running ---------------------------------------------------------------------------------
def derived_sweep(
    name: str,
    out_dir: Path,
    *,
    fixed: dict[str, Any],
    seeds: list[int] | None = None,
    schemes: Sequence[str] | None = None,
) -> Path:
    """``examples/sweeps/<name>.yaml`` with ``fixed`` keys added as one-value grid axes
    (first, so the file's own keys apply after them), its seeds and its ``model`` entries
    optionally narrowed; written to ``out_dir`` (kept beside the store: the sweep as run)."""
    data = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    data["base"] = str((SWEEPS / data["base"]).resolve())
    grid = dict(data.get("grid") or {})
    if "backend" in fixed:  # another backend: the simulator's own keys do not apply
        grid = {k: v for k, v in grid.items() if not k.startswith("backend.sim.")}
    if "model.n_rec" in fixed and "model" in grid:  # whole model entries carry n_rec
        grid["model"] = [{**m, "n_rec": fixed["model.n_rec"]} for m in grid["model"]]
    if schemes is not None and "model" in grid:
        grid["model"] = [m for m in grid["model"] if m["scheme"] in schemes]
    if "backend.sim.cols" in grid and "model.n_rec" in fixed:  # 2 x 4 pairs x neurons
        grid["backend.sim.cols"] = [8 * fixed["model.n_rec"]]
    extra = {k: [v] for k, v in fixed.items() if not (k == "model.n_rec" and "model" in grid)}
    if "backend.sim.cols" not in grid and "backend.sim.rows" in fixed:  # one pair per weight
        extra["backend.sim.cols"] = [2 * fixed["model.n_rec"]]
    if "backend" in fixed:  # set first; no simulator keys below it
        extra = {"backend": [fixed["backend"]]} | {
            k: v for k, v in extra.items() if not k.startswith("backend.")
        }
    data["grid"] = {**extra, **{k: v for k, v in grid.items() if k not in extra}}
    if seeds is not None:
        data["seeds"] = seeds
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (f"{name}.yaml" if schemes is None else f"{name}-{'-'.join(schemes)}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(path: Path, db: Path, jobs: int = 1) -> int:
    """Run one sweep file into ``db``: ``jobs`` = 1 inline (trials one after the other in
    this process), else on a local Ray instance of ``jobs`` CPUs (as ``memhil sweep FILE``
    does); returns the sweep id."""
    if jobs <= 1:
        out = run_sweep(path, db=db, executor="inline", progress=False)
    else:
        out = run_sweep(path, db=db, num_cpus=jobs, progress=False)
    for trial, err in out.failed.items():
        print(f"  trial {trial} failed: {err}", file=sys.stderr)
    return out.sweep_id


# -- tables from the store ------------------------------------------------------------------------
def _short(key: str, value: Any) -> str:
    """A row label for one axis value: the scheme of a model entry, the changes of a device
    entry from Nandakumar PCM, else ``key=value``."""
    if key == "model" and isinstance(value, dict):
        n = value.get("n_devices", 1)
        name = "float" if value["scheme"] == "ideal" else value["scheme"]
        return name + (f" x{n}" if n > 1 else "")
    if key.endswith("device") and isinstance(value, dict):
        changed = {k: v for k, v in value.items() if k != "model"}
        if not changed:
            return "Nandakumar PCM"
        if set(changed) == {"nu"}:
            return "drift off"
        if set(changed) == {"m2", "c2_s", "a2_s"}:
            off = all(v == 0 for v in changed.values())
            return "prog. noise off" if off else f"prog. noise x{changed['m2'] / 0.091:.2g}"
        if set(changed) == {"m3", "c3_s"} and not any(changed.values()):
            return "read noise off"
        if set(changed) == {"m1", "c1_s", "a1_s", "m2", "c2_s", "a2_s"}:
            return f"granularity x{changed['c1_s'] / 0.88e-6:.2g}"
        if all(v == 0 for v in changed.values()):
            return "all noise + drift off"
        if changed.get("m1") == 0 and changed.get("a1_s") == 0:
            return f"linear {changed['c1_s'] * 1e6:g} uS, quiet"
        return ", ".join(f"{k}={v:g}" for k, v in changed.items())
    leaf = key.rsplit(".", 1)[-1]
    return f"{leaf}={value:.3g}" if isinstance(value, float) else f"{leaf}={value}"


def _zero_output_mse(dataset: dict[str, Any]) -> float:
    """MSE of a silent network on the training patterns (the loss it starts from)."""
    from memhil.datasets import pattern_generation

    task = pattern_generation(**{k: v for k, v in dataset.items() if k != "name"})
    return float((task.train.y**2).mean())


def _plain(value: Any) -> str:
    """An axis value as its YAML would read (numpy scalars as plain numbers)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def _float_by_seed(store: RunStore, sweep_ids: Sequence[int]) -> dict[int, float]:
    """train_loss of float e-prop per seed, from a schemes sweep among ``sweep_ids``."""
    for sid in sweep_ids:
        trials = sweep_trials(store, sid)
        if "model" not in trials:
            continue
        done = trials[trials["status"] == "completed"]
        rows = done[[isinstance(m, dict) and m["scheme"] == "ideal" for m in done["model"]]]
        if len(rows):
            return {int(s): float(v) for s, v in zip(rows["seed"], rows["train_loss"])}
    return {}


def sweep_table_text(
    store: RunStore, sweep_id: int, float_by_seed: dict[int, float] | None = None
) -> str:
    """The printed table of sweep ``sweep_id``, built from its stored runs only: one row per
    point of its varying axes (one-value axes go into the header, with the budget), loss on
    the devices and in float as mean ± sd over the seeds, x float (per seed), stuck seeds,
    SET/RESET pulses. ``float_by_seed``: float e-prop's loss per seed (default: this
    sweep's own float row, if any)."""
    definition = sweep_definition(store, sweep_id)
    trials = sweep_trials(store, sweep_id)
    done = trials[trials["status"] == "completed"]
    if done.empty:
        return f"sweep {sweep_id} ({definition['name']}): no completed trial"
    axes = list(definition.get("axes") or [])
    values = {a: {repr(v) for v in done[a]} for a in axes}
    varying = [a for a in axes if len(values[a]) > 1 or a == "model"]  # a scheme names its row
    config = store.metadata(int(done["run_id"].iloc[0]))[META_EXPERIMENT]
    ds, train = config["dataset"], config["train"]
    updates = train["epochs"] * math.ceil(ds["n_train"] / train.get("batch_size", 1))
    zero = _zero_output_mse(ds)
    refs = float_by_seed if float_by_seed is not None else _float_by_seed(store, [sweep_id])
    seeds = sorted({int(s) for s in done["seed"]})
    fixed = [f"{a}={_plain(done[a].iloc[0])}" for a in axes if a not in varying]
    lines = [
        f"sweep {sweep_id} ({definition['name']}): {ds['n_in']} inputs, "
        f"{config['model'].get('n_rec', '?')} neurons, {ds['steps']} steps x {ds['n_train']} "
        f"training sequences (task seed {ds.get('seed', 0)}); budget {train['epochs']} epochs "
        f"= {updates} updates; seeds {seeds}; zero-output MSE {zero:.4f}"
        + (f"; fixed: {', '.join(fixed)}" if fixed else ""),
        f"{'arm':<24} {'n':>2} {'train MSE (devices)':>19} {'in float':>17} "
        f"{'x float':>13} {'means':>5} {'stuck':>5} {'train SET':>9} {'RESET':>8}",
    ]
    groups: dict[str, list[Any]] = {}
    for _, row in done.iterrows():
        label = " ".join(_short(a, row[a]) for a in varying) or "all"
        groups.setdefault(label, []).append(row)
    spent = {
        int(r["run_id"]): _training_pulses(store, int(r["run_id"])) for r in done.to_dict("records")
    }
    for label, rows in groups.items():
        loss = [float(r["train_loss"]) for r in rows]
        ratios = [
            float(r["train_loss"]) / refs[int(r["seed"])] for r in rows if int(r["seed"]) in refs
        ]
        ref = [refs[int(r["seed"])] for r in rows if int(r["seed"]) in refs]
        of_means = statistics.fmean(loss) / statistics.fmean(ref) if ref else math.nan
        stuck = sum(v >= STUCK * zero for v in loss)
        lines.append(
            f"{label:<24} {len(rows):>2} {_mean_sd(loss):>19} "
            f"{_mean_sd([float(r['train_loss_float']) for r in rows]):>17} "
            f"{_ratio(ratios):>13} {of_means:>5.2f} {stuck:>5} "
            f"{statistics.fmean(spent[int(r['run_id'])][0] for r in rows):>9.0f} "
            f"{statistics.fmean(spent[int(r['run_id'])][1] for r in rows):>8.0f}"
        )
    return "\n".join(lines)


def _training_pulses(store: RunStore, run_id: int) -> tuple[float, float]:
    """SET and RESET pulses of the training alone: the run's tallies at its end less those
    after ``prepare`` (the RESETs, the response measurement and the initial weights)."""
    df = store.load(run_id)
    tally = df[df["metric"].isin(["set_pulses", "reset_pulses"]) & (df["step"] == -1)]

    def at(phase: str) -> dict[str, float]:
        sel = tally[tally["phase"] == phase]
        return dict(zip(sel["metric"], sel["value"].astype(float)))

    start, end = at("prepare"), at("deploy")
    return tuple(end[k] - start[k] for k in ("set_pulses", "reset_pulses"))  # type: ignore[return-value]


def _ratio(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    sd = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
    return f"{statistics.fmean(ratios):.2f} ± {sd:.2f}"


def search_table_text(store: RunStore, sweep_id: int) -> str:
    """A search sweep's summary from its stored runs: the best point (lowest mean loss over
    the search seeds) with its keys, and the spread of the points' mean losses."""
    definition = sweep_definition(store, sweep_id)
    trials = sweep_trials(store, sweep_id)
    done = trials[trials["status"] == "completed"]
    axes = [a for a in definition.get("axes") or [] if len({repr(v) for v in done[a]}) > 1]
    if done.empty or not axes:
        return f"sweep {sweep_id} ({definition['name']}): nothing to rank"
    by = done.groupby([done[a].map(repr) for a in axes], sort=False)
    means = by["train_loss"].mean().sort_values()
    n_points, worst = len(means), means.iloc[-1]
    best_runs = by.get_group(means.index[0])
    best = best_runs.iloc[0]
    keys = ", ".join(f"{a.rsplit('.', 1)[-1]} {best[a]:.3g}" for a in axes)
    return (
        f"{definition['name']} (sweep {sweep_id}): best of {n_points} points x "
        f"{done['seed'].nunique()} seeds: train MSE {_mean_sd(list(best_runs['train_loss']))} "
        f"({keys}); points' means: median {means.median():.4f}, worst {worst:.4f}"
    )


def print_tables(db: Path, sweep_ids: Sequence[int]) -> None:
    """Every table of ``sweep_ids`` from the store ``db`` (search sweeps as summaries)."""
    with RunStore(db) as store:
        refs = _float_by_seed(store, sweep_ids)
        for sid in sweep_ids:
            name = sweep_definition(store, sid)["name"]
            if "search" in name:
                print(search_table_text(store, sid))
            else:
                print("\n" + sweep_table_text(store, sid, refs or None))


# -- command line ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 x 10, 2 epochs, 2 seeds")
    ap.add_argument("--full", action="store_true", help="srnn-pcm's 100 x 100, 1 s, 60 epochs")
    ap.add_argument("--ablation", action="store_true", help="also the PCM and threshold ablations")
    ap.add_argument("--search", action="store_true", help="also the held-out searches")
    ap.add_argument(
        "--sweeps",
        nargs="+",
        default=None,
        choices=[*SEARCHES, SCHEMES, *ABLATIONS],
        help="run only these sweep files, in this order (instead of the schemes sweep and "
        "the --search/--ablation ones): a search whose pick goes into the schemes sweep",
    )
    ap.add_argument(
        "--schemes", nargs="+", default=None, help="only these schemes (ideal = float e-prop)"
    )
    ap.add_argument(
        "--backend", default=None, type=parse_backend, help="sim, mock_lab=PATH or station=PATH"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    ap.add_argument(
        "--epochs", type=int, default=None, help="override the epochs (a budget doubling: 60)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="trials at once (> 1: on Ray)")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "out" / "eprop_pcm",
        help="folder of the run store and of the sweep files as run",
    )
    ap.add_argument("--db", type=Path, default=None, help="run store (default: OUT/runs.db)")
    ap.add_argument(
        "--from-db", type=Path, default=None, help="reprint from this store, no training"
    )
    ap.add_argument("--sweep", type=int, nargs="+", default=None, help="sweep ids (with --from-db)")
    args = ap.parse_args(argv)
    if args.from_db is not None:
        if not args.sweep:
            ap.error("--from-db needs --sweep ID [ID ...]")
        try:
            print_tables(args.from_db, args.sweep)
        except ConfigError as exc:
            print(f"eprop_pcm: {exc}", file=sys.stderr)
            return 2
        return 0
    torch.set_num_threads(1)
    fixed: dict[str, Any] = dict(QUICK if args.quick else FULL if args.full else {})
    if args.backend is not None:
        fixed["backend"] = args.backend
    if args.epochs is not None:
        fixed["train.epochs"] = args.epochs
    seeds = args.seeds or ([0, 1] if args.quick else None)
    db = args.db or args.out / "runs.db"
    names = ([*SEARCHES] if args.search else []) + [SCHEMES]
    names += list(ABLATIONS) if args.ablation else []
    names = args.sweeps or names
    out_dir = args.out / "sweeps"
    ids = []
    try:
        for name in names:
            path = derived_sweep(name, out_dir, fixed=fixed, seeds=seeds, schemes=args.schemes)
            print(f"running {path} into {db} ...", flush=True)
            ids.append(run(path, db, args.jobs))
    except (ConfigError, LimitError) as exc:  # pre-flight refusals: one line, nothing ran
        print(f"eprop_pcm: {exc}", file=sys.stderr)
        return 2
    print_tables(db, ids)
    print(
        f"\nreprint: python benchmarks/eprop_pcm.py --from-db {db} "
        f"--sweep {' '.join(map(str, ids))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
