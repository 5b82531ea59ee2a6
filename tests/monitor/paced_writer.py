"""Protocol runs in a process of their own, on the mock lab slowed to a bench's pace: every
emulated instrument answers ``latency_s`` late (wall time), so a monitor test sees points
arrive over seconds, as from a real bench. While a run's HOLD file exists, from its first
unit on, every reply is ``HOLD_LATENCY_S`` late instead: the test holds the run slow until
it has seen what it checks (no race between a fast run and a slow page), then lets it
finish quickly. One JSON line per run: its id, how it ended and the safe state the
instruments confirmed.

    python -m tests.monitor.paced_writer DB STATION.yaml LATENCY_S (PROTOCOL HOLD)...

The runs share one process (one start-up: imports, the mock lab) and run one after the
other: QCoDeS creates runs in one database from one process at a time.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

HOLD_LATENCY_S = 0.3


def main(db: str, station: str, latency_s: float, runs: list[tuple[str, str]]) -> int:
    from memhil.mock_hw.lab import MockLab
    from memhil.protocols import StopRequested
    from memhil.runs.protocol_run import run_protocol_file

    backend = MockLab.open_backend(station)
    faults = [backend.lab.faults(name) for name in backend.lab.emulators]
    state = {"hold": None, "units0": 0}
    done = threading.Event()

    def units() -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                return int(c.execute("SELECT count(*) FROM memhil_units").fetchone()[0])
        except sqlite3.Error:
            return 0

    def pace() -> None:  # held from the run's first unit on: the set-up runs at full speed
        while not done.is_set():
            hold = state["hold"]
            held = hold is not None and Path(hold).exists() and units() > state["units0"]
            for f in faults:
                f.latency_s = HOLD_LATENCY_S if held else latency_s
            time.sleep(0.05)

    threading.Thread(target=pace, daemon=True).start()
    try:
        for protocol, hold in runs:
            state["units0"], state["hold"] = units(), hold
            out: dict = {}
            try:
                out["run_id"] = run_protocol_file(protocol, backend=backend, db=db, progress=False)
                out["outcome"] = "completed"
            except StopRequested as exc:
                out["run_id"] = exc.memhil_run_id  # type: ignore[attr-defined]
                out["outcome"] = "stopped"
            report = backend.last_safe_state
            out["safe_state_confirmed"] = bool(getattr(report, "confirmed", False))
            out["safe_state"] = [] if report is None else report.lines()
            out["sources_off"] = backend.lab.sources_off()
            print(json.dumps(out), flush=True)
    finally:
        done.set()
        backend.close()
    return 0


if __name__ == "__main__":
    a = sys.argv[1:]
    pairs = [(a[k], a[k + 1]) for k in range(3, len(a), 2)]
    sys.exit(main(a[0], a[1], float(a[2]), pairs))
