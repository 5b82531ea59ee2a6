"""Digital twins from the run store, what ``memhil twin build`` and ``memhil twin check`` do:
stored ``pulse_train`` runs -> per-cell pulse traces -> an empirical device model file, and
any device model checked against held-out runs (``memhil.calibration.twin``, docs/twin.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memhil.core.errors import ConfigError
from memhil.runs.protocol_file import META_CONFIG

__all__ = [
    "traces_from_run",
    "read_noise_from_run",
    "retention_reads",
    "stuck_cells_from_run",
    "build_twin",
    "check_twin",
    "plot_twin_check",
]


def traces_from_run(store: Any, run_id: int):
    """The per-cell reads of a stored ``pulse_train`` run, one row per cell, one column per
    read (before the first pulse and after each), with the run's pulse schedule."""
    from memhil.calibration.twin import PulseTrace
    from memhil.core.config import from_mapping
    from memhil.protocols.library.pulse_train import PulseTrainParams, pulse_schedule

    root = store.chain(run_id)[0]
    cfg = store.metadata(root).get(META_CONFIG) or {}
    if cfg.get("protocol") != "pulse_train":
        raise ConfigError(
            "run", f"run {run_id} is not a pulse_train run (protocol {cfg.get('protocol')!r})"
        )
    schedule = pulse_schedule(from_mapping(PulseTrainParams, cfg.get("params") or {}))
    df = store.load(run_id)
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    table = df.pivot_table(index=cell_cols or None, columns="n", values="g", aggfunc="mean")
    if list(table.columns) != list(range(len(schedule) + 1)) or table.isna().any().any():
        raise ValueError(
            f"run {run_id} is incomplete: reads {len(table.columns)} of {len(schedule) + 1}"
        )
    return PulseTrace(
        table.to_numpy(float),
        np.array([a for a, _ in schedule]),
        np.array([w for _, w in schedule]),
        source=f"{Path(store.db_path).name} run {run_id}"
        if hasattr(store, "db_path")
        else f"run {run_id}",
    )


def read_noise_from_run(store: Any, run_id: int) -> tuple[float, float]:
    """(relative, floor S) of the read noise from a stored ``read_noise`` run: each cell's
    std over its repeated reads against its mean, through ``noise_line``."""
    from memhil.calibration.twin import noise_line

    root = store.chain(run_id)[0]
    cfg = store.metadata(root).get(META_CONFIG) or {}
    if cfg.get("protocol") != "read_noise":
        raise ConfigError(
            "read_noise",
            f"run {run_id} is not a read_noise run (protocol {cfg.get('protocol')!r})",
        )
    df = store.load(run_id)
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    stats = df.groupby(cell_cols)["g"].agg(["mean", "std", "count"]).dropna()
    if stats.empty or int(stats["count"].min()) < 3:
        raise ValueError(f"run {run_id} has fewer than 3 reads per cell")
    return noise_line(stats["mean"].to_numpy(), stats["std"].to_numpy(), stats["count"].to_numpy())


def retention_reads(store: Any, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(read times s since programming, reads (cells, times) S) of a stored ``retention``
    run; a run of another protocol is a ``ConfigError``."""
    from memhil.runs.protocol_run import column_name

    root = store.chain(run_id)[0]
    cfg = store.metadata(root).get(META_CONFIG) or {}
    if cfg.get("protocol") != "retention":
        raise ConfigError(
            "drift", f"run {run_id} is not a retention run (protocol {cfg.get('protocol')!r})"
        )
    df = store.load(run_id)
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    index = column_name("index")  # a reserved word in SQL: stored as index_
    g = df.pivot_table(index=cell_cols, columns=index, values="g")
    t = df.groupby(index)["t_s"].mean().reindex(g.columns)
    return t.to_numpy(float), g.to_numpy(float)


def stuck_cells_from_run(store: Any, run_id: int) -> tuple[int, np.ndarray]:
    """(cells measured, conductances S of the stuck ones) of a stored ``forming`` run (cells
    whose last forming step left them unformed, at their last read) or ``conductance_map``
    run (cells flagged ``open_circuit``, at their read): the cells a twin keeps stuck."""
    root = store.chain(run_id)[0]
    cfg = store.metadata(root).get(META_CONFIG) or {}
    protocol = cfg.get("protocol")
    if protocol not in ("forming", "conductance_map"):
        raise ConfigError(
            "stuck",
            f"run {run_id} is neither a forming nor a conductance_map run (protocol {protocol!r})",
        )
    df = store.load(run_id)
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    if protocol == "forming":
        last = df.sort_values("step").groupby(cell_cols).tail(1)
        stuck = last[~last["formed"].astype(bool)]
        return int(len(last)), stuck["g"].to_numpy(float)
    cells = df.groupby(cell_cols).tail(1)
    flag = cells["open_circuit"].astype(bool) if "open_circuit" in cells else False
    return int(len(cells)), cells[flag]["g"].to_numpy(float).clip(min=0.0)


def _traces(db: str | Path, run_ids: Sequence[int]):
    from memhil.store import RunStore

    with RunStore(db) as store:
        return [traces_from_run(store, int(r)) for r in run_ids]


def build_twin(
    db: str | Path,
    run_ids: Sequence[int],
    *,
    n_knots: int = 16,
    read_noise_run: int | None = None,
    stuck_runs: Sequence[int] = (),
    drift_runs: Sequence[int] = (),
):
    """An empirical device model (a ``FitResult``; ``to_yaml`` writes the twin file) from
    the stored ``pulse_train`` runs ``run_ids``; its read noise from the ``read_noise`` run
    ``read_noise_run`` when given, else estimated from the pulse trains; its stuck cells
    (fraction and conductances) from the ``forming`` / ``conductance_map`` runs
    ``stuck_runs`` (``stuck_cells_from_run``); its drift (power-law exponent and its
    device-to-device spread, PCM's law) from the ``retention`` runs ``drift_runs``: one
    exponent, or one per programmed level where the runs programmed several levels
    (each run one class; ``memhil.calibration.fit.pcm.fit_drift_levels``)."""
    from memhil.calibration.twin import build_empirical
    from memhil.store import RunStore

    where = f"{Path(db).resolve()} run {', '.join(map(str, run_ids))} (pulse_train)"
    noise = None
    cells, stuck = 0, list[float]()
    with RunStore(db) as store:
        if read_noise_run is not None:
            noise = read_noise_from_run(store, read_noise_run)
            where += f", run {read_noise_run} (read_noise)"
        for rid in stuck_runs:
            n, g = stuck_cells_from_run(store, rid)
            cells, stuck = cells + n, stuck + g.tolist()
    if stuck_runs:
        where += f", run {', '.join(map(str, stuck_runs))} (stuck cells)"
    fit = build_empirical(_traces(db, run_ids), n_knots=n_knots, read_noise=noise, source=where)
    if stuck:
        fit.params["stuck_fraction"] = len(stuck) / cells
        fit.params["stuck_g_s"] = stuck
    if drift_runs:
        from memhil.calibration.fit.pcm import fit_drift, fit_drift_levels

        with RunStore(db) as store:
            runs = [retention_reads(store, int(r)) for r in drift_runs]
        fit.source += f", run {', '.join(map(str, drift_runs))} (retention)"
        # one exponent per programmed level where the runs programmed several
        drift = fit_drift_levels(runs) if len(runs) > 1 else fit_drift(*runs[0])
        levels = drift.params.get("levels_s", [])
        if len(levels) > 1:
            fit.params["drift_g_levels_s"] = levels
            fit.params["drift_nu_levels"] = [max(nu, 0.0) for nu in drift.params["nu_levels"]]
            fit.stderr.update({f"drift_{k}": v for k, v in drift.stderr.items()})
        if drift.params["nu"] > 0:  # a conductance that rises with time is not this law
            fit.params["drift_nu"] = drift.params["nu"]
            fit.params["drift_nu_dtod"] = drift.params["nu_dtod"]
            fit.params["drift_t0_s"] = drift.params["t0_s"]
            if "nu" in drift.stderr:
                fit.stderr["drift_nu"] = drift.stderr["nu"]
    return fit


def check_twin(
    db: str | Path,
    models: Sequence[str | Path | Any],
    run_ids: Sequence[int],
    *,
    replicates: int = 4,
    seed: int = 0,
):
    """Each model (a device YAML, a model name or a mapping) checked against the held-out
    runs ``run_ids`` (their traces joined cell-wise when they share a schedule, else the
    first run): a list of ``TwinCheck`` and the trace they were checked on."""
    from memhil.calibration.twin import PulseTrace, check_model
    from memhil.devices import build_device_model

    traces = _traces(db, run_ids)
    trace = traces[0]
    same = [t for t in traces if np.array_equal(t.v, trace.v) and t.g_s.shape == trace.g_s.shape]
    if len(same) > 1:
        trace = PulseTrace(
            np.concatenate([t.g_s for t in same]),
            trace.v,
            trace.width_s,
            "; ".join(t.source for t in same),
        )
    checks = []
    for spec in models:
        model = build_device_model(spec)
        check = check_model(model, trace, replicates=replicates, seed=seed)
        check.model = str(spec) if isinstance(spec, (str, Path)) else model.name
        checks.append(check)
    return checks, trace


def plot_twin_check(checks: Sequence[Any], trace: Any, path: str | Path) -> Path:
    """Measured vs predicted mean trajectory (with the across-cell spread) and step
    distributions, one colour per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from memhil.store.plots import DPI

    fig = Figure(figsize=(11, 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_s = fig.subplots(1, 2)
    n = np.arange(trace.g_s.shape[1])
    us = 1e6
    m, s = trace.g_s.mean(0) * us, trace.g_s.std(0, ddof=1) * us
    ax_t.plot(n, m, color="k", lw=2, label="measured")
    ax_t.fill_between(n, m - s, m + s, color="k", alpha=0.15)
    dg = np.diff(trace.g_s, axis=1).ravel() * us
    lo, hi = np.quantile(dg, [0.005, 0.995])
    bins = np.linspace(float(lo), float(hi), 60)
    ax_s.hist(dg, bins=bins, color="k", histtype="step", lw=2, density=True, label="measured")
    for c in checks:
        label = (
            f"{Path(str(c.model)).name}: mean err {c.mean_error_rel:.1%}, KS D {c.ks_distance:.3f}"
        )
        (line,) = ax_t.plot(n, c.predicted_mean_s * us, lw=1.2, label=label)
        ax_t.fill_between(
            n,
            (c.predicted_mean_s - c.predicted_std_s) * us,
            (c.predicted_mean_s + c.predicted_std_s) * us,
            color=line.get_color(),
            alpha=0.12,
        )
        steps = c.predicted_steps_s.ravel() * us
        ax_s.hist(steps, bins=bins, histtype="step", density=True, color=line.get_color())
    ax_t.set_xlabel("pulse number")
    ax_t.set_ylabel("conductance (µS)")
    ax_t.set_title(f"held-out trace: mean ± sd over {trace.cells} cells")
    ax_t.legend(fontsize=7)
    ax_s.set_xlabel("conductance change per pulse (µS)")
    ax_s.set_ylabel("probability density (1/µS)")
    ax_s.set_title("step distribution, all pulses")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path
