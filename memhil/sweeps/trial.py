"""One trial, where it runs (a Ray worker, or the driver's own process): ``run_trial``
yields a ``TrialStarted`` as it begins and a ``TrialResult`` at the end.

The trial runs into a scratch run store in a temporary folder of the worker's own disk
and hands its run back as a ``RunRecord``: the sweep's database has one writer, the
driver (``memhil.store.run_records``). A trial that raises is a result too (its error
and whatever its run stored), so one failed trial never stops a sweep.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from memhil.store.run_records import RunRecord

__all__ = ["TrialResult", "TrialSpec", "TrialStarted", "run_trial"]


@dataclass(frozen=True)
class TrialSpec:
    """What a worker needs to run a trial: its number, the kind and path of the base run
    file and the trial's content of it (plain data: it travels to the worker)."""

    index: int
    kind: str
    base: str
    data: dict


@dataclass(frozen=True)
class TrialStarted:
    index: int
    t_start_s: float  # unix time, on the worker's clock
    host: str
    pid: int


@dataclass(frozen=True)
class TrialResult:
    """How a trial ended: its run (None when it failed before the run was created), the
    error (one line, and the full trace) when it raised, and when it ran."""

    index: int
    record: RunRecord | None
    error: str | None
    trace: str | None
    t_start_s: float
    t_end_s: float
    host: str


def _host() -> str:
    return socket.gethostname()


def run_trial(spec: TrialSpec) -> Iterator[TrialStarted | TrialResult]:
    """Run trial ``spec`` into a scratch store; see the module docstring."""
    from memhil.store import RunStore
    from memhil.store.run_records import read_run_record
    from memhil.sweeps.run_kinds import RUN_KINDS

    t0 = time.time()
    yield TrialStarted(spec.index, t0, _host(), os.getpid())
    kind = RUN_KINDS[spec.kind]
    error = trace = None
    record = None
    with tempfile.TemporaryDirectory(prefix="memhil-trial-") as tmp:
        db = Path(tmp) / "trial.db"
        try:
            kind.run(kind.load(spec.data, Path(spec.base)), db)
        except Exception as exc:  # noqa: BLE001  (any failure is the trial's result, recorded)
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            trace = traceback.format_exc()
        if db.exists():
            store = RunStore(db)
            try:
                roots = [r.run_id for r in store.runs() if r.continues is None]
                if roots:
                    record = read_run_record(store, roots[-1])
            finally:
                store.close()
    t1 = time.time()
    yield TrialResult(spec.index, record, error, trace, t0, t1, _host())
