"""The monitor's HTTP endpoints: JSON data, server-sent events, the token-guarded stop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from memhil.monitor.server import Served, is_loopback
from memhil.store import RunStore
from memhil.store.stop_request import stop_path


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"X-Memhil-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _post(url: str, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=b"", method="POST", headers={"X-Memhil-Token": token} if token else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture()
def served(store_db):
    db, ids = store_db
    s = Served(db)
    yield s, db, ids, s.url.split("/?")[0]
    s.stop()


def test_data_endpoints_serve_runs_points_since_a_cursor_and_sweeps(served):
    s, _, ids, base = served
    status, runs = _get(f"{base}/api/runs")
    assert status == 200 and len(runs["runs"]) == len(ids) - 1  # a continuation shows once
    status, pts = _get(f"{base}/api/runs/{ids['iv']}/points?since=4")
    assert status == 200 and pts["columns"]["point"] == [4, 5] and pts["next"] == 6
    status, run = _get(f"{base}/api/runs/{ids['continuation']}")
    assert run["id"] == ids["chained"] and run["status"] == "resumable"
    status, sweep = _get(f"{base}/api/sweeps/{ids['sweep']}")
    assert status == 200 and len(sweep["trials"]) == 3
    assert _get(f"{base}/api/runs/999")[0] == 404


def test_stop_needs_the_token_and_writes_the_request_beside_the_store(served):
    s, db, ids, base = served
    url = f"{base}/api/runs/{ids['running']}/stop"
    assert _post(url, None)[0] == 403
    assert _post(url, "not-the-token")[0] == 403
    assert not stop_path(db, ids["running"]).exists()
    status, body = _post(url, s.token)
    assert status == 200 and body["stop_requested"]
    assert stop_path(db, ids["running"]).exists()
    assert _get(f"{base}/api/runs/{ids['running']}")[1]["stop_requested"] is True
    # a finished run has nothing to stop
    assert _post(f"{base}/api/runs/{ids['iv']}/stop", s.token)[0] == 409


def test_reads_need_the_token_where_the_host_is_not_loopback(store_db):
    db, _ = store_db
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    s = Served(db, reads_need_token=True)  # as on a lab network, bound here to loopback
    try:
        base = s.url.split("/?")[0]
        assert _get(f"{base}/api/runs")[0] == 403
        assert _get(f"{base}/api/runs", s.token)[0] == 200
    finally:
        s.stop()


def test_events_push_a_point_committed_after_the_page_connected(served):
    s, db, ids, base = served
    with urllib.request.urlopen(f"{base}/events/runs/{ids['running']}?since=10", timeout=60) as r:
        events = []

        def next_event() -> tuple[str, dict]:
            name = None
            while True:
                line = r.readline().decode()
                if line.startswith("event: "):
                    name = line[7:].strip()
                elif line.startswith("data: ") and name:
                    return name, json.loads(line[6:])

        assert next_event()[0] == "run"  # the run's state first; no points before 10
        with RunStore(db) as store:
            store.open_run(ids["running"]).add(phase="ltd", n=10, tile=0, row=0, col=0, g=2e-6)
        while not events:
            name, data = next_event()
            if name == "points":
                events.append(data)
    assert events[0]["columns"]["point"] == [10] and events[0]["columns"]["phase"] == ["ltd"]


def test_the_command_prints_a_url_that_serves_the_store(store_db):
    import subprocess
    import sys

    db, ids = store_db
    proc = subprocess.Popen(
        [sys.executable, "-m", "memhil", "monitor", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = next(line.strip() for line in proc.stdout if line.strip().startswith("http"))
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        status, runs = _get(url.split("/?")[0] + "/api/runs")
        assert status == 200
        assert {r["id"] for r in runs["runs"]} == {v for k, v in ids.items() if k != "continuation"}
    finally:
        proc.terminate()
        proc.wait(30)
