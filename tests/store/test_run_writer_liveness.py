"""A run whose writer process is gone is shown as "died", never "running" (the kill itself
is in test_run_store.py::test_unclosed_writer_in_killed_process_keeps_points)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from memhil.store import RunStore
from memhil.store.run_writer_liveness import META_WRITER, shown_status

# this host and this pid, but a process started at another time: a recycled pid
_RECYCLED = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started_s": 1.0})


def test_a_live_writer_shows_running_and_resuming_a_died_run_makes_it_running(tmp_path: Path):
    with RunStore(tmp_path / "runs.db") as store:
        w = store.new_run("live", keys=["step"], values=["g"])
        w.add(step=0, g=1e-6)
        assert {r.run_id: r.status for r in store.runs()}[w.run_id] == "running"
        w._ds.add_metadata(META_WRITER, _RECYCLED)  # its writer is gone
        assert {r.run_id: r.status for r in store.runs()}[w.run_id] == "died"
        again = store.open_run(w.run_id)  # this process writes it now
        assert {r.run_id: r.status for r in store.runs()}[again.run_id] == "running"
        again.close("completed")
        assert {r.run_id: r.status for r in store.runs()}[again.run_id] == "completed"


def test_writers_that_cannot_be_checked_from_here_are_shown_as_stored():
    other_host = json.dumps({"host": "another-machine.example", "pid": 1, "started_s": 0.0})
    assert shown_status("running", other_host) == "running"
    assert shown_status("running", None) == "running"  # a run from before writers were kept
    assert shown_status("running", "not json") == "running"
    assert shown_status("running", _RECYCLED) == "died"
    assert shown_status("completed", _RECYCLED) == "completed"
