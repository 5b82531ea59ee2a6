"""Run a protocol file into the run store: ``run_protocol_file(path, ...) -> run_id``.

The file format and its validation: ``memhil.runs.protocol_file``.

Order of work: the file is parsed and the protocol built (ConfigError naming file and
key), the plan PRE-FLIGHTED on a dry backend built from the configuration files alone
(chip rows/cols, limits, instrument roles: limit, cell-range and prober errors name the
file and key, and no instrument is contacted and no database opened), then the backend
opened, the plan pre-flighted again on it, and only then the run is created and the plan
executed. Points go to a ``RunStore`` run
(keys and values are the record keys and values the protocol yields); the unit journal
is kept in the same database (``RunStore.units``): a unit is marked started before its
first operation, and its points and its done mark are one SQLite transaction, so a crash
at any point loses at most the unit in flight and never stores a unit without marking it
done. ``resume`` reopens an unfinished run: completed units are skipped, the unit in
flight is redone, and a unit started more than once (its pulses may have been applied
twice) is recorded in the run (``attempts`` in ``RunStore.units``, metadata
``memhil_reapplied_units``) and logged. Before anything is opened, a
resume checks that the protocol (name and parameters, defaults filled in) and the station
(the station file's content, or the simulator configuration) equal the interrupted run's,
and refuses with a ConfigError naming the file and the first differing key otherwise.
The run's
metadata records the calibration files in use (``calibration_versions``: fitted device
files and a read calibration, with content hash and version).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memhil.core.errors import ConfigError
from memhil.protocols import ProtocolError, Runner, Summary, build_protocol
from memhil.protocols.journal import key_text
from memhil.protocols.plan import Record
from memhil.runs.protocol_file import (
    META_CONFIG,
    META_FILE,
    ProtocolFile,
    file_errors,
    load_protocol_file,
    offline_backend,
    plain,
)
from memhil.runs.run_session import RunSession, run_session

log = logging.getLogger(__name__)

__all__ = [
    "run_protocol_file",
    "preflight_offline",
    "journal_path",
    "column_name",
    "check_resume_matches",
    "first_difference",
]


def journal_path(db: str | Path, run_id: int) -> Path:
    """The unit journal file of runs made by older versions (read on resume only)."""
    return Path(f"{db}.run{int(run_id)}.journal")


# Some SQLite keywords (``index``, ``order`` ...) cannot be QCoDeS column names (QCoDeS
# writes them unquoted); such record fields are stored with a trailing underscore
# (``index`` -> ``index_``), listed in the run metadata ``column_map``.
@functools.cache
def _sqlite_accepts(name: str) -> bool:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE TABLE t (point INTEGER, {name} TEXT)")
        conn.execute(f"INSERT INTO t (point, {name}) VALUES (?, ?)", (0, "x"))
        conn.execute(f"SELECT {name} FROM t WHERE {name} IS NOT NULL")
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def column_name(field: str) -> str:
    """The store column of a record field."""
    return field if _sqlite_accepts(field) else f"{field}_"


class _RecordSchema:
    """The record key and value names a plan yields (in first seen order), collected by
    ``runner``'s pre-flight: the store's columns. ``preflight`` adds dry passes with every
    read at G_min and at G_max, which catch records that only a real device state
    produces."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.key_names: dict[str, None] = {}
        self.value_names: dict[str, None] = {}
        record = runner.commands[Record]

        def collect(msg: Record, p: Any) -> Any:
            if p.dry:
                for k in msg.key:
                    self.key_names.setdefault(str(k), None)
                for k in msg.values:
                    self.value_names.setdefault(str(k), None)
            return record(msg, p)

        runner.register_command(Record, collect)

    def preflight(self, plan_factory: Any) -> Summary:
        summary = self.runner.preflight(plan_factory)
        for g_s in self.runner.backend.capabilities.conductance_range_s:
            self.runner.preflight(plan_factory, g_s=g_s)
        return summary


class _StoreSink:
    """Writes points to a RunWriter (fields renamed to their store columns), skipping
    points whose key is already stored (records outside any unit, re-emitted on resume).
    Points are buffered until ``flush`` (the Runner calls it inside the journal's commit of
    the unit), so a unit's points and its done mark are one SQLite transaction."""

    def __init__(self, writer: Any, keys: list[str], done: set[tuple]):
        self.writer = writer
        self.keys = keys  # store column names
        self.done = done
        self.written = 0
        self.skipped = 0
        self._pending: list[dict] = []

    def add(self, **point: Any) -> None:
        row = {column_name(k): v for k, v in point.items()}
        unknown = set(row) - set(self.writer.keys) - set(self.writer.values)
        if unknown:
            raise RuntimeError(
                f"record fields {sorted(unknown)} were not seen in the pre-flight "
                f"(store columns: {self.writer.keys + self.writer.values})"
            )
        k = tuple(row.get(name) for name in self.keys)
        if k in self.done:
            self.skipped += 1
            return
        self._pending.append(row)
        self.done.add(k)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self.writer.add_many(pending)
        self.written += len(pending)


class _StoreJournal:
    """The Runner's journal kept in the run store: ``start`` marks a unit started (its
    attempt number), ``commit`` stores the unit's points and its done mark in one SQLite
    transaction. Units done in a journal file of an older version count as done."""

    def __init__(self, writer: Any, legacy: Path | None = None):
        self.writer = writer
        self.states = writer.units()  # key text -> (attempts, done)
        if legacy is not None and legacy.exists():
            from memhil.protocols.journal import JournalFile

            for text in JournalFile(legacy).keys:
                if not self.states.get(text, (0, False))[1]:
                    writer.commit_unit(text)
                    self.states[text] = (self.states.get(text, (1, False))[0], True)

    def done(self, key: tuple) -> bool:
        return self.states.get(key_text(key), (0, False))[1]

    def start(self, key: tuple) -> int:
        text = key_text(key)
        attempt = self.writer.start_unit(text)
        self.states[text] = (attempt, False)
        if attempt > 1:
            log.warning(
                "unit %s was started before and not completed (interrupted): it is "
                "redone, its pulses may be applied %d times (recorded in run %d, "
                "memhil_reapplied_units)",
                text,
                attempt,
                self.writer.root_run,
            )
        return attempt

    def commit(self, key: tuple, flush: Any) -> None:
        text = key_text(key)
        with self.writer.transaction():
            flush()
            self.writer.commit_unit(text)
        self.states[text] = (self.states.get(text, (1, False))[0], True)

    def mark(self, key: tuple) -> None:
        self.commit(key, lambda: None)


def _metadata(pf: ProtocolFile, session: RunSession) -> dict:
    return {META_FILE: str(pf.path), META_CONFIG: pf.config(), **session.provenance()}


def _json_normal(x: Any) -> Any:
    import json

    return json.loads(json.dumps(plain(x), default=str))


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The dotted key of the first place where ``old`` and ``new`` differ (mappings in
    ``new``'s key order, then keys only ``old`` has; lists by index), or None."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in list(new) + [k for k in old if k not in new]:
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                return key
            diff = first_difference(old[k], new[k], key)
            if diff is not None:
                return diff
        return None
    if isinstance(old, list) and isinstance(new, list):
        for i, (a, b) in enumerate(zip(old, new)):
            diff = first_difference(a, b, f"{prefix}[{i}]")
            if diff is not None:
                return diff
        return None if len(old) == len(new) else f"{prefix}[{min(len(old), len(new))}]"
    return None if old == new else (prefix or "<root>")


def _lookup(tree: Any, dotted: str) -> Any:
    import re

    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        if part.startswith("["):
            i = int(part[1:-1])
            tree = tree[i] if isinstance(tree, list) and i < len(tree) else "<absent>"
        else:
            tree = tree.get(part, "<absent>") if isinstance(tree, Mapping) else "<absent>"
    return tree


def _resolved_params(protocol: str, params: Any) -> dict:
    """A protocol's parameters with defaults filled in (so spelling out a default is no
    change), as JSON data."""
    import dataclasses

    return _json_normal(dataclasses.asdict(build_protocol(protocol, params or {}).params))


def check_resume_matches(
    md: Mapping[str, Any], pf: ProtocolFile, identity: dict, backend_cfg: Any, run_id: int
) -> None:
    """Refuse to resume run ``run_id`` (metadata ``md``) with a different protocol or
    station: ConfigError naming the file and the first differing key."""
    cfg = md.get(META_CONFIG) or {}
    src = str(pf.path)
    old_proto = cfg.get("protocol")
    if old_proto is not None and old_proto != pf.protocol:
        raise ConfigError(
            "protocol",
            f"differs from the interrupted run {run_id} "
            f"({old_proto!r} there, {pf.protocol!r} here): cannot resume",
            src,
        )
    if old_proto is not None:
        try:
            old = _resolved_params(old_proto, cfg.get("params"))
        except ConfigError:
            old = _json_normal(cfg.get("params") or {})
        new = _resolved_params(pf.protocol, pf.params)
        key = first_difference(old, new)
        if key is not None:
            raise ConfigError(
                f"params.{key}",
                f"differs from the interrupted run {run_id} "
                f"({_lookup(old, key)!r} there, {_lookup(new, key)!r} here): "
                f"cannot resume a changed protocol",
                src,
            )
    old_id = md.get("station_identity")
    if old_id is None:
        log.warning("run %s records no station identity (older run): not checked", run_id)
        return
    key = first_difference(old_id, _json_normal(identity))
    if key is None:
        return
    where = src
    if isinstance(backend_cfg, Mapping):
        for kind in ("station", "mock_lab"):
            if isinstance(backend_cfg.get(kind), str):
                where = backend_cfg[kind]
    # a station file's own key, else the protocol file's backend entry
    short = (
        key.split(".", 1)[1] if where != src and key.startswith("station.") else f"backend.{key}"
    )
    raise ConfigError(
        short,
        f"the station differs from the one of the interrupted run "
        f"{run_id} ({_lookup(old_id, key)!r} there, "
        f"{_lookup(_json_normal(identity), key)!r} here): cannot resume",
        where,
    )


def preflight_offline(pf: ProtocolFile, backend_cfg: Any = None) -> Summary:
    """Pre-flight ``pf`` on a dry stand-in of ``backend_cfg`` (default: the file's own
    backend) built from the configuration files alone: limit, cell-range and record
    errors name the file and key; no instrument is contacted, no database opened."""
    backend_cfg = pf.backend if backend_cfg is None else backend_cfg
    if backend_cfg is None:
        raise ConfigError("backend", "no backend to pre-flight on", str(pf.path))
    where = (
        backend_cfg
        if isinstance(backend_cfg, str)
        else next((str(backend_cfg[k]) for k in ("station", "mock_lab") if k in backend_cfg), "sim")
    )
    offline = offline_backend(backend_cfg, str(pf.path))
    with file_errors(pf, offline, where):
        return _RecordSchema(Runner(offline, progress=False)).preflight(pf.plan)


def run_protocol_file(
    protocol_path: str | Path | ProtocolFile,
    *,
    backend: Any = None,
    db: str | Path = "memhil.db",
    resume: bool | int = False,
    progress: bool = True,
    visa_library: str | None = None,
) -> int:
    """Run a protocol file (a path, or a ``ProtocolFile`` already loaded); returns the run
    id the points were written to.

    ``backend``: a backend configuration ("sim", ``{sim: {...}}``, ``{station: yaml}``,
    ``{mock_lab: yaml}``; paths relative to the working directory), or an open Backend
    (the caller closes it); default: the file's ``backend:`` entry (paths relative to the
    file). ``resume``: True continues the most recent unfinished run of this file, an int
    that run id. ``visa_library``: the VISA library of a ``station`` bench (a path to a
    native library is accepted here, from the command line, never from a file).
    """
    pf = (
        protocol_path
        if isinstance(protocol_path, ProtocolFile)
        else load_protocol_file(protocol_path)
    )
    src = str(pf.path)
    with run_session(
        pf.path,
        pf.backend,
        backend=backend,
        db=db,
        resume=resume,
        visa_library=visa_library,
        preflight_offline=functools.partial(preflight_offline, pf),
        check_resume=lambda md, identity, cfg, rid: check_resume_matches(
            md, pf, identity, cfg, rid
        ),
    ) as session:
        be = session.backend
        runner = Runner(be, progress=progress)
        schema = _RecordSchema(runner)
        with file_errors(pf, be, type(be).__name__):
            summary = schema.preflight(pf.plan)  # nothing reaches the instruments
        log.info(
            "%s: pre-flight ok, %d ops, %d pulses, %d reads, %.3g s",
            src,
            summary.ops,
            summary.pulses,
            summary.reads,
            summary.duration_s,
        )
        if session.root_id is None:
            if not schema.key_names:
                raise ProtocolError(
                    f"{src}: the protocol records nothing on this backend (pre-flight)"
                )
            fields = list(schema.key_names) + [
                v for v in schema.value_names if v not in schema.key_names
            ]
            keys = [column_name(k) for k in schema.key_names]
            values = [column_name(v) for v in fields[len(keys) :]]
            md = _metadata(pf, session)
            md["column_map"] = {f: column_name(f) for f in fields if column_name(f) != f}
            # what the pre-flight counted: the monitor's progress and ETA
            md["preflight"] = {"records": summary.records, "units": summary.units}
            writer = session.store.new_run(pf.name, keys=keys, values=values, metadata=md)
            done: set[tuple] = set()
        else:
            writer = session.store.open_run(session.root_id)
            keys = list(writer.keys)
            done = set(session.store.completed_keys(session.root_id, keys))
        session.attach(writer)
        runner.sink = _StoreSink(writer, keys, done)
        runner.journal = _StoreJournal(writer, journal_path(db, writer.root_run))
        runner.stop_requested = session.stop_requested
        runner.run(pf.plan, preflight=summary)
        return int(writer.run_id)
