"""A runner sink that writes protocol records into a run of the store.

The run is created on the first record: ints and strings become key columns (die,
subsite, cell, step, phase...), floats and booleans value columns, so any protocol's
records fit without declaring their columns up front.
"""

from __future__ import annotations

from typing import Any, Mapping

from memhil.store.run_store import RunStore, RunWriter


class StoreSink:
    """``sink.add(**point)`` -> one row of a store run named ``name`` (with ``metadata``);
    pass ``writer`` to append to a reopened run (resume)."""

    def __init__(self, store: RunStore, name: str, metadata: Mapping[str, Any] | None = None,
                 *, writer: RunWriter | None = None):
        self.store, self.name, self.metadata = store, name, dict(metadata or {})
        self.writer = writer

    def add(self, **point: Any) -> None:
        if self.writer is None:
            keys = [k for k, v in point.items() if _is_key(v)]
            values = [k for k in point if k not in keys]
            self.writer = self.store.new_run(self.name, keys=keys, values=values,
                                             metadata=self.metadata)
        self.writer.add(**{k: (float(v) if isinstance(v, bool) else v) for k, v in point.items()})

    @property
    def run_id(self) -> int | None:
        return None if self.writer is None else self.writer.run_id

    def close(self, status: str = "completed") -> None:
        if self.writer is not None:
            self.writer.close(status)


def _is_key(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
