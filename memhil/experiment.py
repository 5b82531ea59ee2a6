"""Run a protocol file into the run store: ``run_protocol_file(path, ...) -> run_id``.

A protocol file (YAML)::

    protocol: pulse_train                     # a registered protocol (memhil.protocols)
    params: {n_pulses: 20, v_ltp: 2.0, v_ltd: -2.0, width_s: 8.0e-8}
    backend: {mock_lab: ../mock_wafer_station.yaml}   # relative paths: against this file
    name: ltp_demo                            # optional run name (default: the file stem)
    description: free text                    # optional

Order of work: the file is parsed and the protocol built (ConfigError naming file and
key), the backend opened, the plan PRE-FLIGHTED on a dry backend (limit/prober errors),
and only then the run is created and the plan executed. Points go to a ``RunStore`` run
(keys and values are the record keys and values the protocol yields), the unit journal
is a ``JournalFile`` beside the database (``<db>.run<id>.journal``, ``id`` the first run
of the chain). ``resume`` reopens an unfinished run: the journal skips completed units
and points already in the store are never written twice.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from memhil.backend_config import open_backend
from memhil.config import load_yaml
from memhil.errors import ConfigError, LimitError
from memhil.protocols import (JournalFile, ProtocolError, ProtocolLimitError, Runner,
                              build_protocol)
from memhil.protocols.plan import Record

log = logging.getLogger(__name__)

__all__ = ["ProtocolFile", "load_protocol_file", "run_protocol_file", "journal_path",
           "find_resumable_run", "PROTOCOL_FILE_KEYS", "column_name"]

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
    points whose key is already stored (a unit written but not yet journaled when the
    previous attempt died)."""

    def __init__(self, writer: Any, keys: list[str], done: set[tuple]):
        self.writer = writer
        self.keys = keys  # store column names
        self.done = done
        self.written = 0
        self.skipped = 0

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
        self.writer.add(**row)
        self.done.add(k)
        self.written += 1


def _metadata(pf: ProtocolFile, backend: Any, backend_cfg: Any) -> dict:
    caps = backend.capabilities
    md: dict[str, Any] = {
        _META_FILE: str(pf.path),
        _META_CONFIG: pf.config(),
        "backend_config": _plain(backend_cfg) if backend_cfg is not None
        else type(backend).__name__,
        "capabilities": caps.as_dict() if hasattr(caps, "as_dict") else _plain(caps),
        "calibration_versions": {},
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


def _file_limit_error(exc: ProtocolLimitError, pf: ProtocolFile) -> ProtocolLimitError:
    """The pre-flight's limit error, naming the file and its ``params.`` keys."""
    names = [n.strip() for n in exc.param.split("/")]
    keys = " / ".join("params." + n.split(".", 1)[1] if n.startswith(pf.protocol + ".")
                      else n for n in names)
    inner = exc.quantity[len(exc.param) + 2:-1] if exc.quantity.startswith(exc.param + " (") \
        else exc.quantity
    return ProtocolLimitError(f"{pf.path}: {keys}", LimitError(inner, exc.value, exc.limit, exc.unit))


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
                      progress: bool = True) -> int:
    """Run a protocol file; returns the run id the points were written to.

    ``backend``: a backend configuration ("sim", ``{sim: {...}}``, ``{station: yaml}``,
    ``{mock_lab: yaml}``; paths relative to the working directory), or an open Backend
    (the caller closes it); default: the file's ``backend:`` entry (paths relative to the
    file). ``resume``: True continues the most recent unfinished run of this file, an int
    that run id.
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
    store = RunStore(db)
    try:
        root_id = None
        if resume is not False and resume is not None:
            root_id = find_resumable_run(store, pf.path) if resume is True else int(resume)
            if root_id is None:
                raise ConfigError("resume", f"no unfinished run of {src} in {db}", src)
            root_id = store.chain(root_id)[0]
            md = store.metadata(root_id)
            if md.get(_META_CONFIG, {}).get("protocol") not in (None, pf.protocol):
                raise ConfigError("resume", f"run {root_id} is a "
                                  f"{md[_META_CONFIG]['protocol']!r} run, not {pf.protocol!r}", src)
        be = open_backend(backend_cfg, source=src) if own_backend else backend
        writer = None
        status = "failed"
        try:
            runner = _SchemaRunner(be, progress=progress)
            try:
                summary = runner.preflight(pf.plan)  # nothing reaches the instruments
            except ProtocolLimitError as exc:
                raise _file_limit_error(exc, pf) from None
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
                md["column_map"] = {f: column_name(f) for f in fields if column_name(f) != f}
                writer = store.new_run(pf.name, keys=keys, values=values, metadata=md)
                root_id = writer.run_id
                done: set[tuple] = set()
            else:
                writer = store.open_run(root_id)
                keys = list(writer.keys)
                done = set(store.completed_keys(root_id, keys))
            runner.sink = _StoreSink(writer, keys, done)
            runner.journal = JournalFile(journal_path(db, root_id))
            try:
                runner.run(pf.plan)
            except KeyboardInterrupt:
                status = "interrupted"
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
                    except Exception:  # noqa: BLE001
                        if status == "completed":
                            raise
                        log.exception("closing the backend after a %s run", status)
    finally:
        store.close()


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
    from memhil.protocols.pulse_train import PulseTrainParams
    from memhil.config import from_mapping
    p = from_mapping(PulseTrainParams, cfg.get("params") or {})
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
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    up = PulseResponse(p.v_ltp, p.width_s, t(up_m), t(up_s))
    down = PulseResponse(p.v_ltd, p.width_s, t(dn_m), t(dn_s))
    return up, down, n_cells


def fit_run(db: str | Path, run_id: int, *, fixed: Mapping[str, Any] | None = None):
    """Fit the NeuroSim model to a stored pulse_train run (``fit_neurosim``)."""
    from memhil.calibration.fit import fit_neurosim
    from memhil.store import RunStore

    with RunStore(db) as store:
        up, down, n = pulse_responses_from_run(store, run_id)
    return fit_neurosim(up, down, n_cells=n, fixed=fixed,
                        source=f"{Path(db).resolve()} run {run_id} (pulse_train)")
