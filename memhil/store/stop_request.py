"""A request to stop a run, as a file beside the run store: ``<db>.run<root id>.stop``.

The monitor opens the database read-only, so the request cannot travel in it; a file
beside it (as the unit journal of older versions did) reaches the writing process without
a socket, a signal or a killed process. The runner looks for it between units, finishes
the unit in flight, enters its confirmed safe state and leaves the run resumable, exactly
as after Ctrl-C (docs/monitor.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

__all__ = ["clear_stop", "request_stop", "stop_path", "stop_requested"]


def stop_path(db: str | Path, root_run: int) -> Path:
    """The stop-request file of the run chain rooted at ``root_run`` in database ``db``."""
    return Path(f"{db}.run{int(root_run)}.stop")


def request_stop(db: str | Path, root_run: int, *, by: str = "monitor") -> Path:
    """Ask the process writing ``root_run`` to stop after its unit in flight. The file is
    written under a temporary name and renamed, so a reader never sees half of it."""
    path = stop_path(db, root_run)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"requested_at": time.time(), "by": by}))
    os.replace(tmp, path)
    return path


def stop_requested(db: str | Path, root_run: int) -> bool:
    """True when a stop of ``root_run`` was requested and not yet honoured."""
    return stop_path(db, root_run).exists()


def clear_stop(db: str | Path, root_run: int) -> None:
    """Remove an honoured (or stale) request, so a resumed run is not stopped again."""
    with contextlib.suppress(FileNotFoundError):
        stop_path(db, root_run).unlink()
