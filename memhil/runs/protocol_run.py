"""Run a protocol file into the run store: ``run_protocol_file(path, ...) -> run_id``.

A protocol file (YAML)::

    protocol: pulse_train                     # a registered protocol (memhil.protocols)
    params: {n_pulses: 20, v_ltp: 2.0, v_ltd: -2.0, width_s: 8.0e-8}
    backend: {mock_lab: ../mock_wafer_station.yaml}   # relative paths: against this file
    name: ltp_demo                            # optional run name (default: the file stem)
    description: free text                    # optional

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from memhil.runs.backend_config import open_backend
from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError, LimitError
from memhil.protocols import ProtocolError, ProtocolLimitError, Runner, build_protocol
from memhil.protocols.journal import key_text
from memhil.protocols.plan import Record

log = logging.getLogger(__name__)

__all__ = ["ProtocolFile", "load_protocol_file", "run_protocol_file", "journal_path",
           "offline_backend",
           "find_resumable_run", "PROTOCOL_FILE_KEYS", "column_name", "station_identity",
           "check_resume_matches", "first_difference", "fit_run", "pulse_sequence_from_run"]

PROTOCOL_FILE_KEYS = ("protocol", "params", "backend", "name", "description")
_META_FILE = "protocol_file"
_META_CONFIG = "protocol_config"


@dataclass(frozen=True)
class ProtocolFile:
    path: Path
    protocol: str
    params: dict
    backend: Any  # resolved backend config (paths absolute), or None
    name: str
    description: str
    plan: Any  # the ProtocolPlan

    def config(self) -> dict:
        return {"file": str(self.path), "protocol": self.protocol, "params": self.params,
                "backend": _plain(self.backend), "name": self.name,
                "description": self.description}


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return repr(x)


def resolve_backend_config(config: Any, base: Path, source: str | None = None) -> Any:
    """``config`` with its station / mock_lab YAML path (and a sim device file) made
    absolute against ``base``."""
    if config is None or config == "sim":
        return config
    if not isinstance(config, Mapping):
        raise ConfigError("backend", f"expected 'sim' or a mapping, got {config!r}", source)
    out = dict(config)
    for kind in ("station", "mock_lab"):
        v = out.get(kind)
        if isinstance(v, (str, Path)):
            p = Path(v).expanduser()
            out[kind] = str(p if p.is_absolute() else (base / p).resolve())
    sim = out.get("sim")
    if isinstance(sim, Mapping) and isinstance(sim.get("device"), str) \
            and sim["device"].endswith((".yaml", ".yml")):
        p = Path(sim["device"]).expanduser()
        out["sim"] = {**sim, "device": str(p if p.is_absolute() else (base / p).resolve())}
    return out


def load_protocol_file(path: str | Path) -> ProtocolFile:
    """Parse and validate a protocol file (no instrument is touched)."""
    path = Path(path).resolve()
    src = str(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - set(PROTOCOL_FILE_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key (allowed: {list(PROTOCOL_FILE_KEYS)})", src)
    if "protocol" not in data:
        raise ConfigError("protocol", "missing (a registered protocol name)", src)
    name = data["protocol"]
    if not isinstance(name, str):
        raise ConfigError("protocol", f"expected a protocol name, got {name!r}", src)
    from memhil.protocols.registry import protocol_names
    if name not in protocol_names():
        raise ConfigError("protocol", f"unknown protocol {name!r} (known: {protocol_names()})",
                          src)
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("params", f"expected a mapping, got {type(params).__name__}", src)
    plan = build_protocol(name, params, source=src, prefix="params")
    run_name = data.get("name", path.stem)
    if not isinstance(run_name, str) or not run_name:
        raise ConfigError("name", f"expected a non-empty string, got {run_name!r}", src)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError("description", "expected a string", src)
    backend = resolve_backend_config(data.get("backend"), path.parent, src)
    return ProtocolFile(path=path, protocol=name, params=dict(params), backend=backend,
                        name=run_name, description=desc, plan=plan)


def journal_path(db: str | Path, run_id: int) -> Path:
    """The unit journal file of runs made by older versions (read on resume only)."""
    return Path(f"{db}.run{int(run_id)}.journal")


# Some SQLite keywords (``index``, ``order`` ...) cannot be QCoDeS column names (QCoDeS
# writes them unquoted); such record fields are stored with a trailing underscore
# (``index`` -> ``index_``), listed in the run metadata ``column_map``.
@functools.lru_cache(maxsize=None)
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


class _SchemaRunner(Runner):
    """A Runner whose pre-flight also collects the record key and value names (in first
    seen order; extra dry passes with every read at G_min and at G_max catch records that
    only a real device state produces) and is done once: ``run`` reuses the summary."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.key_names: dict[str, None] = {}
        self.value_names: dict[str, None] = {}
        self._summary = None

    def preflight(self, plan_factory):
        if self._summary is None:
            self._summary = super().preflight(plan_factory)
            lo, hi = self.backend.capabilities.conductance_range_s
            for g in (lo, hi):
                self._schema_pass(plan_factory, g)
        return self._summary

    def _schema_pass(self, plan_factory, g_s: float) -> None:
        from memhil.protocols.dry import DryBackend
        from memhil.protocols.runner import Summary
        dry = DryBackend(self.backend, g_s=g_s)
        plan = plan_factory(self.backend.capabilities)
        reply: Any = None
        s = Summary()
        try:
            while s.ops <= self.max_preflight_ops:
                try:
                    msg = plan.send(reply)
                except StopIteration:
                    break
                s.ops += 1
                reply = self._execute(dry, msg, s, dry=True)
        finally:
            plan.close()

    def _execute(self, be, msg, s, *, dry):
        if dry and isinstance(msg, Record):
            for k in msg.key:
                self.key_names.setdefault(str(k), None)
            for k in msg.values:
                self.value_names.setdefault(str(k), None)
        return super()._execute(be, msg, s, dry=dry)


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
            raise RuntimeError(f"record fields {sorted(unknown)} were not seen in the pre-flight "
                               f"(store columns: {self.writer.keys + self.writer.values})")
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
            log.warning("unit %s was started before and not completed (interrupted): it is "
                        "redone, its pulses may be applied %d times (recorded in run %d, "
                        "memhil_reapplied_units)", text, attempt, self.writer.root_run)
        return attempt

    def commit(self, key: tuple, flush: Any) -> None:
        text = key_text(key)
        with self.writer.transaction():
            flush()
            self.writer.commit_unit(text)
        self.states[text] = (self.states.get(text, (1, False))[0], True)

    def mark(self, key: tuple) -> None:
        self.commit(key, lambda: None)


def _metadata(pf: ProtocolFile, backend: Any, backend_cfg: Any) -> dict:
    caps = backend.capabilities
    md: dict[str, Any] = {
        _META_FILE: str(pf.path),
        _META_CONFIG: pf.config(),
        "backend_config": _plain(backend_cfg) if backend_cfg is not None
        else type(backend).__name__,
        "capabilities": caps.as_dict() if hasattr(caps, "as_dict") else _plain(caps),
        "calibration_versions": _calibration_versions(backend),
    }
    station = getattr(backend, "station", None)
    if station is not None:
        try:
            md["station"] = station.snapshot()
        except Exception as exc:  # noqa: BLE001 - a snapshot must not stop a run
            md["station"] = {"error": repr(exc)}
        chip = getattr(getattr(station, "config", None), "chip", None)
        device = getattr(chip, "device", None)
        lab = getattr(backend, "lab", None)  # the mock lab knows the emulated device
        if lab is not None and getattr(lab.mock, "device", None) is not None:
            md["mock_device"] = _plain(lab.mock.device)
        md["device_model"] = _plain(device)
    else:
        cfg = getattr(backend, "config", None)
        dev = getattr(cfg, "device", None) if cfg is not None else None
        if dev is None and isinstance(backend_cfg, Mapping) and isinstance(backend_cfg.get("sim"), Mapping):
            dev = backend_cfg["sim"].get("device")
        md["device_model"] = _plain(dev) if dev is not None else caps.device_model
    return md


def _calibration_versions(backend: Any) -> dict:
    from memhil.calibration.versions import calibration_versions
    try:
        return calibration_versions(backend)
    except Exception as exc:  # metadata must not stop a run (logged)
        log.exception("recording calibration versions")
        return {"error": repr(exc)}


def _file_limit_error(exc: ProtocolLimitError, pf: ProtocolFile) -> ProtocolLimitError:
    """The pre-flight's limit error, naming the file and its ``params.`` keys."""
    names = [n.strip() for n in exc.param.split("/")]
    keys = " / ".join("params." + n.split(".", 1)[1] if n.startswith(pf.protocol + ".")
                      else n for n in names)
    inner = exc.quantity[len(exc.param) + 2:-1] if exc.quantity.startswith(exc.param + " (") \
        else exc.quantity
    return ProtocolLimitError(f"{pf.path}: {keys}", LimitError(inner, exc.value, exc.limit, exc.unit))


def offline_backend(backend_cfg: Any, source: str | None = None) -> Any:
    """A dry stand-in for the configured backend, from the configuration files alone: the
    station's chip shape, limits, device description and instrument roles (a simulator is
    itself contacts-free and is opened). Nothing is connected."""
    from types import SimpleNamespace

    from memhil.backends.base import Capabilities
    from memhil.backends.hardware import _device_description
    from memhil.instruments.registry import get_instrument_type, load_builtin_instruments
    from memhil.instruments.station import load_station_config
    from memhil.protocols.dry import DryBackend

    cfg = {"sim": {}} if backend_cfg == "sim" else dict(backend_cfg)
    if "sim" in cfg:
        sim = open_backend(backend_cfg, source=source)
        try:
            return DryBackend(sim, has_prober=False)
        finally:
            sim.close()
    kind = next((k for k in ("station", "mock_lab") if k in cfg), None)
    if kind is None:
        raise ConfigError("backend", "needs exactly one of: sim, station, mock_lab "
                          f"(got {sorted(cfg)})", source)
    sc = load_station_config(cfg[kind])
    load_builtin_instruments()
    roles = {get_instrument_type(i.type, key=f"instruments.{n}.type",
                                 source=str(cfg[kind])).role
             for n, i in sc.instruments.items()}
    strategy = cfg.get("strategy", "auto")
    if strategy == "auto":
        strategy = "parallel" if "array" in roles else "cell"
    try:
        g, set_pulse, reset_pulse = _device_description(sc.chip)
    except ValueError as exc:
        raise ConfigError("chip", str(exc), str(cfg[kind])) from None
    device = sc.chip.device
    model = device.get("model") if isinstance(device, Mapping) else device
    caps = Capabilities(
        tiles=1, rows=sc.chip.rows, cols=sc.chip.cols, read_strategy=strategy,
        transpose_read=True, per_cell_amplitude=True, per_cell_width=True,
        min_pulse_width_s=sc.limits.width_min_s, virtual_clock=kind == "mock_lab",
        device_model=str(device or "unknown"), bipolar=model not in ("pcm",),
        conductance_range_s=g, set_pulse=set_pulse, reset_pulse=reset_pulse)
    v_read = cfg.get("v_read")  # HardwareBackend's default read voltage when unset
    like = SimpleNamespace(shape=(1, sc.chip.rows, sc.chip.cols), limits=sc.limits,
                           capabilities=caps, read_voltage_v=float(
                               0.5 * sc.limits.v_read_max_v if v_read is None else v_read))
    return DryBackend(like, has_prober="prober" in roles)


def _preflight(runner: Any, pf: ProtocolFile, where: str) -> Any:
    """``runner.preflight`` with its errors naming the protocol file and key: limits
    (ProtocolLimitError), cells outside the chip (ConfigError)."""
    try:
        return runner.preflight(pf.plan)
    except ProtocolLimitError as exc:
        raise _file_limit_error(exc, pf) from None
    except IndexError as exc:  # a cell outside the chip
        _, rows, cols = runner.backend.shape
        key = "params.cells" if "cells" in pf.params else "params"
        raise ConfigError(key, f"{exc} (the chip of {where} has {rows} x {cols} cells)",
                          str(pf.path)) from None


def station_identity(backend_cfg: Any, backend: Any = None) -> dict:
    """What a resumed run must run on again: the station file's content (name, chip,
    limits, instruments, wiring, mock section) for ``station`` / ``mock_lab``, the simulator
    configuration for ``sim``; for an open Backend passed in, its station's configuration
    or its shape and device model. Read from the files only: nothing is connected."""
    from memhil.instruments.station import load_station_config

    if backend is not None:
        station = getattr(backend, "station", None)
        if station is not None:
            return {"kind": "station", "station": _plain(station.config.to_dict())}
        caps = backend.capabilities
        return {"kind": type(backend).__name__, "shape": list(backend.shape),
                "device_model": _plain(caps.device_model)}
    cfg = {"sim": {}} if backend_cfg == "sim" else dict(backend_cfg)
    kind = next(k for k in ("sim", "station", "mock_lab") if k in cfg)
    extra = {k: _plain(v) for k, v in cfg.items() if k != kind}
    if kind == "sim":
        return {"kind": "sim", "sim": _plain(cfg["sim"] or {}), **extra}
    station = load_station_config(cfg[kind]).to_dict()
    return {"kind": kind, "station": _plain(station), **extra}


def _json_normal(x: Any) -> Any:
    import json
    return json.loads(json.dumps(_plain(x), default=str))


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


def check_resume_matches(md: Mapping[str, Any], pf: ProtocolFile, identity: dict,
                         backend_cfg: Any, run_id: int) -> None:
    """Refuse to resume run ``run_id`` (metadata ``md``) with a different protocol or
    station: ConfigError naming the file and the first differing key."""
    cfg = md.get(_META_CONFIG) or {}
    src = str(pf.path)
    old_proto = cfg.get("protocol")
    if old_proto is not None and old_proto != pf.protocol:
        raise ConfigError("protocol", f"differs from the interrupted run {run_id} "
                          f"({old_proto!r} there, {pf.protocol!r} here): cannot resume", src)
    if old_proto is not None:
        try:
            old = _resolved_params(old_proto, cfg.get("params"))
        except ConfigError:
            old = _json_normal(cfg.get("params") or {})
        new = _resolved_params(pf.protocol, pf.params)
        key = first_difference(old, new)
        if key is not None:
            raise ConfigError(f"params.{key}", f"differs from the interrupted run {run_id} "
                              f"({_lookup(old, key)!r} there, {_lookup(new, key)!r} here): "
                              f"cannot resume a changed protocol", src)
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
    short = key.split(".", 1)[1] if where != src and key.startswith("station.") \
        else f"backend.{key}"
    raise ConfigError(short, f"the station differs from the one of the interrupted run "
                      f"{run_id} ({_lookup(old_id, key)!r} there, "
                      f"{_lookup(_json_normal(identity), key)!r} here): cannot resume", where)


def find_resumable_run(store: Any, protocol_path: str | Path) -> int | None:
    """The most recent run of ``protocol_path`` whose chain did not complete."""
    target = str(Path(protocol_path).resolve())
    infos = {r.run_id: r for r in store.runs()}
    best = None
    for rid, info in infos.items():
        if info.continues is not None:
            continue  # look at roots; the chain's last run decides
        md = store.metadata(rid)
        if md.get(_META_FILE) != target:
            continue
        last = store.chain(rid)[-1]
        if infos[last].status != "completed":
            best = rid if best is None else max(best, rid)
    return best


def run_protocol_file(protocol_path: str | Path, *, backend: Any = None,
                      db: str | Path = "memhil.db", resume: bool | int = False,
                      progress: bool = True, visa_library: str | None = None) -> int:
    """Run a protocol file; returns the run id the points were written to.

    ``backend``: a backend configuration ("sim", ``{sim: {...}}``, ``{station: yaml}``,
    ``{mock_lab: yaml}``; paths relative to the working directory), or an open Backend
    (the caller closes it); default: the file's ``backend:`` entry (paths relative to the
    file). ``resume``: True continues the most recent unfinished run of this file, an int
    that run id. ``visa_library``: the VISA library of a ``station`` bench (a path to a
    native library is accepted here, from the command line, never from a file).
    """
    from memhil.backends.base import Backend
    from memhil.store import RunStore

    pf = load_protocol_file(protocol_path)
    src = str(pf.path)
    own_backend = not isinstance(backend, Backend)
    backend_cfg = None
    if own_backend:
        backend_cfg = pf.backend if backend is None else resolve_backend_config(
            backend, Path.cwd(), "backend argument")
        if backend_cfg is None:
            raise ConfigError("backend", "no backend: give one in the file or on the command "
                              "line (--sim, --station, --mock-lab)", src)
    if own_backend:  # every check the files allow, before any instrument or database
        where = backend_cfg if isinstance(backend_cfg, str) else next(
            (str(backend_cfg[k]) for k in ("station", "mock_lab") if k in backend_cfg), "sim")
        _preflight(_SchemaRunner(offline_backend(backend_cfg, src), progress=False), pf, where)
    new_db = not Path(db).exists()
    store = RunStore(db)
    writer = None
    try:
        root_id = None
        if resume is not False and resume is not None:
            root_id = find_resumable_run(store, pf.path) if resume is True else int(resume)
            if root_id is None:
                raise ConfigError("resume", f"no unfinished run of {src} in {db}", src)
            root_id = store.chain(root_id)[0]
            # before any instrument is opened: same protocol config, same station
            check_resume_matches(store.metadata(root_id), pf,
                                 station_identity(backend_cfg, None if own_backend else backend),
                                 backend_cfg, root_id)
        visa = {} if visa_library is None else {"visa_library": visa_library}
        be = open_backend(backend_cfg, source=src, **visa) if own_backend else backend
        writer = None
        status = "failed"
        try:
            runner = _SchemaRunner(be, progress=progress)
            summary = _preflight(runner, pf, type(be).__name__)  # nothing reaches them
            log.info("%s: pre-flight ok, %d ops, %d pulses, %d reads, %.3g s", src,
                     summary.ops, summary.pulses, summary.reads, summary.duration_s)
            if root_id is None:
                if not runner.key_names:
                    raise ProtocolError(f"{src}: the protocol records nothing on this backend "
                                        f"(pre-flight)")
                fields = list(runner.key_names) + [v for v in runner.value_names
                                                    if v not in runner.key_names]
                keys = [column_name(k) for k in runner.key_names]
                values = [column_name(v) for v in fields[len(keys):]]
                md = _metadata(pf, be, backend_cfg)
                md["station_identity"] = station_identity(backend_cfg,
                                                          None if own_backend else be)
                md["column_map"] = {f: column_name(f) for f in fields if column_name(f) != f}
                writer = store.new_run(pf.name, keys=keys, values=values, metadata=md)
                root_id = writer.run_id
                done: set[tuple] = set()
            else:
                writer = store.open_run(root_id)
                keys = list(writer.keys)
                done = set(store.completed_keys(root_id, keys))
            runner.sink = _StoreSink(writer, keys, done)
            runner.journal = _StoreJournal(writer, journal_path(db, root_id))
            try:
                runner.run(pf.plan)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    status = "interrupted"
                exc.memhil_run_id = root_id  # type: ignore[attr-defined]  # for --resume
                exc.memhil_backend = be  # type: ignore[attr-defined]  # its last safe state
                raise
            status = "completed"
            return writer.run_id
        finally:
            try:
                if writer is not None and not writer.closed:
                    writer.close(status)
            finally:
                if own_backend:
                    try:
                        be.close()
                    except Exception:  # re-raised after a completed run, else logged
                        if status == "completed":
                            raise
                        log.exception("closing the backend after a %s run", status)
    finally:
        store.close()
        if new_db and writer is None:  # failed before the run was created: leave no file
            Path(db).unlink(missing_ok=True)


# -- fitting a stored run -----------------------------------------------------------------

def pulse_responses_from_run(store: Any, run_id: int):
    """The mean LTP (start + ltp pulses) and LTD (last LTP read + ltd pulses) curves of a
    stored ``pulse_train`` run, as ``PulseResponse``s, and the number of cells averaged."""
    import torch

    from memhil.calibration.pulse_response import PulseResponse

    root = store.chain(run_id)[0]
    md = store.metadata(root)
    cfg = md.get(_META_CONFIG) or {}
    if cfg.get("protocol") != "pulse_train":
        raise ConfigError("run", f"run {run_id} is not a pulse_train run "
                          f"(protocol {cfg.get('protocol')!r})", str(store.db_path)
                          if hasattr(store, "db_path") else None)
    from memhil.protocols.library.pulse_train import PulseTrainParams
    from memhil.core.config import from_mapping
    p = from_mapping(PulseTrainParams, cfg.get("params") or {})
    if p.several:
        raise ConfigError("run", f"run {run_id} pulses at several amplitudes: fit it with "
                          f"the vteam model (--model vteam)")
    df = store.load(run_id)
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    n_cells = int(df.groupby(cell_cols).ngroups) if cell_cols else 1

    def stats(phase: str):
        sub = df[df["phase"] == phase].groupby("pulse")["g"]
        return sub.mean(), sub.std(ddof=1).fillna(0.0)

    m0, s0 = stats("start")
    mu, su = stats("ltp")
    md_, sd = stats("ltd")
    if len(mu) != p.n_pulses or len(md_) != p.n_pulses or len(m0) != 1:
        raise ValueError(f"run {run_id} is incomplete: {len(mu)} LTP and {len(md_)} LTD "
                         f"pulses of {p.n_pulses}")
    up_m = [float(m0.iloc[0])] + [float(mu[k]) for k in range(1, p.n_pulses + 1)]
    up_s = [float(s0.iloc[0])] + [float(su[k]) for k in range(1, p.n_pulses + 1)]
    dn_m = [up_m[-1]] + [float(md_[k]) for k in range(1, p.n_pulses + 1)]
    dn_s = [up_s[-1]] + [float(sd[k]) for k in range(1, p.n_pulses + 1)]
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731 - a local shorthand
    up = PulseResponse(p.v_ltp, p.width_s, t(up_m), t(up_s))
    down = PulseResponse(p.v_ltd, p.width_s, t(dn_m), t(dn_s))
    return up, down, n_cells


def pulse_sequence_from_run(store: Any, run_id: int):
    """The mean (and across-cell std) conductance of a stored ``pulse_train`` run after
    every pulse, in the order applied, with each pulse's amplitude and width (from the run's
    protocol config; several amplitudes allowed), as a ``PulseSequence``."""
    import numpy as np

    from memhil.calibration.fit.vteam import PulseSequence
    from memhil.core.config import from_mapping
    from memhil.protocols.library.pulse_train import PulseTrainParams, pulse_schedule

    root = store.chain(run_id)[0]
    cfg = store.metadata(root).get(_META_CONFIG) or {}
    if cfg.get("protocol") != "pulse_train":
        raise ConfigError("run", f"run {run_id} is not a pulse_train run "
                          f"(protocol {cfg.get('protocol')!r})")
    p = from_mapping(PulseTrainParams, cfg.get("params") or {})
    schedule = pulse_schedule(p)
    df = store.load(run_id)
    by_n = df.groupby("n")["g"]
    mean, std = by_n.mean(), by_n.std(ddof=1).fillna(0.0)
    if list(mean.index) != list(range(len(schedule) + 1)):
        raise ValueError(f"run {run_id} is incomplete: {len(mean)} reads of "
                         f"{len(schedule) + 1}")
    cell_cols = [c for c in ("tile", "row", "col") if c in df.columns]
    n_cells = int(df.groupby(cell_cols).ngroups) if cell_cols else 1
    return PulseSequence(np.array([a for a, _ in schedule]), np.array([w for _, w in schedule]),
                         mean.to_numpy(float), std.to_numpy(float), n_cells)


FIT_MODELS = ("neurosim", "vteam")


def fit_run(db: str | Path, run_id: int | list[int], *, fixed: Mapping[str, Any] | None = None,
            model: str = "neurosim"):
    """Fit a device model to stored pulse_train run(s): ``neurosim`` (``fit_neurosim``, one
    run with one LTP/LTD amplitude) or ``vteam`` (``fit_vteam``, one or more runs, each with
    one or several amplitudes)."""
    from memhil.store import RunStore

    ids = [int(run_id)] if isinstance(run_id, int) else [int(r) for r in run_id]
    where = f"{Path(db).resolve()} run {', '.join(map(str, ids))} (pulse_train)"
    if model == "vteam":
        from memhil.calibration.fit.vteam import fit_vteam
        with RunStore(db) as store:
            seqs = [pulse_sequence_from_run(store, r) for r in ids]
        return fit_vteam(seqs, fixed=fixed, source=where)
    if model != "neurosim":
        raise ConfigError("model", f"unknown model {model!r} (fits: {list(FIT_MODELS)})")
    if len(ids) != 1:
        raise ConfigError("run_id", f"the neurosim fit takes one run, got {ids}")
    from memhil.calibration.fit.neurosim import fit_neurosim
    with RunStore(db) as store:
        up, down, n = pulse_responses_from_run(store, ids[0])
    return fit_neurosim(up, down, n_cells=n, fixed=fixed, source=where)
