"""A sweep's results as tables: its trials' runs (tagged ``sweep_trial``), the trials
still to run for ``--resume``, and axis values x final metrics, mean and standard
deviation over seeds (``memhil runs show SWEEP``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from memhil.core.errors import ConfigError
from memhil.store import RunStore
from memhil.store.run_records import META_SWEEP, META_SWEEP_TRIAL, metadata_of_runs

__all__ = ["completed_trials", "sweep_definition", "sweep_table", "sweep_trials", "trial_runs"]


def sweep_definition(store: RunStore, sweep_id: int) -> dict[str, Any]:
    """The definition stored with sweep run ``sweep_id``; ConfigError if it is no sweep."""
    if sweep_id not in store.run_ids():
        raise ConfigError("SWEEP", f"{store.db_path} has no run {sweep_id}")
    definition = store.metadata(sweep_id).get(META_SWEEP)
    if not isinstance(definition, dict):
        raise ConfigError("SWEEP", f"run {sweep_id} of {store.db_path} is not a sweep")
    return definition


def trial_runs(store: RunStore, sweep_id: int) -> pd.DataFrame:
    """Every run of sweep ``sweep_id``'s trials (a trial run again after a failure has
    several), in run order: ``trial``, ``run_id``, ``status``, ``seed``, one column per
    axis, ``t_start_s``, ``t_end_s`` (unix time on the worker), ``host``, ``error`` and
    one column per final metric."""
    definition = sweep_definition(store, sweep_id)
    axes = list(definition.get("axes") or [])
    status = {r.run_id: r.status for r in store.runs()}
    rows = []
    for run_id, tag in metadata_of_runs(store, META_SWEEP_TRIAL).items():
        if not isinstance(tag, dict) or tag.get("sweep") != sweep_id:
            continue
        row = {
            "trial": int(tag["trial"]),
            "run_id": run_id,
            "status": status.get(run_id, "-"),
            "seed": tag.get("seed"),
            **{a: (tag.get("axes") or {}).get(a) for a in axes},
            "t_start_s": tag.get("t_start_s"),
            "t_end_s": tag.get("t_end_s"),
            "host": tag.get("host"),
            "error": tag.get("error"),
        }
        row.update(tag.get("metrics") or {})
        rows.append(row)
    cols = ["trial", "run_id", "status", "seed", *axes, "t_start_s", "t_end_s", "host", "error"]
    return pd.DataFrame(rows, columns=None if rows else cols)


def completed_trials(store: RunStore, sweep_id: int) -> set[int]:
    """Trials of sweep ``sweep_id`` that have a completed run."""
    runs = trial_runs(store, sweep_id)
    return set(runs.loc[runs["status"] == "completed", "trial"].astype(int))


def sweep_trials(store: RunStore, sweep_id: int) -> pd.DataFrame:
    """One row per trial of the sweep: its latest completed run, else its latest run, else
    (never run) status ``pending``."""
    definition = sweep_definition(store, sweep_id)
    runs = trial_runs(store, sweep_id)
    if not runs.empty:
        runs = runs.assign(_ok=runs["status"] == "completed").sort_values(["_ok", "run_id"])
        runs = runs.groupby("trial").tail(1).drop(columns="_ok")
    have = set(runs["trial"]) if not runs.empty else set()
    pending = [
        {"trial": t["trial"], "status": "pending", "seed": t.get("seed"), **(t.get("axes") or {})}
        for t in definition.get("trials") or []
        if t["trial"] not in have
    ]
    out = pd.concat([runs, pd.DataFrame(pending)], ignore_index=True) if pending else runs
    return out.sort_values("trial").reset_index(drop=True)


def metric_names(trials: pd.DataFrame, axes: list[str]) -> list[str]:
    """The final-metric columns of a ``trial_runs`` / ``sweep_trials`` frame."""
    fixed = {"trial", "run_id", "status", "seed", "t_start_s", "t_end_s", "host", "error", *axes}
    return [c for c in trials.columns if c not in fixed]


def sweep_table(
    store: RunStore, sweep_id: int, metrics: list[str] | None = None
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Axis values x final metrics over the completed trials: one row per point of the
    axes, ``n`` (seeds completed), and ``<metric>_mean`` / ``<metric>_sd`` (sample
    standard deviation over seeds, NaN for one seed). Returns (table, axes, metrics)."""
    axes = list(sweep_definition(store, sweep_id).get("axes") or [])
    trials = sweep_trials(store, sweep_id)
    done = trials[trials["status"] == "completed"]
    names = metric_names(trials, axes)
    if metrics:
        unknown = [m for m in metrics if m not in names]
        if unknown:
            raise ConfigError("--metric", f"unknown metric {unknown[0]!r} (known: {names})")
        names = list(metrics)
    if done.empty:
        return pd.DataFrame(columns=[*axes, "n"]), axes, names
    keyed = done.assign(**{a: done[a].map(repr) for a in axes}) if axes else done.assign(_all=0)
    by = axes or ["_all"]
    grouped = keyed.groupby(by, sort=False)
    table = grouped.size().rename("n").to_frame()
    for m in names:
        col = grouped[m]
        table[f"{m}_mean"] = col.mean()
        table[f"{m}_sd"] = col.std(ddof=1)
    table = table.reset_index()
    if axes:  # the axis values as they were (repr only made them hashable)
        first = done.groupby([done[a].map(repr) for a in axes], sort=False).head(1)
        for a in axes:
            table[a] = list(first[a])
    else:
        table = table.drop(columns="_all")
    return table, axes, names
