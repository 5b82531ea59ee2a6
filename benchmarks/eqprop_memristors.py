"""EqProp with memristor weight updates: test accuracy on Iris across device models and the
resistance ratio R_off / R_on, run as sweeps into a run store and printed from the stored
runs (``docs/algorithms.md#eqprop``, ``docs/sweeps.md``).

A 4-10-3 resistive EqProp network (Scellier & Bengio, Front. Comput. Neurosci. 2017) learns
Iris with its conductances on simulated devices: every step's desired dG becomes pulses
through the nominal model's linearised inverse, the device model decides the realised dG,
and the network reads the conductances back. The sweep files of ``examples/sweeps/``:

    eqprop_memristors.yaml  HP, Joglekar, Biolek, Prodromakis, VTEAM x R_off/R_on (r_off_ohm)
    eqprop_yakopcic.yaml    Yakopcic x its as-fabricated state x0 (window ratio 1 / x0)
    eqprop_ideal.yaml       the same clipped steps held exactly (``deploy.updates: exact``)
    eqprop_iris_seeds.yaml  the example file (2-2-3 on an 8 x 8 chip) over five seeds,
                            on ``--backend`` (sim, or a mock lab: only ``backend:`` changes)

and, opt-in with ``--with``, the rows the in-process script printed before:

    trajectory   eqprop_trajectory.yaml: the grid with ``deploy.inverse: trajectory``
    digits       eqprop_digits.yaml: 64-32-10 on the 8x8 digits, exact and HP updates
    variability  eqprop_variability{,_vteam}.yaml: the grid with every D2D/C2C spread 0

Each runs through ``memhil.sweeps.run_sweep`` into ``--db``; the table (model x ratio, test
accuracy mean ± sd over the seeds, the epochs and network of every row, collapsed runs
flagged, mean update fidelity) is then built from the stored runs by ``table_from_store``,
so ``--from-db DB --sweep ID ...`` reprints it without training.

    python benchmarks/eqprop_memristors.py            # 110 runs of ~8 s: ~8 min on 2 idle cores
    python benchmarks/eqprop_memristors.py --full     # ratios 2, 5, 10, 30, 100, 1000: 215 runs
    python benchmarks/eqprop_memristors.py --quick    # smoke: ratio 10, 2 seeds, 3 epochs
    python benchmarks/eqprop_memristors.py --with trajectory digits variability
    python benchmarks/eqprop_memristors.py --backend mock_lab=examples/mock_hp_station.yaml
    python benchmarks/eqprop_memristors.py --from-db benchmarks/out/eqprop_memristors/runs.db --sweep 1 77 93 109
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from experiment_runs import backend_label, parse_backend  # benchmarks/experiment_runs.py

from memhil.algorithms.eqprop.devices import usable_range
from memhil.core.errors import ConfigError
from memhil.devices import build_device_model
from memhil.store import RunStore
from memhil.sweeps import run_sweep
from memhil.sweeps.results import sweep_definition, sweep_trials

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "examples" / "sweeps"
#: The device grid (simulator) and the example row (``--backend``), in table order.
DEVICE_SWEEPS = ("eqprop_ideal", "eqprop_memristors", "eqprop_yakopcic")
EXAMPLE_SWEEP = "eqprop_iris_seeds"
#: Opt-in rows (``--with``): their sweep files.
EXTRA_SWEEPS = {
    "trajectory": ("eqprop_trajectory",),
    "digits": ("eqprop_digits",),
    "variability": ("eqprop_variability", "eqprop_variability_vteam"),
}
FULL_RATIOS = (2.0, 5.0, 10.0, 30.0, 100.0, 1000.0)
R_ON_OHM = 100.0  # eqprop_iris_memristor.yaml's R_on: r_off_ohm = ratio x R_on
#: The sweep key that sets R_off / R_on in each device sweep, and the value for a ratio.
RATIO_KEYS = {
    "eqprop_memristors": ("backend.sim.device.r_off_ohm", lambda r: r * R_ON_OHM),
    "eqprop_ideal": ("backend.sim.device.r_off_ohm", lambda r: r * R_ON_OHM),
    "eqprop_yakopcic": ("backend.sim.device.x0", lambda r: 1.0 / r),
    "eqprop_trajectory": ("backend.sim.device.r_off_ohm", lambda r: r * R_ON_OHM),
    "eqprop_variability": ("backend.sim.device.r_off_ohm", lambda r: r * R_ON_OHM),
    "eqprop_variability_vteam": ("backend.sim.device.r_off_ohm", lambda r: r * R_ON_OHM),
}
MODEL_ORDER = ("ideal", "hp", "joglekar", "biolek", "prodromakis", "vteam", "yakopcic")


# -- running ------------------------------------------------------------------------------


def derived_sweep(
    name: str,
    out: Path,
    *,
    ratios: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    models: Sequence[str] | None = None,
    epochs: int | None = None,
    backend: Any = None,
) -> Path:
    """``examples/sweeps/<name>.yaml`` with some axes changed (the ratio list, the seeds,
    the models, a fixed epoch count, a backend), written under ``out`` with its base
    resolved, for ``--full``, ``--quick`` and ``--backend``; the shipped file itself when
    nothing changes."""
    src = SWEEPS / f"{name}.yaml"
    if ratios is None and seeds is None and models is None and epochs is None and backend is None:
        return src
    data = yaml.safe_load(src.read_text())
    data["base"] = str((src.parent / data["base"]).resolve())
    grid = data.setdefault("grid", {})
    if ratios is not None and name in RATIO_KEYS:
        key, value = RATIO_KEYS[name]
        grid[key] = [value(r) for r in ratios]
    if models is not None and "backend.sim.device.model" in grid:
        grid["backend.sim.device.model"] = [
            m for m in grid["backend.sim.device.model"] if m in models
        ]
    if epochs is not None:
        grid["train.epochs"] = [epochs]
    if backend is not None:
        grid["backend"] = [backend]
    if seeds is not None:
        data["seeds"] = list(seeds)
    path = out / "sweeps" / src.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_sweeps(
    files: Sequence[Path], db: Path, *, executor: str = "ray", num_cpus: int | None = None
) -> list[int]:
    """Run each sweep file into ``db`` (``memhil.sweeps.run_sweep``); their sweep ids."""
    ids = []
    for path in files:
        outcome = run_sweep(
            path,
            db=db,
            executor=executor,  # type: ignore[arg-type]
            num_cpus=num_cpus,
            progress=sys.stderr.isatty(),
        )
        print(
            f"  sweep {outcome.sweep_id} ({path.name}): {len(outcome.completed)} trial(s) "
            f"completed, {len(outcome.failed)} failed, {outcome.elapsed_s:.0f} s",
            flush=True,
        )
        for trial, err in outcome.failed.items():
            print(f"    trial {trial} failed: {err}", flush=True)
        ids.append(outcome.sweep_id)
    return ids


# -- the table, from the stored runs ------------------------------------------------------


#: Sweep axes the table shows as columns or row fields; any other axis joins the row label.
SHOWN_AXES = {
    "backend.sim.device.model",
    "backend.sim.device.r_off_ohm",
    "backend.sim.device.x0",
    "deploy.updates",
    "train.epochs",
    "backend",
}


def _is_spread(axis: str) -> bool:
    """A device-to-device (``*_dtod``) or cycle-to-cycle (``*_std``) spread of the device."""
    return axis.startswith("backend.sim.device.") and axis.endswith(("_dtod", "_std"))


def _spreads_zero(device: Any) -> bool:
    """True when ``device`` (a stored device mapping) zeroes every D2D and C2C spread of
    its model: the deterministic model (``memristor_device_config(variability=False)``)."""
    if not isinstance(device, dict):
        return False
    params = dataclasses.asdict(build_device_model(device).p)
    spreads = [v for k, v in params.items() if k.endswith(("_dtod", "_std"))]
    return bool(spreads) and all(v == 0 for v in spreads)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_short(v)}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def trial_row(
    store: RunStore, run_id: int, metrics: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """One stored trial as a table entry: its row label (``ideal`` or the device model,
    with the backend when it is no simulator and the ``extra`` axis values), the window
    ratio g_max / g_min the rule used, its budget and network, and its test accuracy,
    collapse flag and mean update fidelity (cosine of realised vs requested dG over the
    epochs)."""
    md = store.metadata(run_id)
    cfg = md["experiment_config"]["resolved"]
    backend = md["experiment_config"].get("backend")
    device = md.get("device_model")
    model_name = str(device.get("model") if isinstance(device, dict) else device)
    exact = cfg["deploy"].get("updates", "devices") == "exact"
    label: str = "ideal" if exact else model_name
    if isinstance(backend, dict) and "sim" not in backend:
        label = f"{label} ({backend_label(backend)})"
    if not exact and _spreads_zero(device):
        label += " no-spread"
        extra = {k: v for k, v in extra.items() if not _is_spread(k)}
    if extra:
        label += " " + " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in extra.items())
    lo, hi = usable_range(device) if device is not None else (math.nan, math.nan)
    g_min = cfg["model"].get("g_min_s") or lo
    g_max = cfg["model"].get("g_max_s") or hi
    points = store.load(run_id)
    cos = points[(points["phase"] == "epoch") & (points["metric"] == "update_cosine")]["value"]
    return {
        "label": label,
        "ratio": float(g_max / g_min),
        "net": "-".join(str(s) for s in cfg["model"]["sizes"]),
        "epochs": int(cfg["train"]["epochs"]),
        "accuracy": float(metrics["accuracy"]),
        "collapsed": bool(metrics.get("collapsed", 0.0)),
        "fidelity": float(cos.mean()) if len(cos) else math.nan,
    }


def stored_rows(db: Path, sweep_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The completed trials of ``sweep_ids`` in ``db`` as ``trial_row`` entries."""
    rows = []
    with RunStore(db) as store:
        for sid in sweep_ids:
            axes = sweep_definition(store, sid).get("axes") or []  # ConfigError: no sweep
            extra_axes = [a for a in axes if a not in SHOWN_AXES]
            trials = sweep_trials(store, sid)
            done = trials[trials["status"] == "completed"]
            for rec in done.to_dict("records"):
                extra = {a: rec[a] for a in extra_axes}
                rows.append(trial_row(store, int(rec["run_id"]), rec, extra))
    return rows


def _mean_sd(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    sd = float(t.std()) if t.numel() > 1 else math.nan  # sample sd over seeds
    return f"{100 * float(t.mean()):.1f} ± {100 * sd:.1f}"


def table_from_store(db: Path, sweep_ids: Sequence[int]) -> str:
    """The benchmark's table from the stored runs of ``sweep_ids`` in ``db``: one line per
    (row label, network, epochs), one column per window ratio R_off / R_on; each cell the
    test accuracy (%) mean ± sd over the seeds and the seed count, with ``[k coll.]`` when
    k of them collapsed to (nearly) one predicted class; then the same grid of mean update
    fidelity. The one function behind the printed table and ``--from-db``."""
    rows = stored_rows(db, sweep_ids)
    if not rows:
        return "(no completed runs in these sweeps)"
    ratios = sorted({round(r["ratio"], 6) for r in rows})
    cells: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[(r["label"], r["net"], r["epochs"])][round(r["ratio"], 6)].append(r)

    def order(key: tuple) -> tuple:
        base = key[0].split(" ")[0]
        return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), key)

    keys = sorted(cells, key=order)

    def cell(got: list[dict]) -> str:
        if not got:
            return "-"
        n_coll = sum(g["collapsed"] for g in got)
        text = f"{_mean_sd([g['accuracy'] for g in got])} ({len(got)})"
        return text + (f" [{n_coll} coll.]" if n_coll else "")  # never without its flag

    texts = {(k, r): cell(cells[k].get(r, [])) for k in keys for r in ratios}
    width = max(18, *(len(t) + 2 for t in texts.values()))
    lw = max(len(k[0]) for k in keys) + 2
    head = f"{'model':<{lw}}{'net':<8}{'epochs':>6}  " + "".join(
        f"{f'R_off/R_on={r:.3g}':>{width}}" for r in ratios
    )
    lines = [
        "Test accuracy (%, mean ± sd over seeds, (n) seeds; [k coll.]: k runs predicted one class)",
        head,
        "-" * len(head),
    ]
    for key in keys:
        line = f"{key[0]:<{lw}}{key[1]:<8}{key[2]:>6}  "
        lines.append(line + "".join(f"{texts[key, r]:>{width}}" for r in ratios))
    lines += ["", "Update fidelity: mean cosine(realised dG, requested dG) per step", head]
    lines.append("-" * len(head))
    for key in keys:
        if key[0].startswith("ideal"):
            continue
        line = f"{key[0]:<{lw}}{key[1]:<8}{key[2]:>6}  "
        for r in ratios:
            fid = [g["fidelity"] for g in cells[key].get(r, []) if not math.isnan(g["fidelity"])]
            line += f"{(f'{sum(fid) / len(fid):.3f}' if fid else '-'):>{width}}"
        lines.append(line)
    return "\n".join(lines)


# -- the command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> str:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: ratio 10, 2 seeds, 3 epochs")
    p.add_argument("--full", action="store_true", help="the six ratios 2 ... 1000")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "eqprop_memristors")
    p.add_argument("--db", type=Path, default=None, help="run store (default: OUT/runs.db)")
    p.add_argument(
        "--backend",
        default=None,
        type=parse_backend,
        help="where the example row runs: sim (default, the file's simulator), "
        "mock_lab=STATION.yaml or station=BENCH.yaml; the device grid is a simulator study",
    )
    p.add_argument(
        "--with",
        dest="extra",
        nargs="+",
        default=[],
        choices=sorted(EXTRA_SWEEPS),
        help="add the rows of these opt-in sweeps (see the module docstring)",
    )
    p.add_argument("--sweep-files", nargs="+", type=Path, help="run these sweep files instead")
    p.add_argument("--no-example", action="store_true", help="leave out the example row")
    p.add_argument("--executor", choices=("ray", "inline"), default="ray")
    p.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: all)")
    p.add_argument("--from-db", type=Path, help="reprint the table of stored sweeps; no training")
    p.add_argument("--sweep", nargs="+", type=int, default=[], help="sweep ids for --from-db")
    args = p.parse_args(argv)
    if args.from_db is not None:
        if not args.sweep:
            p.error("--from-db needs --sweep ID [ID ...]")
        try:
            text = table_from_store(args.from_db, args.sweep)
        except ConfigError as exc:  # no such sweep: one line, exit 2
            p.error(str(exc))
        print(text)
        return text
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.db or args.out / "runs.db"
    if args.sweep_files:
        files = list(args.sweep_files)
    else:
        kw: dict[str, Any] = {}
        if args.quick:
            kw = {"ratios": [10.0], "seeds": [0, 1], "epochs": 3, "models": ["hp", "vteam"]}
            args.executor = "inline"
        elif args.full:
            kw = {"ratios": FULL_RATIOS}
        names = [*DEVICE_SWEEPS, *(n for key in args.extra for n in EXTRA_SWEEPS[key])]
        files = [derived_sweep(n, args.out, **kw) for n in names]
        if not args.no_example:
            ex: dict[str, Any] = {"seeds": [0, 1], "epochs": 2} if args.quick else {}
            files.append(derived_sweep(EXAMPLE_SWEEP, args.out, backend=args.backend, **ex))
    print(f"running {len(files)} sweep(s) into {db} ({args.executor})", flush=True)
    ids = run_sweeps(files, db, executor=args.executor, num_cpus=args.num_cpus)
    text = table_from_store(db, ids)
    print("\n" + text)
    print(
        f"\nreprint: python benchmarks/eqprop_memristors.py --from-db {db} --sweep "
        + " ".join(map(str, ids))
    )
    (args.out / "table.txt").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
