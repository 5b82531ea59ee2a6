"""Kill-point driver for ``test_kill_points``: run a protocol file into a run store,
killed (``os._exit`` in a forked child, no clean-up of any kind) after the n-th pulse or
just before / just after the n-th SQLite commit, then resume it, for every such n; print
one JSON report. Run as ``python -m tests.store.killpoints WORKDIR`` (a fresh process, so
that ``fork`` copies no threads)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # before any torch op: a forked child then inherits no thread pool

from qcodes.dataset.sqlite.connection import AtomicConnection  # noqa: E402

from memhil.backends.base import Backend  # noqa: E402
from memhil.core.errors import ConfigError  # noqa: E402
from memhil.protocols.dry import DryBackend  # noqa: E402
from memhil.protocols.journal import key_text  # noqa: E402
from memhil.protocols.plan import Checkpoint  # noqa: E402
from memhil.protocols.runner import Runner  # noqa: E402
from memhil.runs.protocol_run import run_protocol_file  # noqa: E402
from memhil.store import RunStore  # noqa: E402

PROTOCOL = """protocol: pulse_train
name: killpoints
params: {n_pulses: 3, v_ltp: 2.0, v_ltd: -2.0, width_s: 1.0e-7, cells: [[0, 0, 0], [0, 1, 1]]}
backend: {sim: {rows: 2, cols: 2}}
"""
KILLED = 86

state = {"kill": None, "pulses": 0, "commits": 0, "log": None, "opened": None}


def _log(line: str) -> None:
    if state["log"] is not None:
        os.write(state["log"], (line + "\n").encode())  # unbuffered: survives os._exit


def _maybe_kill(kind: str, n: int) -> None:
    if state["kill"] == (kind, n):
        os._exit(KILLED)


real_pulse = Backend.pulse
real_commit = AtomicConnection.commit
real_runner_init = Runner.__init__


def pulse(self, cells=None, amplitude=None, width_s=None, count=1, **kw):
    out = real_pulse(self, cells, amplitude, width_s, count, **kw)
    if isinstance(self, DryBackend):  # the pre-flight: nothing applied
        return out
    state["pulses"] += 1
    n_cells = self.shape[0] * self.shape[1] * self.shape[2] if cells is None else len(cells)
    _log(f"P {int(count) * n_cells}")
    _maybe_kill("pulse", state["pulses"])
    return out


def commit(self):
    state["commits"] += 1
    _log(f"C {state['commits']}")
    _maybe_kill("before-commit", state["commits"])
    real_commit(self)
    _maybe_kill("after-commit", state["commits"])


def runner_init(self, *a, **kw):
    real_runner_init(self, *a, **kw)
    checkpoint = self.commands[Checkpoint]

    def logged(msg, p):
        if not p.dry and not self.journal.done(msg.key):
            _log(f"U {key_text(msg.key)}")  # a unit opens (is not skipped)
        return checkpoint(msg, p)

    self.register_command(Checkpoint, logged)


real_new_run = RunStore.new_run


def new_run(self, *a, **kw):
    if state["opened"] is None:
        state["opened"] = state["commits"]  # commits made while creating the database
        _log(f"R {state['opened']}")
    return real_new_run(self, *a, **kw)


Backend.pulse = pulse
RunStore.new_run = new_run
AtomicConnection.commit = commit
Runner.__init__ = runner_init


def _points(db: Path) -> list:
    with RunStore(db) as store:
        runs = store.runs()
        if not runs:
            return []
        df = store.load(runs[0].run_id)
    return sorted(tuple(r) for r in df[["phase", "n", "row", "col"]].itertuples(index=False))


def _units(db: Path) -> dict:
    with RunStore(db) as store:
        runs = store.runs()
        if not runs:
            return {}
        u = store.units(runs[0].run_id)
        md = store.metadata(runs[0].run_id)
    return {
        "units": {
            key_text(k): [int(a), bool(d)] for k, a, d in zip(u["unit"], u["attempts"], u["done"])
        },
        "reapplied": md.get("memhil_reapplied_units", []),
    }


def _pulses(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def main(workdir: str, stride: int) -> None:
    """Kill after every pulse and around every commit from the run's creation on; while
    the database is created, around every ``stride``-th commit only."""
    work = Path(workdir)
    proto = work / "train.yaml"
    proto.write_text(PROTOCOL)
    ref_db, ref_log = work / "ref.db", work / "ref.log"
    _child(proto, ref_db, ref_log, None)  # uninterrupted, counted as the kills are
    lines = _pulses(ref_log)
    opened = next(int(x.split()[1]) for x in lines if x.startswith("R "))
    ref = {
        "points": _points(ref_db),
        "log": [x for x in lines if x[0] in "PU"],
        "pulses": sum(x[0] == "P" for x in lines),
        "commits": sum(x[0] == "C" for x in lines),
        "units": _units(ref_db),
    }
    report = {"ref": ref, "kills": []}
    commits = [n for n in range(1, ref["commits"] + 1) if n > opened or (n - 1) % stride == 0]
    kill_points = [("pulse", n) for n in range(1, ref["pulses"] + 1)] + [
        (kind, n) for n in commits for kind in ("before-commit", "after-commit")
    ]
    for kind, n in kill_points:
        db, log = work / f"{kind}-{n}.db", work / f"{kind}-{n}.log"
        status = _child(proto, db, log, (kind, n))
        killed_log = [x for x in _pulses(log) if x[0] in "PU"]
        after_kill = _units(db) if db.exists() else {}
        state["log"] = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            try:
                run_protocol_file(proto, db=db, resume=True, progress=False)
                how = "resumed"
            except ConfigError as exc:  # killed before the run existed, or after it completed
                if "no unfinished run" not in str(exc):
                    raise
                how = "completed"
                if not after_kill:
                    run_protocol_file(proto, db=db, progress=False)
                    how = "fresh"
        finally:
            os.close(state["log"])
            state["log"] = None
        resumed_log = [x for x in _pulses(log) if x[0] in "PU"][len(killed_log) :]
        report["kills"].append(
            {
                "kind": kind,
                "n": n,
                "exit": status,
                "how": how,
                "killed_log": killed_log,
                "after_kill": after_kill,
                "resumed_units": [x[2:] for x in resumed_log if x.startswith("U ")],
                "resumed_pulses": sum(int(x.split()[1]) for x in resumed_log if x[0] == "P"),
                "points": _points(db),
                "final": _units(db),
            }
        )
    print(json.dumps(report))


def _child(proto: Path, db: Path, log: Path, kill: tuple | None) -> int:
    """Run the protocol in a forked child, killed at ``kill``; its exit code."""
    pid = os.fork()
    if pid == 0:
        state["kill"], state["pulses"], state["commits"], state["opened"] = kill, 0, 0, None
        state["log"] = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            run_protocol_file(proto, db=db, progress=False)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
