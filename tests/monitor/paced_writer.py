"""A protocol run in a process of its own, on the mock lab slowed to a bench's pace: every
emulated instrument answers ``latency_s`` late (wall time), so a monitor test sees points
arrive over seconds, as from a real bench. While the file ``HOLD`` exists, from the run's
first unit on, every reply is ``HOLD_LATENCY_S`` late instead: the test holds the run slow
until it has seen what it checks (no race between a fast run and a slow page), then lets it
finish quickly. Prints
one JSON line: the run id, how it ended and the safe state the instruments confirmed.

    python -m tests.monitor.paced_writer DB PROTOCOL.yaml STATION.yaml LATENCY_S HOLD [GO]

With GO, the run starts once that file exists (the start-up before it: imports, the mock
lab): QCoDeS creates runs in one database from one process at a time.
"""

from __future__ import annotations

import json
import sys

HOLD_LATENCY_S = 0.3


def main(
    db: str, protocol: str, station: str, latency_s: float, hold: str, go: str | None = None
) -> int:
    import contextlib
    import sqlite3
    import threading
    import time
    from pathlib import Path

    from memhil.mock_hw.lab import MockLab
    from memhil.protocols import StopRequested
    from memhil.runs.protocol_run import run_protocol_file

    backend = MockLab.open_backend(station)
    faults = {name: backend.lab.faults(name) for name in backend.lab.emulators}
    done = threading.Event()

    def units_started() -> bool:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                return c.execute("SELECT count(*) FROM memhil_units").fetchone()[0] > 0
        except sqlite3.Error:
            return False

    def pace() -> None:  # held from the first unit on: the set-up before runs at full speed
        while not done.is_set():
            held = Path(hold).exists() and units_started()
            for f in faults.values():
                f.latency_s = HOLD_LATENCY_S if held else latency_s
            time.sleep(0.05)

    threading.Thread(target=pace, daemon=True).start()
    while go is not None and not Path(go).exists():
        time.sleep(0.05)
    out: dict = {}
    try:
        out["run_id"] = run_protocol_file(protocol, backend=backend, db=db, progress=False)
        out["outcome"] = "completed"
    except StopRequested as exc:
        out["run_id"] = exc.memhil_run_id  # type: ignore[attr-defined]
        out["outcome"] = "stopped"
    done.set()
    report = backend.last_safe_state
    out["safe_state_confirmed"] = bool(getattr(report, "confirmed", False))
    out["safe_state"] = [] if report is None else report.lines()
    out["sources_off"] = backend.lab.sources_off()
    backend.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0], args[1], args[2], float(args[3]), args[4], *args[5:6]))
