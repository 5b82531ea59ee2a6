"""Checkpoint journals and record sinks for the Runner.

A journal has ``done(key) -> bool``, ``start(key) -> attempt`` (called when a unit opens,
before its first operation; an attempt > 1 means the unit's operations may be applied again
after an interruption) and ``commit(key, flush)`` (store the unit's points by calling
``flush`` and mark the unit done; a journal kept in the run store does both in one
transaction); a sink has ``add(**point)``. Keys are tuples of JSON scalars; they are
compared as their JSON text.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def key_text(key: Iterable[Any]) -> str:
    return json.dumps(list(key), separators=(",", ":"), default=str)


class MemoryJournal:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self._set: set[str] = set()
        self.attempts: dict[str, int] = {}  # key text -> times the unit was started

    def done(self, key: tuple) -> bool:
        return key_text(key) in self._set

    def start(self, key: tuple) -> int:
        text = key_text(key)
        self.attempts[text] = self.attempts.get(text, 0) + 1
        return self.attempts[text]

    def commit(self, key: tuple, flush: Any) -> None:
        """Store the unit's points (``flush()``), then mark it done."""
        flush()
        self.mark(key)

    def mark(self, key: tuple) -> None:
        text = key_text(key)
        if text not in self._set:
            self._set.add(text)
            self.keys.append(text)


class JournalFile(MemoryJournal):
    """JSON lines ``{"key": [...], "t": unix time}``, one per completed unit, and
    ``{"started": [...], "t": ...}`` per unit opened, flushed (and fsynced) per entry; an
    existing file is loaded, so a new Runner resumes from it. A torn last line (crash
    mid-write) is ignored. The points and the done line are two writes: a store that must
    agree with the journal after a crash keeps the journal itself (the run store does)."""

    def __init__(self, path: str | Path, *, fsync: bool = True):
        super().__init__()
        self.path = Path(path)
        self.fsync = fsync
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "started" in entry:
                    MemoryJournal.start(self, tuple(entry["started"]))
                else:
                    MemoryJournal.mark(self, tuple(entry["key"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, entry: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({**entry, "t": time.time()}) + "\n")
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def start(self, key: tuple) -> int:
        self._append({"started": json.loads(key_text(key))})
        return super().start(key)

    def mark(self, key: tuple) -> None:
        if self.done(key):
            return
        self._append({"key": json.loads(key_text(key))})
        super().mark(key)


class ListSink:
    """In-memory sink: ``points`` is a list of dicts."""

    def __init__(self) -> None:
        self.points: list[dict[str, Any]] = []

    def add(self, **point: Any) -> None:
        self.points.append(point)

    def where(self, **match: Any) -> list[dict[str, Any]]:
        return [p for p in self.points if all(p.get(k) == v for k, v in match.items())]
