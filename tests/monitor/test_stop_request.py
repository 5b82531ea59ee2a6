"""A stop request ends a protocol between units: the unit in flight committed, the safe
state entered, the rest left to a resume."""

from __future__ import annotations

import pytest

from memhil.backends.sim import SimBackend
from memhil.protocols import Runner, StopRequested, build_protocol
from memhil.protocols.journal import ListSink, MemoryJournal
from memhil.store.stop_request import clear_stop, request_stop, stop_path, stop_requested


def test_a_stop_before_the_third_unit_keeps_two_units_and_enters_the_safe_state():
    backend = SimBackend({"rows": 4, "cols": 4, "seed": 1})
    asked = []
    safe = []

    def stop() -> bool:  # asked before each unit; the request arrives during the second
        asked.append(1)
        return len(asked) >= 3

    journal, sink = MemoryJournal(), ListSink()
    runner = Runner(
        backend,
        sink=sink,
        journal=journal,
        progress=False,
        stop_requested=stop,
        safe_state=lambda: safe.append(True),
    )
    params = {"n_pulses": 3, "v_ltp": [1.0, 1.2], "v_ltd": [-1.0, -1.2], "cells": [[0, 0, 0]]}
    with pytest.raises(StopRequested, match="stop requested before unit"):
        runner.run(build_protocol("pulse_train", params))
    assert isinstance(StopRequested("x"), KeyboardInterrupt)  # the Ctrl-C path
    assert len(journal.keys) == 2 and safe == [True]
    # the start unit (1 point) and the first LTP train (3 points) are stored, nothing more
    assert len(sink.points) == 1 + 3


def test_the_request_is_a_file_beside_the_store(tmp_path):
    db = tmp_path / "runs.db"
    assert not stop_requested(db, 4)
    path = request_stop(db, 4, by="test")
    assert path == stop_path(db, 4) == tmp_path / "runs.db.run4.stop"
    assert stop_requested(db, 4) and not stop_requested(db, 5)
    clear_stop(db, 4)
    clear_stop(db, 4)  # idempotent
    assert not stop_requested(db, 4)


def test_runs_stop_asks_a_running_run_and_refuses_a_finished_one(tmp_path, capsys):
    from memhil.cli import main
    from memhil.store import RunStore

    db = tmp_path / "runs.db"
    with RunStore(db) as store:
        running = store.new_run("training", keys=["a"], values=["v"])  # this process writes it
        done = store.new_run("map", keys=["a"], values=["v"])
        done.close("completed")
        assert main(["runs", "stop", str(running.run_id), "--db", str(db)]) == 0
        assert stop_requested(db, running.run_id)
        assert "stops after its unit or epoch in flight" in capsys.readouterr().out
        assert main(["runs", "stop", str(done.run_id), "--db", str(db)]) == 2
        assert "is completed, not running: nothing to stop" in capsys.readouterr().err
        assert not stop_requested(db, done.run_id)
        running.close("interrupted")
