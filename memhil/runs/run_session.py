"""The life of one run of a file, shared by protocol and experiment runs.

Both kinds of file run in the same order (docs/runs.md): the backend configuration is
chosen, the file pre-flighted on a dry stand-in (nothing contacted, no database opened),
the run store opened, a ``--resume`` checked against the interrupted run before any
instrument is opened, the backend opened, and only then does the caller create or reopen
its run. On the way out the run is closed with its status, a stop request it honoured is
cleared, the backend (when this session opened it) is closed into its confirmed safe
state, and a database this session created is removed if no run was ever written to it.
An exception raised after the run exists carries ``memhil_run_id`` (what ``--resume``
continues) and ``memhil_backend`` (its last safe-state report) for the command line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from memhil.core.errors import ConfigError
from memhil.runs.backend_config import open_backend
from memhil.runs.protocol_file import META_FILE, chosen_backend, plain
from memhil.store.stop_request import clear_stop, stop_requested

log = logging.getLogger(__name__)

__all__ = [
    "RunSession",
    "backend_provenance",
    "find_resumable_run",
    "resume_root",
    "run_session",
    "station_identity",
]


@dataclass
class RunSession:
    """What the body of ``run_session`` works with: the open store and backend, the run
    chain to resume (``root_id``, None for a new run) and, once ``attach`` was called,
    the run's writer. ``status`` becomes "completed" when the body returns normally."""

    store: Any
    backend: Any
    own_backend: bool
    backend_cfg: Any
    db: str | Path
    root_id: int | None
    writer: Any = None
    status: str = "failed"

    def attach(self, writer: Any) -> None:
        """The run now exists: record into ``writer`` (a new run, or the next run of the
        resumed chain). A stop request left from before is cleared, so it cannot stop
        this run before the user asks again."""
        self.writer = writer
        if self.root_id is None:
            self.root_id = int(writer.run_id)
        clear_stop(self.db, self.root_id)

    def provenance(self) -> dict:
        """Run metadata saying where the run ran (``backend_provenance``) and what a
        resume must run on again (``station_identity``)."""
        borrowed = None if self.own_backend else self.backend
        return {
            **backend_provenance(self.backend, self.backend_cfg),
            "station_identity": station_identity(self.backend_cfg, borrowed),
        }

    def stop_requested(self) -> bool:
        """True when ``memhil runs stop`` or the monitor asked this run to stop."""
        return self.root_id is not None and stop_requested(self.db, self.root_id)


@contextlib.contextmanager
def run_session(
    path: Path,
    file_backend: Any,
    *,
    backend: Any,
    db: str | Path,
    resume: bool | int | None,
    visa_library: str | None,
    preflight_offline: Callable[[Any], object],
    check_resume: Callable[[Any, dict, Any, int], None],
) -> Iterator[RunSession]:
    """Open what a run of the file at ``path`` needs and close it in the safe order.

    ``backend``: a configuration, or an open Backend (borrowed: the caller closes it);
    None takes ``file_backend``. ``preflight_offline(backend_cfg)`` checks the file on a
    dry stand-in; ``check_resume(metadata, station_identity, backend_cfg, root_id)``
    refuses a resume with a changed file or station (ConfigError naming file and key).
    """
    from memhil.backends.base import Backend
    from memhil.store import RunStore

    src = str(path)
    own_backend = not isinstance(backend, Backend)
    backend_cfg = chosen_backend(file_backend, backend, src) if own_backend else None
    if own_backend:  # every check the files allow, before any instrument or database
        preflight_offline(backend_cfg)
    new_db = not Path(db).exists()
    store = RunStore(db)
    session: RunSession | None = None
    try:
        root_id = resume_root(store, path, resume, src, db)
        if root_id is not None:  # before any instrument is opened: same file, same station
            identity = station_identity(backend_cfg, None if own_backend else backend)
            check_resume(store.metadata(root_id), identity, backend_cfg, root_id)
        visa = {} if visa_library is None else {"visa_library": visa_library}
        be = open_backend(cast(Any, backend_cfg), source=src, **visa) if own_backend else backend
        session = RunSession(store, be, own_backend, backend_cfg, db, root_id)
        try:
            yield session
            session.status = "completed"
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                session.status = "interrupted"
            if session.writer is not None:
                exc.memhil_run_id = session.root_id  # type: ignore[attr-defined]  # for --resume
                exc.memhil_backend = be  # type: ignore[attr-defined]  # its last safe state
            raise
        finally:
            _close(session)
    finally:
        store.close()
        if new_db and (session is None or session.writer is None):
            Path(db).unlink(missing_ok=True)  # failed before the run was created: no file


def _close(session: RunSession) -> None:
    """Close the run with its status, clear an honoured stop request, then close a
    backend this session opened (its close confirms the safe state). A failure to close
    the backend is raised after a completed run and logged after a failed one, whose own
    error is the one the user must see."""
    try:
        if session.writer is not None and not session.writer.closed:
            session.writer.close(session.status)
        if session.writer is not None and session.root_id is not None:
            clear_stop(session.db, session.root_id)
    finally:
        if session.own_backend:
            try:
                session.backend.close()
            except Exception:
                if session.status == "completed":
                    raise
                log.exception("closing the backend after a %s run", session.status)


def backend_provenance(backend: Any, backend_cfg: Any) -> dict:
    """What a run records about where it ran: the backend configuration, capabilities,
    calibration versions, the station snapshot (or mock device) and the device model."""
    caps = backend.capabilities
    desc = backend.describe()
    md: dict[str, Any] = {
        "backend_config": plain(backend_cfg) if backend_cfg is not None else type(backend).__name__,
        "capabilities": caps.as_dict(),
        "calibration_versions": _calibration_versions(backend, desc),
    }
    for key in ("station", "mock_device"):
        if key in desc:
            md[key] = plain(desc[key])
    md["device_model"] = plain(desc["device_model"])
    return md


def _calibration_versions(backend: Any, desc: dict) -> dict:
    from memhil.calibration.versions import calibration_versions

    try:
        return calibration_versions(backend, desc)
    except Exception as exc:
        log.exception("recording calibration versions")
        return {"error": repr(exc)}


def station_identity(backend_cfg: Any, backend: Any = None) -> dict:
    """What a resumed run must run on again: the station file's content (name, chip,
    limits, instruments, wiring, mock section) for ``station`` / ``mock_lab``, the simulator
    configuration for ``sim``; for an open Backend passed in, its station's configuration
    or its shape and device model. Read from the files only: nothing is connected."""
    from memhil.instruments.station import load_station_config

    if backend is not None:
        desc = backend.describe()
        if "station_config" in desc:
            return {"kind": "station", "station": plain(desc["station_config"])}
        return {
            "kind": type(backend).__name__,
            "shape": list(backend.shape),
            "device_model": plain(backend.capabilities.device_model),
        }
    cfg = {"sim": {}} if backend_cfg == "sim" else dict(backend_cfg)
    kind = next(k for k in ("sim", "station", "mock_lab") if k in cfg)
    extra = {k: plain(v) for k, v in cfg.items() if k != kind}
    if kind == "sim":
        return {"kind": "sim", "sim": plain(cfg["sim"] or {}), **extra}
    station = load_station_config(cfg[kind]).to_dict()
    return {"kind": kind, "station": plain(station), **extra}


def resume_root(store: Any, path: Any, resume: bool | int | None, src: str, db: Any) -> int | None:
    """The root run a ``--resume`` continues (True: the most recent unfinished run of the
    file at ``path``; an int: that run's chain), or None for a new run."""
    if resume is False or resume is None:
        return None
    root_id = find_resumable_run(store, path) if resume is True else int(resume)
    if root_id is None:
        raise ConfigError("resume", f"no unfinished run of {src} in {db}", src)
    return store.chain(root_id)[0]


def find_resumable_run(store: Any, protocol_path: str | Path) -> int | None:
    """The most recent run of ``protocol_path`` whose chain did not complete."""
    from memhil.store.run_records import META_SWEEP_TRIAL

    target = str(Path(protocol_path).resolve())
    infos = {r.run_id: r for r in store.runs()}
    best = None
    for rid, info in infos.items():
        if info.continues is not None:
            continue  # look at roots; the chain's last run decides
        md = store.metadata(rid)
        if md.get(META_FILE) != target or META_SWEEP_TRIAL in md:
            continue  # another file's run, or a sweep's trial (`memhil sweep --resume`)
        last = store.chain(rid)[-1]
        if infos[last].status != "completed":
            best = rid if best is None else max(best, rid)
    return best
