"""A run as plain data (``RunRecord``), read from one store and written into another.

SQLite takes one writer at a time. A sweep's workers each run their trial into a scratch
store of their own (on their own disk) and hand the run back as a ``RunRecord``; the
sweep's driver, the only process that writes the sweep's database, stores it with
``write_run_record``. So however many trials finish at once, no worker ever waits on or
fails with the database's lock, and no result is lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memhil.store.run_store import POINT, RunStore

__all__ = [
    "META_SWEEP",
    "META_SWEEP_TRIAL",
    "RunRecord",
    "metadata_of_runs",
    "read_run_record",
    "write_run_record",
]

#: Metadata of a sweep's own run: the sweep file, its base, its axes and every trial.
META_SWEEP = "sweep"
#: Metadata of a trial's run: sweep id, trial index, axis values, seed, timing, error.
META_SWEEP_TRIAL = "sweep_trial"


@dataclass(frozen=True)
class RunRecord:
    """Everything ``RunStore`` holds of one run (its continuation chain merged): columns,
    key types, the metadata the run was created with, its points and its final status."""

    name: str
    keys: list[str]
    values: list[str]
    key_types: dict[str, str] | None  # key -> "int" | "str"; None: no point written
    metadata: dict[str, Any]
    points: pd.DataFrame = field(repr=False)  # columns: keys + values (no ``point``)
    status: str
    #: ``(name, step, array)`` stored with the run (conductance snapshots); checkpoints
    #: are not carried: a record is a finished run, nothing resumes it.
    arrays: list[tuple[str, int, np.ndarray]] = field(default_factory=list, repr=False)


def read_run_record(store: RunStore, run_id: int) -> RunRecord:
    """``run_id``'s chain as a ``RunRecord``: the root's metadata, the chain's points and
    the last run's status."""
    chain = store.chain(run_id)
    md = store.metadata(chain[0])
    user = {k: md[k] for k in md.get("memhil_metadata_keys") or [] if k in md}
    infos = {r.run_id: r for r in store.runs()}
    points = store.load(run_id).drop(columns=[POINT])
    key_types = md.get("memhil_key_types")
    return RunRecord(
        name=infos[chain[0]].name,
        keys=list(md.get("memhil_keys") or []),
        values=list(md.get("memhil_values") or []),
        key_types=dict(key_types) if isinstance(key_types, Mapping) else None,
        metadata=user,
        points=points,
        status=infos[chain[-1]].status,
        arrays=store.arrays(run_id),
    )


def write_run_record(
    store: RunStore,
    record: RunRecord,
    *,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Store ``record`` as a new run of ``store`` (its points and arrays in one transaction), with
    ``metadata`` added to the record's own; returns the new run id. The run is closed with
    the record's status ("running" from a process that died: "failed")."""
    key_types = (
        {k: int if t == "int" else str for k, t in record.key_types.items()}
        if record.key_types
        else None
    )
    writer = store.new_run(
        name or record.name,
        keys=record.keys,
        values=record.values,
        metadata={**record.metadata, **dict(metadata or {})},
        key_types=key_types,
    )
    try:
        rows = record.points[record.keys + record.values].to_dict("records")
        with writer.transaction():
            writer.add_many(rows)
            for name, step, array in record.arrays:
                writer.add_array(name, step, array)
    except BaseException:
        writer.close("failed")
        raise
    writer.close(record.status if record.status in ("completed", "interrupted") else "failed")
    return writer.run_id


def metadata_of_runs(store: RunStore, key: str) -> dict[int, Any]:
    """Run id -> the (parsed) value of metadata ``key``, for every run that has it. QCoDeS
    keeps each metadata key as a column of its ``runs`` table: one query answers it."""
    cols = {r[1] for r in store.conn.execute("PRAGMA table_info(runs)").fetchall()}
    if key not in cols:
        return {}
    rows = store.conn.execute(
        f'SELECT run_id, "{key}" FROM runs WHERE "{key}" IS NOT NULL ORDER BY run_id'
    ).fetchall()
    out: dict[int, Any] = {}
    for run_id, value in rows:
        try:
            out[int(run_id)] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[int(run_id)] = value
    return out
