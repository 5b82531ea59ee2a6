"""The run store seen read-only, as the monitor's data endpoints serve it.

The database is opened with SQLite's URI ``mode=ro`` (never through QCoDeS's ``connect``,
which upgrades and writes the schema), so the monitor can watch a store that another
process is writing, as plottr watches a QCoDeS ``.db``, and cannot change it. The layout
read here is the one :mod:`memhil.store.run_store` writes: one QCoDeS results table per
run, metadata as columns of ``runs``, the unit journal in ``memhil_units``.

Changes are found with ``PRAGMA data_version``, which moves when another connection
commits: a poll of an unchanged store costs one pragma.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memhil.monitor.plot_kinds import plot_kind, plots_for
from memhil.store.run_facts import measured_on, protocol_of, run_kind
from memhil.store.run_store import POINT
from memhil.store.run_writer_liveness import META_WRITER, shown_status

__all__ = ["PointCursor", "StoreView"]

#: Metadata columns of ``runs`` that the run list needs (the rest is read per run).
_LIST_META = (
    "memhil_status",
    "memhil_continues",
    "memhil_closed_at",
    "memhil_kind",
    "protocol_config",
    "backend_config",
    "station_identity",
    "preflight",
    "experiment",
    "experiment_config",
    "algorithm",
    "sweep",
    "sweep_config",
    "memhil_progress",
)


def _parse(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: they travel as null (QCoDeS stores NaN as 'nan')."""
    if isinstance(x, str):
        try:
            x = float(x)
        except ValueError:
            return x
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass
class PointCursor:
    """Where a reader of one run chain stands: the last SQLite row id read per results
    table, and the number of points read (the chain's ``point`` index of the next one)."""

    last_id: dict[str, int] = field(default_factory=dict)
    n: int = 0


class StoreView:
    """Read-only queries on one run store: the run list, a run's points since a cursor,
    its metadata and unit journal, sweep tables."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        if not self.db_path.exists():
            raise FileNotFoundError(f"no run store at {self.db_path}")
        uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)

    def close(self) -> None:
        self.conn.close()

    def data_version(self) -> int:
        """Moves whenever another connection commits to the store."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- runs -------------------------------------------------------------------------
    def _run_columns(self) -> set[str]:
        return {r[1] for r in self.conn.execute("PRAGMA table_info(runs)").fetchall()}

    def _rows(self) -> list[dict[str, Any]]:
        have = self._run_columns()
        meta = [c for c in _LIST_META if c in have]
        cols = [
            "run_id",
            "name",
            "result_table_name",
            "run_timestamp",
            "completed_timestamp",
            "is_completed",
        ]
        sql = "SELECT {} FROM runs ORDER BY run_id".format(", ".join(f'"{c}"' for c in cols + meta))
        out = []
        for row in self.conn.execute(sql).fetchall():
            d = dict(zip(cols, row[: len(cols)]))
            d["md"] = {k: _parse(v) for k, v in zip(meta, row[len(cols) :]) if v is not None}
            out.append(d)
        return out

    def _count(self, table: str) -> int:
        return int(self.conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])

    def _units(self) -> dict[int, tuple[int, int]]:
        """Root run -> (units done, units started and not done)."""
        try:
            rows = self.conn.execute(
                "SELECT root_run, sum(done), sum(1 - done) FROM memhil_units GROUP BY root_run"
            ).fetchall()
        except sqlite3.OperationalError:  # a store older than the unit journal
            return {}
        return {int(r): (int(d or 0), int(o or 0)) for r, d, o in rows}

    def chains(self) -> dict[int, list[int]]:
        """Root run id -> the run ids of its continuation chain, root first."""
        rows = self._rows()
        return self._chains(rows)

    @staticmethod
    def _chains(rows: list[dict[str, Any]]) -> dict[int, list[int]]:
        parent = {
            int(r["run_id"]): int(r["md"]["memhil_continues"])
            for r in rows
            if r["md"].get("memhil_continues") is not None
        }
        chains: dict[int, list[int]] = {}
        for r in rows:
            rid = int(r["run_id"])
            root = rid
            while root in parent:
                root = parent[root]
            chains.setdefault(root, []).append(rid)
        return chains

    def runs(self, now_s: float | None = None, only: int | None = None) -> list[dict[str, Any]]:
        """One entry per run chain (a resumed run shows once): id, name, kind, status,
        started, duration, progress and ETA, where it was measured, points, plot kind
        (``only``: the chain holding that run id alone)."""
        now_s = time.time() if now_s is None else now_s
        rows = self._rows()
        by_id = {int(r["run_id"]): r for r in rows}
        units = self._units()
        out = []
        for root, chain in self._chains(rows).items():
            if only is not None and int(only) not in chain:
                continue  # one run's page asks for its own entry only
            first, last = by_id[root], by_id[chain[-1]]
            md = first["md"]
            n = sum(self._count(by_id[r]["result_table_name"]) for r in chain)
            stored = last["md"].get("memhil_status")
            if stored is None:
                stored = "completed" if last["is_completed"] else "running"
            stored = shown_status(str(stored), last["md"].get(META_WRITER))
            done, open_units = units.get(root, (0, 0))
            status = str(stored)
            if status in ("interrupted", "failed") and "protocol_config" in md:
                # a protocol run resumes from its journal; with no unit in flight it
                # stopped cleanly between units (a stop request, or Ctrl-C there)
                status = "resumable" if open_units == 0 else status
            started = first["run_timestamp"]
            closed = _parse(last["md"].get("memhil_closed_at"))
            end = (
                now_s if stored == "running" else (closed or last["completed_timestamp"] or started)
            )
            pre = md.get("preflight") if isinstance(md.get("preflight"), dict) else {}
            expected = int(pre.get("records") or 0)
            progress = min(1.0, n / expected) if expected else None
            eta = None
            if stored == "running" and progress and started is not None and progress < 1:
                eta = (now_s - started) * (1 - progress) / progress
            out.append(
                {
                    "id": root,
                    "chain": chain,
                    "name": first["name"],
                    "kind": run_kind(md),
                    "protocol": protocol_of(md),
                    "plot_kind": plot_kind(md),
                    "status": status,
                    "stored_status": stored,
                    "started_s": started,
                    "duration_s": None if started is None else float(end) - float(started),
                    "n_points": n,
                    "expected_points": expected or None,
                    "units_done": done,
                    "units_in_flight": open_units,
                    "progress": progress,
                    "eta_s": eta,
                    "backend": measured_on(md),
                }
            )
        return out

    def run_entry(self, run_id: int) -> dict[str, Any]:
        """The run list's entry of the chain holding ``run_id``."""
        entry = next(iter(self.runs(only=run_id)), None)
        if entry is None:
            raise KeyError(f"no run {run_id} in {self.db_path}")
        return entry

    def run(self, run_id: int) -> dict[str, Any]:
        """A run chain's list entry, its columns, full metadata and plot definitions."""
        entry = self.run_entry(run_id)
        md = self.metadata(entry["id"])
        keys, values = self._columns(entry["id"])
        return {
            **entry,
            "keys": keys,
            "values": values,
            "metadata": md,
            "plots": plots_for(entry["plot_kind"], keys, values),
        }

    def metadata(self, run_id: int) -> dict[str, Any]:
        cur = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (int(run_id),))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        if row is None:
            raise KeyError(f"no run {run_id} in {self.db_path}")
        skip = {"snapshot", "run_description", "parameters", "parent_datasets"}
        return {k: _parse(v) for k, v in zip(names, row) if v is not None and k not in skip}

    def _columns(self, run_id: int) -> tuple[list[str], list[str]]:
        md = self.metadata(run_id)
        return list(md.get("memhil_keys") or []), list(md.get("memhil_values") or [])

    # -- points -----------------------------------------------------------------------
    def _chain(self, run_id: int) -> list[int]:
        chain = next((c for c in self.chains().values() if int(run_id) in c), None)
        if chain is None:
            raise KeyError(f"no run {run_id} in {self.db_path}")
        return chain

    def _table(self, run_id: int) -> str:
        (table,) = self.conn.execute(
            "SELECT result_table_name FROM runs WHERE run_id = ?", (int(run_id),)
        ).fetchone()
        return str(table)

    def cursor_at(self, run_id: int, n: int) -> PointCursor:
        """The cursor standing after the first ``n`` points of ``run_id``'s chain."""
        cursor = PointCursor(n=0)
        for rid in self._chain(run_id):
            table = self._table(rid)
            count = self._count(table)
            take = min(count, n - cursor.n)
            if take <= 0:
                break
            row = self.conn.execute(
                f'SELECT id FROM "{table}" ORDER BY id LIMIT 1 OFFSET ?', (take - 1,)
            ).fetchone()
            cursor.last_id[table] = int(row[0])
            cursor.n += take
        return cursor

    def points(
        self, run_id: int, cursor: PointCursor | None = None, limit: int = 200_000
    ) -> tuple[dict[str, list[Any]], PointCursor]:
        """The points of ``run_id``'s chain after ``cursor`` (from the start when None), as
        columns (``point``, keys, values; NaN as null), at most ``limit`` of them, and the
        cursor to ask with next time."""
        cursor = PointCursor() if cursor is None else PointCursor(dict(cursor.last_id), cursor.n)
        chain = self._chain(run_id)
        keys, values = self._columns(chain[0])
        names = [POINT, *keys, *values]
        out: dict[str, list[Any]] = {c: [] for c in names}
        left = limit
        for rid in chain:
            table = self._table(rid)
            have = {r[1] for r in self.conn.execute(f'PRAGMA table_info("{table}")')}
            cols = [c for c in names if c in have]
            sql = 'SELECT id, {} FROM "{}" WHERE id > ? ORDER BY id LIMIT ?'.format(
                ", ".join(f'"{c}"' for c in cols), table
            )
            rows = self.conn.execute(sql, (cursor.last_id.get(table, 0), left)).fetchall()
            if not rows:
                continue
            cursor.last_id[table] = int(rows[-1][0])
            cursor.n += len(rows)
            left -= len(rows)
            for j, c in enumerate(cols, start=1):
                if c == POINT or c in keys:
                    col = [_key(r[j]) for r in rows]
                else:
                    col = [_finite(r[j]) for r in rows]
                out[c].extend(col)
            for c in names:
                if c not in have:
                    out[c].extend([None] * len(rows))
            if left <= 0:
                break
        return out, cursor

    def units(self, run_id: int) -> list[dict[str, Any]]:
        """The unit journal of ``run_id``'s chain: unit key, attempts, done."""
        chain = next((c for c in self.chains().values() if int(run_id) in c), [int(run_id)])
        try:
            rows = self.conn.execute(
                "SELECT unit, attempts, done FROM memhil_units WHERE root_run = ? ORDER BY rowid",
                (chain[0],),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [{"unit": _parse(u), "attempts": int(a), "done": bool(d)} for u, a, d in rows]

    # -- sweeps -----------------------------------------------------------------------
    def sweep(self, run_id: int) -> dict[str, Any]:
        """A sweep's trial table: one row per trial run (its axis values, status and
        metrics), the axes and the metrics. Trials are the runs whose metadata
        ``sweep_trial`` names this sweep (``{"sweep": id, "trial": k, "axes": {...},
        "metrics": {...}}``, as ``memhil.sweeps`` tags them), else the sweep's own points,
        one per trial."""
        runs = {r["id"]: r for r in self.runs()}
        md = self.metadata(run_id)
        have = self._run_columns()
        trials: list[dict[str, Any]] = []
        if "sweep_trial" in have:
            for rid, raw in self.conn.execute(
                "SELECT run_id, sweep_trial FROM runs WHERE sweep_trial IS NOT NULL"
            ).fetchall():
                t = _parse(raw)
                if isinstance(t, dict) and int(t.get("sweep", -1)) == int(run_id):
                    entry = runs.get(int(rid), {})
                    axes = t.get("axes") or t.get("params") or {}
                    trials.append(
                        {
                            "trial": t.get("trial", len(trials)),
                            "run_id": int(rid),
                            "status": entry.get("status", "-"),
                            **{f"param.{k}": v for k, v in axes.items()},
                            **{f"metric.{k}": v for k, v in (t.get("metrics") or {}).items()},
                        }
                    )
            trials.sort(key=lambda row: (row["trial"], row["run_id"]))
        cfg = md.get("sweep_config") or md.get("sweep") or {}
        if not trials:  # a sweep that records one point per trial: axes named in its config
            pts, _ = self.points(run_id)
            keys, values = self._columns(run_id)
            named = cfg.get("axes") if isinstance(cfg, dict) else None
            axes_cols = list(named) if isinstance(named, (list, dict)) else keys
            for i in range(len(pts[POINT])):
                row: dict[str, Any] = {"trial": pts[POINT][i]}
                if "status" in pts:
                    row["status"] = pts["status"][i]
                for c in (*keys, *values):
                    if c == "status":
                        continue
                    kind = "param" if c in axes_cols else "metric"
                    row[f"{kind}.{c}"] = pts[c][i]
                trials.append(row)
        axes = sorted({k[6:] for t in trials for k in t if k.startswith("param.")})
        metrics = sorted({k[7:] for t in trials for k in t if k.startswith("metric.")})
        return {
            "id": int(run_id),
            "name": runs.get(int(run_id), {}).get("name", str(run_id)),
            "axes": axes,
            "metrics": metrics,
            "trials": trials,
            "config": cfg,
        }


def _key(v: Any) -> Any:
    """Key columns are stored as text: integers travel as numbers."""
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
