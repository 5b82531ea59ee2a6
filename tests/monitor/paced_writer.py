"""A protocol run in a process of its own, on the mock lab slowed to a bench's pace: every
emulated instrument answers ``latency_s`` late (wall time), so a monitor test sees points
arrive over seconds, as from a real bench. Prints one JSON line: the run id, how it ended
and the safe state the instruments confirmed.

    python -m tests.monitor.paced_writer DB PROTOCOL.yaml STATION.yaml LATENCY_S
"""

from __future__ import annotations

import json
import sys


def main(db: str, protocol: str, station: str, latency_s: float) -> int:
    from memhil.mock_hw.lab import MockLab
    from memhil.protocols import StopRequested
    from memhil.runs.protocol_run import run_protocol_file

    backend = MockLab.open_backend(station)
    for name in backend.lab.emulators:
        backend.lab.faults(name).latency_s = latency_s
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
    backend.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
