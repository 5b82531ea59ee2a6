"""Checkpoint journals and record sinks for the Runner.

A journal has ``done(key) -> bool`` and ``mark(key)``; a sink has ``add(**point)``. Keys
are tuples of JSON scalars; they are compared as their JSON text.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable


def key_text(key: Iterable[Any]) -> str:
    return json.dumps(list(key), separators=(",", ":"), default=str)


class MemoryJournal:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self._set: set[str] = set()

    def done(self, key: tuple) -> bool:
        return key_text(key) in self._set

    def mark(self, key: tuple) -> None:
        text = key_text(key)
        if text not in self._set:
            self._set.add(text)
            self.keys.append(text)


class JournalFile(MemoryJournal):
    """JSON lines ``{"key": [...], "t": unix time}``, one per completed unit, flushed (and
    fsynced) per entry; an existing file is loaded, so a new Runner resumes from it. A
    torn last line (crash mid-write) is ignored."""

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
                MemoryJournal.mark(self, tuple(entry["key"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def mark(self, key: tuple) -> None:
        if self.done(key):
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"key": json.loads(key_text(key)), "t": time.time()}) + "\n")
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        super().mark(key)


class ListSink:
    """In-memory sink: ``points`` is a list of dicts."""

    def __init__(self) -> None:
        self.points: list[dict[str, Any]] = []

    def add(self, **point: Any) -> None:
        self.points.append(point)

    def where(self, **match: Any) -> list[dict[str, Any]]:
        return [p for p in self.points if all(p.get(k) == v for k, v in match.items())]
