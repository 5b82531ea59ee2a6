"""Exactly once through crashes: a protocol run is killed (``os._exit``, no clean-up) after
every pulse and just before / just after every SQLite commit of the run (and of the
database's creation, every 25th commit; all of them in the slow variant), then resumed.
Every resumed run must end with the uninterrupted run's points (none missing, none
duplicated), every unit done, no completed unit re-applied, and exactly the unit in flight
at the kill redone and recorded as applied twice, its wasted pulses the only pulses beyond
the uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _applied(log: list[str]) -> int:
    return sum(int(x.split()[1]) for x in log if x.startswith("P "))


def _kill_matrix(tmp_path: Path, stride: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "tests.store.killpoints", str(tmp_path), str(stride)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def _check(report: dict) -> None:
    ref = report["ref"]
    ref_units = ref["units"]["units"]
    assert ref_units and all(d and a == 1 for a, d in ref_units.values())
    ref_opened = [x[2:] for x in ref["log"] if x.startswith("U ")]
    kinds = {k["kind"] for k in report["kills"]}
    assert kinds == {"pulse", "before-commit", "after-commit"}
    assert sum(k["kind"] == "pulse" for k in report["kills"]) == ref["pulses"] > 0
    for k in report["kills"]:
        where = f"killed {k['kind']} #{k['n']}"
        assert k["exit"] == 86, where  # the kill point was reached
        assert k["points"] == ref["points"], where  # none missing, none duplicated
        final = k["final"]["units"]
        assert set(final) == set(ref_units) and all(d for _, d in final.values()), where
        killed_pulses = _applied(k["killed_log"])
        if k["how"] == "fresh":  # killed before the run existed: nothing was applied
            assert killed_pulses == 0 and k["final"]["reapplied"] == [], where
            assert k["resumed_pulses"] == _applied(ref["log"]), where
            continue
        recorded = k["after_kill"]["units"]
        done = {u for u, (_, d) in recorded.items() if d}
        in_flight = [u for u, (_, d) in recorded.items() if not d]  # started, not done
        assert len(in_flight) <= 1, where
        opened = [x[2:] for x in k["killed_log"] if x.startswith("U ")]
        if opened and opened[-1] not in recorded:  # its start mark was not committed yet:
            assert not any(
                x.startswith("P ")
                for x in k["killed_log"][  # so none of its pulses went out
                    k["killed_log"].index(f"U {opened[-1]}") :
                ]
            ), where
        # pulses sent in the killed attempt of the unit in flight: the only extra ones
        wasted = 0
        if in_flight:
            start = k["killed_log"].index(f"U {in_flight[0]}")
            wasted = _applied(k["killed_log"][start:])
        assert killed_pulses + k["resumed_pulses"] == _applied(ref["log"]) + wasted, where
        # the unit in flight (and only it) is redone and recorded; done units are not
        assert k["final"]["reapplied"] == [
            {"unit": json.loads(u), "attempts": 2} for u in in_flight
        ], where
        assert {u: a for u, (a, _) in final.items() if a > 1} == {u: 2 for u in in_flight}, where
        # the resume opens exactly the units not done at the kill, none done before
        assert k["resumed_units"] == [u for u in ref_opened if u not in done], where


def test_kill_at_every_pulse_and_unit_commit_then_resume_is_exactly_once(tmp_path):
    report = _kill_matrix(tmp_path, stride=25)
    assert len(report["kills"]) >= 30
    _check(report)


@pytest.mark.slow
def test_kill_at_every_commit_including_database_creation_then_resume(tmp_path):
    report = _kill_matrix(tmp_path, stride=1)
    assert len(report["kills"]) > 100
    _check(report)


def test_killed_while_creating_the_database_leaves_no_unusable_file(tmp_path):
    """Killed at every 3rd SQL statement of a new database's creation (QCoDeS's schema
    upgrades are several transactions), the path then opens and takes a run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "tests.store.killcreate", str(tmp_path), "3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["statements"] > 30  # the kills reached into the schema creation
    assert report["bad"] == []
