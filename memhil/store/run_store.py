"""Run storage on a QCoDeS DataSet (SQLite).

Every protocol run is one QCoDeS dataset in one SQLite ``.db`` file.

Layout
------
QCoDeS needs every dependent parameter to hang off declared setpoints, and a sweep of
wafer points is an arbitrary list (die, subsite, cell, step, ...), not a grid.  So each
run has a single setpoint, ``point`` (0, 1, 2, ... in write order, continued across
continuation runs), and *every* key and value column is a dependent parameter of
``point``:

* key columns (``die_col``, ``die_row``, ``subsite``, ``row``, ``col``, ``step`` ...) are
  stored as QCoDeS ``text`` parameters; their Python type (``int`` or ``str``) is given
  by ``key_types`` or inferred from the first point, recorded in the metadata key
  ``memhil_key_types`` and restored by :meth:`RunStore.load`;
* value columns (``v``, ``i``, ``g``, ``t_s`` ...) are ``numeric`` (float; a missing
  value is NaN).

This layout accepts any point list (no grid, repeats allowed), keeps a point's keys and
values in one SQLite row and keeps the write order.

Durability
----------
The store uses the DataSet API directly (not ``Measurement.run()``, whose saver
buffers for ``write_period``): :meth:`RunWriter.add` calls ``DataSet.add_results``
without the background writer, which inserts and commits the row at once.  A process
that dies loses at most the point in flight.

Units (exactly once)
--------------------
A protocol's units (the Runner's ``Checkpoint``/``Commit``) are journaled in the table
``memhil_units`` of the same database, keyed by the chain's root run: a unit is marked
*started* (``attempts`` + 1, committed) before its first operation, and its points and its
*done* mark are ONE SQLite transaction (:meth:`RunWriter.commit_unit`), so "points stored"
and "unit done" cannot disagree after a crash. A unit started more than once (its pulses may
have been applied more than once) is listed in the root run's metadata
``memhil_reapplied_units`` (``[{"unit": key, "attempts": n}]``) and by :meth:`RunStore.units`.

Arrays and checkpoints
----------------------
A training run keeps arrays (conductance snapshots per tile, :meth:`RunWriter.add_array`,
read back by :meth:`RunStore.arrays`) and checkpoints (opaque bytes,
:meth:`RunWriter.save_checkpoint` / :meth:`RunStore.last_checkpoint`) in the table
``memhil_blobs`` of the same database, keyed by the chain's root run, name and step; written
inside :meth:`RunWriter.transaction` they commit with the unit's points and done mark.

Creation
--------
A new database file is created and initialised under a temporary name in the same folder
and linked into place when its schema is complete, so a process killed while creating it
leaves either no file or a complete one.

Status
------
Metadata ``memhil_status`` is ``"running"`` while a writer is open and
``"completed"``, ``"failed"`` or ``"interrupted"`` after :meth:`RunWriter.close`.  A run
that is never closed (crash) stays ``"running"`` in the file and is *shown* as ``"died"``
once its writer process is gone (``memhil.store.run_writer_liveness``).  Only ``close("completed")`` marks the
QCoDeS dataset completed; failed or interrupted runs stay open in QCoDeS so that they
can be appended to.

Resume
------
:meth:`RunStore.open_run` implements both paths:

1. *append in place* -- if the last run of the chain is not completed in QCoDeS (the
   process died, or it was closed ``failed``/``interrupted``), it is reloaded with
   ``load_by_id`` and further points are added to the same dataset (QCoDeS 0.58 allows
   ``add_results`` on a started, not completed dataset, also from a new process);
2. *continuation* -- if the dataset is completed (or QCoDeS refuses to add results),
   a new run is created with the same columns and metadata plus
   ``memhil_continues: <previous run id>``.

:meth:`RunStore.load`, :meth:`RunStore.completed_keys` and :meth:`RunStore.export`
follow the chain: given any run id of a chain, they return the points of the whole
chain (root first, ``point`` continuing).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from qcodes.dataset import (
    InterDependencies_,
    connect,
    load_by_id,
    load_or_create_experiment,
    new_data_set,
)
from qcodes.dataset.sqlite.connection import atomic

from memhil.store.run_writer_liveness import META_WRITER, shown_status, writer_identity

try:  # qcodes >= 0.5x: the dataset path is deprecated
    from qcodes.parameters import ParamSpecBase
except ImportError:  # pragma: no cover
    from qcodes.dataset.descriptions.param_spec import ParamSpecBase

__all__ = ["STATUSES", "RunInfo", "RunStore", "RunWriter"]

STATUSES = ("completed", "failed", "interrupted")
POINT = "point"
_RESERVED = {
    "memhil_status",
    "memhil_keys",
    "memhil_values",
    "memhil_key_types",
    "memhil_continues",
    "memhil_metadata_keys",
    "memhil_closed_at",
    "memhil_reapplied_units",
}
_UNITS_TABLE = "memhil_units"
_UNITS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_UNITS_TABLE} (root_run INTEGER NOT NULL, "
    "unit TEXT NOT NULL, attempts INTEGER NOT NULL, done INTEGER NOT NULL, "
    "PRIMARY KEY (root_run, unit))"
)
# Arrays of a run (conductance snapshots per tile, training checkpoints) as BLOBs keyed by
# the chain's root run: ``kind`` "array" (an .npy payload) or "checkpoint" (opaque bytes).
_BLOBS_TABLE = "memhil_blobs"
_BLOBS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_BLOBS_TABLE} (root_run INTEGER NOT NULL, "
    "kind TEXT NOT NULL, name TEXT NOT NULL, step INTEGER NOT NULL, data BLOB NOT NULL, "
    "PRIMARY KEY (root_run, kind, name, step))"
)


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    name: str
    status: str
    n_points: int
    started: float | None  # unix time
    completed: float | None  # unix time (QCoDeS completion, only for "completed")
    continues: int | None  # run id this run continues, if any


def _to_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_json_default, sort_keys=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return repr(obj)


def _from_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def _check_name(name: str) -> None:
    if not name.isidentifier() or name == POINT:
        raise ValueError(f"invalid column name {name!r} (identifier, not {POINT!r})")


class RunWriter:
    """Writes the points of one run.  Use as a context manager: an exception closes
    the run ``"failed"`` (``KeyboardInterrupt``: ``"interrupted"``) and re-raises."""

    def __init__(
        self,
        store: RunStore,
        dataset: Any,
        keys: Sequence[str],
        values: Sequence[str],
        key_types: dict[str, type] | None,
        next_point: int = 0,
        root_run: int | None = None,
    ):
        self._store = store
        self.root_run = int(dataset.run_id) if root_run is None else int(root_run)
        self._ds = dataset
        self.keys = list(keys)
        self.values = list(values)
        self._key_types = dict(key_types) if key_types else None
        self._next_point = next_point
        self._closed = False

    @property
    def run_id(self) -> int:
        return int(self._ds.run_id)

    @property
    def n_points(self) -> int:
        """Points written by this writer's run chain so far (the next ``point``)."""
        return self._next_point

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, **point: Any) -> int:
        """Write one point (all keys required, values optional -> NaN) and commit it.
        Returns its ``point`` index."""
        return self.add_many([point])[0]

    def add_many(self, points: Sequence[Mapping[str, Any]]) -> list[int]:
        """Write several points in one SQLite transaction (one commit: on a disk that
        syncs each commit this is the difference between milliseconds per point and per
        batch). All or none are stored. Returns their ``point`` indices."""
        if self._closed:
            raise RuntimeError(f"run {self.run_id} is closed")
        rows = [self._row(point, self._next_point + n) for n, point in enumerate(points)]
        if rows:
            self._ds.add_results(rows)  # inserted and committed now
        first = self._next_point
        self._next_point += len(rows)
        return list(range(first, self._next_point))

    # -- units: started / done, the done mark in the points' transaction ----------------
    def units(self) -> dict[str, tuple[int, bool]]:
        """Unit key text -> (attempts, done) of this run's chain."""
        rows = self._store.conn.execute(
            f"SELECT unit, attempts, done FROM {_UNITS_TABLE} WHERE root_run = ?", (self.root_run,)
        ).fetchall()
        return {u: (int(a), bool(d)) for u, a, d in rows}

    def start_unit(self, unit: str) -> int:
        """Mark ``unit`` started before its first operation (committed now); returns the
        attempt number. An attempt > 1 lists the unit in ``memhil_reapplied_units``."""
        conn = self._store.conn
        with atomic(conn):
            conn.execute(
                f"INSERT INTO {_UNITS_TABLE} (root_run, unit, attempts, done) "
                "VALUES (?, ?, 1, 0) ON CONFLICT(root_run, unit) "
                "DO UPDATE SET attempts = attempts + 1",
                (self.root_run, unit),
            )
            (attempts,) = conn.execute(
                f"SELECT attempts FROM {_UNITS_TABLE} WHERE root_run = ? AND unit = ?",
                (self.root_run, unit),
            ).fetchone()
            if attempts > 1:
                again = [
                    {"unit": _from_json(u), "attempts": a}
                    for u, (a, _) in sorted(self.units().items())
                    if a > 1
                ]
                self._store._ds(self.root_run).add_metadata(
                    "memhil_reapplied_units", json.dumps(again)
                )
        return int(attempts)

    def commit_unit(self, unit: str, points: Sequence[Mapping[str, Any]] = ()) -> list[int]:
        """Write ``points`` and mark ``unit`` done in ONE transaction: after a crash both
        or neither are stored."""
        with self.transaction() as conn:
            idx = self.add_many(points)
            conn.execute(
                f"INSERT INTO {_UNITS_TABLE} (root_run, unit, attempts, done) "
                "VALUES (?, ?, 1, 1) ON CONFLICT(root_run, unit) DO UPDATE SET done = 1",
                (self.root_run, unit),
            )
        return idx

    # -- arrays and checkpoints (training runs) ----------------------------------------
    def add_array(self, name: str, step: int, array: Any) -> None:
        """Store ``array`` (numpy-convertible) as ``name`` at ``step`` (e.g. the
        conductances of one tile at a checkpoint, in S); replaces an array of the same
        name and step (a redone step after resume). Inside ``transaction()`` it commits
        with the points written there."""
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        self._put_blob("array", name, step, buf.getvalue())

    def save_checkpoint(self, step: int, payload: bytes) -> None:
        """Store a checkpoint (opaque bytes) at ``step``; the latest is read back by
        :meth:`RunStore.last_checkpoint`."""
        self._put_blob("checkpoint", "checkpoint", step, payload)

    def _put_blob(self, kind: str, name: str, step: int, data: bytes) -> None:
        with atomic(self._store.conn) as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO {_BLOBS_TABLE} (root_run, kind, name, step, data) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.root_run, kind, name, int(step), sqlite3.Binary(data)),
            )

    @contextlib.contextmanager
    def transaction(self):
        """One SQLite transaction around the writes inside (all or none are stored)."""
        first = self._next_point
        try:
            with atomic(self._store.conn) as conn:
                yield conn
        except BaseException:
            self._next_point = first  # rolled back: those point indices are free again
            raise

    def _row(self, point: Mapping[str, Any], index: int) -> dict[str, Any]:
        unknown = set(point) - set(self.keys) - set(self.values)
        if unknown:
            raise KeyError(
                f"unknown columns {sorted(unknown)}; keys={self.keys}, values={self.values}"
            )
        missing = [k for k in self.keys if k not in point]
        if missing:
            raise KeyError(f"missing key columns {missing}")
        if self._key_types is None:
            self._key_types = {k: (str if isinstance(point[k], str) else int) for k in self.keys}
            self._ds.add_metadata(
                "memhil_key_types", json.dumps({k: t.__name__ for k, t in self._key_types.items()})
            )
        row: dict[str, Any] = {POINT: index}
        for k in self.keys:
            v = point[k]
            if self._key_types[k] is int:
                if isinstance(v, (str, bool)) or int(v) != v:
                    raise TypeError(f"key {k!r} is int, got {v!r}")
                row[k] = str(int(v))
            else:
                row[k] = str(v)
        for name in self.values:
            v = point.get(name)
            row[name] = float("nan") if v is None else float(v)
        return row

    def close(self, status: str = "completed") -> None:
        """Mark the run ``status``; only ``"completed"`` completes the QCoDeS dataset."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if self._closed:
            return
        self._ds.add_metadata("memhil_status", status)
        self._ds.add_metadata("memhil_closed_at", repr(time.time()))
        if status == "completed":
            self._ds.mark_completed()
        self._closed = True

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if self._closed:
            return False
        if exc_type is None:
            self.close("completed")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("failed")
        return False


class RunStore:
    """A SQLite database of runs, opened with an explicit path (the global QCoDeS
    config, ``core.db_location``, is neither read nor changed)."""

    def __init__(self, db_path: str | Path, experiment: str = "memhil", sample: str = "memhil"):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.db_path.exists():
            _create_db(self.db_path, experiment, sample)
        self.conn = connect(str(self.db_path))
        self.experiment = load_or_create_experiment(experiment, sample, conn=self.conn)
        with atomic(self.conn) as conn:  # databases created by older versions lack them
            conn.execute(_UNITS_SCHEMA)
            conn.execute(_BLOBS_SCHEMA)

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def new_run(
        self,
        name: str,
        *,
        keys: Sequence[str],
        values: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
        key_types: Mapping[str, type] | None = None,
        _continues: int | None = None,
        _first_point: int = 0,
    ) -> RunWriter:
        """Create a run.  ``metadata`` values are stored as JSON strings (strings as
        they are) with ``dataset.add_metadata``: station snapshot, protocol config,
        calibration versions, device-model parameters ...  ``key_types`` maps a key
        to ``int`` or ``str`` (default: inferred from the first point)."""
        keys, values = list(keys), list(values)
        for c in keys + values:
            _check_name(c)
        if len(set(keys + values)) != len(keys) + len(values):
            raise ValueError("duplicate column names")
        if key_types is not None:
            bad = {k: t for k, t in key_types.items() if t not in (int, str) or k not in keys}
            if bad or set(key_types) != set(keys):
                raise ValueError(f"key_types must map every key to int or str: {key_types}")
        reserved = sorted(set(metadata or {}) & _RESERVED)
        if reserved:
            raise ValueError(f"metadata key {reserved[0]!r} is reserved")
        point = ParamSpecBase(POINT, "numeric", label="point index")
        deps = [ParamSpecBase(k, "text") for k in keys] + [
            ParamSpecBase(v, "numeric") for v in values
        ]
        # one transaction: a crash never leaves a run without its metadata (unresumable)
        with atomic(self.conn):
            ds = self._create_dataset(
                name, deps, point, keys, values, metadata, key_types, _continues
            )
        root = None
        if _continues is not None:
            root = self.chain(int(_continues))[0]
        return RunWriter(
            self, ds, keys, values, dict(key_types) if key_types else None, _first_point, root
        )

    def _create_dataset(
        self, name, deps, point, keys, values, metadata, key_types, _continues
    ) -> Any:
        ds = new_data_set(
            name, exp_id=self.experiment.exp_id, conn=self.conn, in_memory_cache=False
        )
        ds.set_interdependencies(InterDependencies_(dependencies={d: (point,) for d in deps}))
        ds.mark_started(start_bg_writer=False)
        for mkey, mval in (metadata or {}).items():
            ds.add_metadata(mkey, _to_json(mval))
        ds.add_metadata("memhil_metadata_keys", json.dumps(sorted(metadata or {})))
        ds.add_metadata("memhil_keys", json.dumps(keys))
        ds.add_metadata("memhil_values", json.dumps(values))
        if key_types is not None:
            ds.add_metadata(
                "memhil_key_types", json.dumps({k: t.__name__ for k, t in key_types.items()})
            )
        if _continues is not None:
            ds.add_metadata("memhil_continues", str(int(_continues)))
        ds.add_metadata("memhil_status", "running")
        ds.add_metadata(META_WRITER, writer_identity())
        return ds

    def open_run(self, run_id: int) -> RunWriter:
        """Writer that appends to ``run_id``'s chain (see module docstring): in place
        if the last run of the chain is not completed in QCoDeS, else in a new run with
        ``memhil_continues`` pointing at it.  Points continue their ``point`` index."""
        chain = self.chain(run_id)
        tail = chain[-1]
        ds = self._ds(tail)
        raw = ds.metadata
        keys = json.loads(raw["memhil_keys"])
        values = json.loads(raw["memhil_values"])
        key_types = self._key_types(raw)
        n = sum(self._ds(r).number_of_results for r in chain)
        if not ds.completed:
            try:
                ds._raise_if_not_writable()
            except RuntimeError:  # QCoDeS refuses (CompletedError): continuation
                writable = False
            else:
                writable = True
            if writable:
                ds.add_metadata("memhil_status", "running")
                ds.add_metadata(META_WRITER, writer_identity())
                return RunWriter(self, ds, keys, values, key_types, n, chain[0])
        user_meta = {
            k: raw[k] for k in json.loads(raw.get("memhil_metadata_keys", "[]")) if k in raw
        }
        return self.new_run(
            ds.name,
            keys=keys,
            values=values,
            metadata=user_meta,
            key_types=key_types,
            _continues=tail,
            _first_point=n,
        )

    # -- reading ----------------------------------------------------------------------
    def _ds(self, run_id: int) -> Any:
        return load_by_id(int(run_id), conn=self.conn)

    @staticmethod
    def _key_types(raw: Mapping[str, Any]) -> dict[str, type] | None:
        if "memhil_key_types" not in raw:
            return None
        return {
            k: (int if t == "int" else str) for k, t in json.loads(raw["memhil_key_types"]).items()
        }

    def run_ids(self) -> list[int]:
        """Every run id in the database, ascending."""
        cur = self.conn.execute("SELECT run_id FROM runs ORDER BY run_id")
        return [int(r[0]) for r in cur.fetchall()]

    _run_ids = run_ids

    def _continues_map(self) -> dict[int, int]:
        """run id -> run id it continues.  QCoDeS stores metadata as columns of the
        ``runs`` table, so one query answers it."""
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)").fetchall()}
        if "memhil_continues" not in cols:
            return {}
        rows = self.conn.execute(
            "SELECT run_id, memhil_continues FROM runs WHERE memhil_continues IS NOT NULL"
        ).fetchall()
        return {int(r): int(c) for r, c in rows}

    def chain(self, run_id: int) -> list[int]:
        """Run ids of ``run_id``'s continuation chain, root first."""
        cont = self._continues_map()
        root = int(run_id)
        seen = {root}
        while root in cont:
            root = cont[root]
            if root in seen:  # pragma: no cover - corrupt metadata
                break
            seen.add(root)
        children: dict[int, int] = {}
        for child, parent in sorted(cont.items()):
            children.setdefault(parent, child)
        chain = [root]
        while chain[-1] in children:
            chain.append(children[chain[-1]])
        return chain

    def runs(self) -> list[RunInfo]:
        out = []
        for rid in self._run_ids():
            ds = self._ds(rid)
            md = ds.metadata
            status = md.get("memhil_status")
            if status is None:
                status = "completed" if ds.completed else "running"
            status = shown_status(str(status), md.get(META_WRITER))
            c = md.get("memhil_continues")
            out.append(
                RunInfo(
                    run_id=rid,
                    name=ds.name,
                    status=str(status),
                    n_points=int(ds.number_of_results),
                    started=ds.run_timestamp_raw,
                    completed=ds.completed_timestamp_raw,
                    continues=int(c) if c is not None else None,
                )
            )
        return out

    def units(self, run_id: int) -> pd.DataFrame:
        """The unit journal of ``run_id``'s chain: columns ``unit`` (the key, parsed),
        ``attempts`` (> 1: the unit was started again after a crash; its pulses may have
        been applied more than once) and ``done``."""
        root = self.chain(run_id)[0]
        rows = self.conn.execute(
            f"SELECT unit, attempts, done FROM {_UNITS_TABLE} WHERE root_run = ? ORDER BY rowid",
            (root,),
        ).fetchall()
        return pd.DataFrame(
            {
                "unit": [_from_json(u) for u, _, _ in rows],
                "attempts": [int(a) for _, a, _ in rows],
                "done": [bool(d) for _, _, d in rows],
            }
        )

    def arrays(self, run_id: int, name: str | None = None) -> list[tuple[str, int, np.ndarray]]:
        """``(name, step, array)`` of the arrays stored for ``run_id``'s chain (all, or
        those called ``name``), ordered by name then step."""
        import io

        root = self.chain(run_id)[0]
        sql = f"SELECT name, step, data FROM {_BLOBS_TABLE} WHERE root_run = ? AND kind = 'array'"
        args: tuple = (root,)
        if name is not None:
            sql += " AND name = ?"
            args += (name,)
        rows = self.conn.execute(sql + " ORDER BY name, step", args).fetchall()
        return [(n, int(k), np.load(io.BytesIO(d), allow_pickle=False)) for n, k, d in rows]

    def last_checkpoint(self, run_id: int) -> tuple[int, bytes] | None:
        """``(step, payload)`` of the latest checkpoint of ``run_id``'s chain, or None."""
        root = self.chain(run_id)[0]
        row = self.conn.execute(
            f"SELECT step, data FROM {_BLOBS_TABLE} WHERE root_run = ? AND kind = 'checkpoint' "
            "ORDER BY step DESC LIMIT 1",
            (root,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def metadata(self, run_id: int) -> dict[str, Any]:
        """All metadata of a run, JSON values parsed."""
        return {k: _from_json(v) for k, v in self._ds(run_id).metadata.items()}

    def _load_one(self, run_id: int) -> pd.DataFrame:
        ds = self._ds(run_id)
        raw = ds.metadata
        keys = json.loads(raw["memhil_keys"])
        values = json.loads(raw["memhil_values"])
        cols = [POINT] + keys + values
        # one SQLite row per point: read the results table directly (in write order)
        sql = 'SELECT {} FROM "{}" ORDER BY id'.format(
            ", ".join(f'"{c}"' for c in cols), ds.table_name
        )
        rows = self.conn.execute(sql).fetchall()
        df = pd.DataFrame.from_records(rows, columns=cols)
        key_types = self._key_types(raw) or {}
        df[POINT] = df[POINT].astype("int64")
        for k in keys:
            if key_types.get(k, str) is int:
                df[k] = df[k].astype("int64")
            else:
                df[k] = df[k].astype(object)
        for v in values:
            df[v] = pd.to_numeric(df[v], errors="coerce").astype("float64")
        return df

    def load(self, run_id: int) -> pd.DataFrame:
        """Points of ``run_id``'s chain: columns ``point``, keys, values."""
        frames = [self._load_one(r) for r in self.chain(run_id)]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return df

    def completed_keys(self, run_id: int, key_names: Sequence[str]) -> set[tuple]:
        """Set of ``tuple(point[k] for k in key_names)`` already written in the chain."""
        df = self.load(run_id)
        key_names = list(key_names)
        missing = [k for k in key_names if k not in df.columns]
        if missing:
            raise KeyError(f"unknown columns {missing}")
        return {
            tuple(_py(x) for x in row) for row in df[key_names].itertuples(index=False, name=None)
        }

    def to_xarray(self, run_id: int):
        """xarray Dataset of the chain's points (dimension ``point``); the root run's
        metadata (JSON strings) as attributes, each column's SI unit as its ``units``
        attribute (CF conventions)."""
        import xarray as xr

        from memhil.store.columns import unit_of

        chain = self.chain(run_id)
        xds = xr.Dataset.from_dataframe(self.load(run_id).set_index(POINT))
        for name in xds.data_vars:
            unit = unit_of(str(name))
            if unit:
                xds[name].attrs["units"] = unit
        for k, v in self._ds(chain[0]).metadata.items():
            xds.attrs[k] = v if isinstance(v, (str, int, float)) else str(v)
        xds.attrs["memhil_run_ids"] = json.dumps(chain)
        xds.attrs["memhil_db"] = str(self.db_path)
        return xds

    def export(self, run_id: int, path: str | Path) -> Path:
        """Write the chain's points (+ metadata as attributes) to netCDF."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        xds = self.to_xarray(run_id)
        for name in list(xds.variables):
            if xds[name].dtype == object:
                xds[name] = xds[name].astype(str)
        xds.to_netcdf(path, engine="h5netcdf")
        return path


def _create_db(path: Path, experiment: str, sample: str) -> None:
    """Create and initialise a database under a temporary name beside ``path``, then link
    it into place (no-clobber: a file another process created meanwhile is kept)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.creating")
    try:
        conn = connect(str(tmp))
        try:
            load_or_create_experiment(experiment, sample, conn=conn)
            with atomic(conn) as c:
                c.execute(_UNITS_SCHEMA)
                c.execute(_BLOBS_SCHEMA)
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: rename (atomic, may clobber)
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _py(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x
