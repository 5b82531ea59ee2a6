"""Whether the process writing a "running" run is still alive.

A run's status is written by its own process: a process killed by ``kill -9``, a crash
or a power cut never writes that it stopped, so its run would read "running" forever. The
writer's identity (host, pid and the process's start time, so a recycled pid is not taken
for it) is stored beside the status, and a run whose writer is gone from this host is
shown as ``died``: resumable with ``--resume``, never "running". A writer on another host
cannot be checked from here and its run is shown as stored.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import psutil

__all__ = ["META_WRITER", "DIED", "shown_status", "writer_identity"]

#: Metadata key of the writer's identity (JSON: host, pid, started_s).
META_WRITER = "memhil_writer"
#: The status shown for a "running" run whose writer process no longer exists.
DIED = "died"


def _started_s(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def writer_identity() -> str:
    """This process as a run's writer (the metadata value of ``META_WRITER``)."""
    pid = os.getpid()
    return json.dumps({"host": socket.gethostname(), "pid": pid, "started_s": _started_s(pid)})


def _alive(writer: Any) -> bool:
    try:
        w = json.loads(writer) if isinstance(writer, str) else dict(writer)
        host, pid, started = str(w["host"]), int(w["pid"]), w.get("started_s")
    except (TypeError, ValueError, KeyError):
        return True  # not ours to judge: shown as stored
    if host != socket.gethostname():
        return True  # another machine's process: cannot be checked from here
    now_started = _started_s(pid)
    if now_started is None:
        return False
    # psutil's create time is rounded to the clock tick: the same process within 1 s
    return started is None or abs(now_started - float(started)) < 1.0


def shown_status(stored: str, writer: Any) -> str:
    """The status to show for a run stored as ``stored`` whose writer metadata is
    ``writer`` (None for runs written before writers were recorded)."""
    if stored == "running" and writer is not None and not _alive(writer):
        return DIED
    return stored
