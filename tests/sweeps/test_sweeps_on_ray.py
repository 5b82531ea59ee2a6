"""Sweeps on a local Ray instance of 2 CPUs (one for the module: Ray starts in seconds),
with the mock lab served on loopback as a station: one tagged run per trial, a trial that
raises recorded while the others complete, trials on one station never overlapping, and
``--resume`` after the driver was killed running exactly the missing trials."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml

from memhil.core.errors import ConfigError
from memhil.mock_hw.lab import MockLab
from memhil.store import RunStore
from memhil.store.run_records import META_SWEEP, META_SWEEP_TRIAL, metadata_of_runs
from memhil.sweeps import run_sweep
from memhil.sweeps.results import trial_runs

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LIVE, DEAD = "station:mock_bench", "station:dead_bench"

BASE = """\
protocol: read_noise
name: noise
params: {n_reads: 2, v_read: 0.2, cells: [[0, 0, 0], [0, 1, 1]]}
backend: {sim: {rows: 2, cols: 2}}
"""


@pytest.fixture(scope="module")
def stations(tmp_path_factory):
    """The mock bench served on free loopback ports (its live station file), and the same
    bench at a port nobody listens on (every connection refused: a trial that raises)."""
    lab = MockLab(EXAMPLES / "mock_station.yaml", serve_array_board_tcp=True).start()
    folder = tmp_path_factory.mktemp("stations")
    live = lab.station_config().to_dict()
    (folder / "live.yaml").write_text(yaml.safe_dump(live, sort_keys=False))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    dead = {**live, "name": "dead_bench"}
    dead["instruments"] = {
        n: {
            **i,
            "address": f"TCPIP0::127.0.0.1::{port}::SOCKET"
            if i["address"].startswith("TCPIP")
            else f"socket://127.0.0.1:{port}",
        }
        for n, i in live["instruments"].items()
    }
    (folder / "dead.yaml").write_text(yaml.safe_dump(dead, sort_keys=False))
    yield folder / "live.yaml", folder / "dead.yaml"
    lab.stop()


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module: 2 CPUs, both stations as resources; the
    sweeps of this process use it as it is, a driver in a subprocess joins it."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        resources={LIVE: 1.0, DEAD: 1.0},
        object_store_memory=100 * 2**20,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def sweep_file(folder: Path, stations, text: str) -> Path:
    live, dead = stations
    (folder / "base.yaml").write_text(BASE)
    path = folder / "sweep.yaml"
    path.write_text(text.format(live=live, dead=dead))
    return path


@pytest.fixture(scope="module")
def mixed(ray_address, stations, tmp_path_factory):
    """Six trials: two on the simulator, two on the live station, two on the dead one."""
    folder = tmp_path_factory.mktemp("mixed")
    path = sweep_file(
        folder,
        stations,
        "base: base.yaml\n"
        "grid:\n"
        "  backend: [{{sim: {{rows: 2, cols: 2}}}}, {{station: {live}}}, {{station: {dead}}}]\n"
        "  params.n_reads: [2, 3]\n",
    )
    db = folder / "runs.db"
    out = run_sweep(path, db=db, progress=False)
    with RunStore(db) as store:
        runs = trial_runs(store, out.sweep_id)
        sweep_points = store.load(out.sweep_id)
        n_reads = {  # the trial's parameters as its run recorded them
            r: store.metadata(r)["protocol_config"]["params"]["n_reads"]
            for r in runs.run_id[runs.status == "completed"]
        }
    return out, runs, sweep_points, n_reads


def test_every_trial_is_one_run_tagged_with_its_sweep_and_axis_values(mixed):
    out, runs, sweep_points, n_reads = mixed
    assert sorted(runs["trial"]) == list(range(6))  # one run per trial, none twice
    assert sorted(sweep_points["trial"]) == list(range(6))  # the sweep run's log
    for row in runs.to_dict("records"):
        if row["run_id"] in n_reads:
            assert n_reads[row["run_id"]] == row["params.n_reads"]  # the axis reached the run
        expected = [2, 3][row["trial"] % 2]  # grid order: n_reads innermost
        assert row["params.n_reads"] == expected
    where = {r["trial"]: next(iter(r["backend"])) for r in runs.to_dict("records")}
    assert where == {0: "sim", 1: "sim", 2: "station", 3: "station", 4: "station", 5: "station"}


def test_a_trial_that_raises_is_recorded_and_the_others_complete(mixed):
    out, runs, _, _ = mixed
    by_trial = runs.set_index("trial")
    assert sorted(out.failed) == [4, 5] and out.completed == [0, 1, 2, 3]
    for t in (4, 5):  # the dead station refuses every connection
        assert by_trial.loc[t, "status"] == "failed"
        assert "ConnectionRefusedError" in by_trial.loc[t, "error"]
    assert set(by_trial.loc[[0, 1, 2, 3], "status"]) == {"completed"}
    assert by_trial.loc[[0, 1, 2, 3], "error"].isna().all()


def test_trials_on_one_station_never_overlap(mixed):
    _, runs, _, _ = mixed
    for trials in ([2, 3], [4, 5]):  # the live station's trials, the dead one's
        spans = sorted(
            (r["t_start_s"], r["t_end_s"]) for r in runs.to_dict("records") if r["trial"] in trials
        )
        assert spans[0][1] <= spans[1][0], spans  # the second began after the first ended


def _completed_trials(db: Path) -> dict[int, int]:
    """Trial -> completed runs, read while another process writes: SQLite read-only with
    a busy timeout (QCoDeS keeps each metadata key as a column of its runs table)."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            f"SELECT {META_SWEEP_TRIAL}, memhil_status FROM runs "
            f"WHERE {META_SWEEP_TRIAL} IS NOT NULL"
        ).fetchall()
    except sqlite3.OperationalError:  # no trial stored yet: the column does not exist
        return {}
    finally:
        conn.close()
    out: dict[int, int] = {}
    for tag, status in rows:
        if status == "completed":
            trial = json.loads(tag)["trial"]
            out[trial] = out.get(trial, 0) + 1
    return out


def test_resume_after_the_driver_was_killed_runs_only_the_missing_trials(
    ray_address, stations, tmp_path
):
    path = sweep_file(
        tmp_path,
        stations,
        "base: base.yaml\ngrid: {{backend: [{{sim: {{rows: 2, cols: 2}}}}, {{station: {live}}}]}}\n",
    )
    db = tmp_path / "runs.db"

    @ray.remote(num_cpus=0, resources={LIVE: 1.0})
    class Station:
        """Holds the live station, so its trial (1) waits while the sim one (0) runs."""

        def held(self) -> bool:
            return True

    holder = Station.remote()  # type: ignore[attr-defined]
    assert ray.get(holder.held.remote())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "memhil", "sweep", str(path), "--db", str(db)]
        + ["--address", ray_address, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while set(_completed_trials(db)) != {0}:
            assert driver.poll() is None, driver.communicate()[0].decode()
            assert time.monotonic() < deadline, "the simulator trial did not complete"
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)  # the driver dies with trial 1 pending
        driver.communicate()
    ray.kill(holder)
    with RunStore(db) as store:
        (sweep_id,) = metadata_of_runs(store, META_SWEEP)
    out = run_sweep(path, db=db, resume=sweep_id, progress=False)
    assert out.already_done == [0] and out.completed == [1] and out.failed == {}
    with RunStore(db) as store:
        runs = trial_runs(store, sweep_id)
        status = {r.run_id: r.status for r in store.runs()}
    assert sorted(runs["trial"]) == [0, 1]  # no trial ran twice
    assert set(runs["status"]) == {"completed"} and status[sweep_id] == "completed"


def test_a_station_the_cluster_does_not_offer_is_refused_before_any_trial(
    ray_address, stations, tmp_path
):
    live, _ = stations
    other = tmp_path / "other.yaml"
    other.write_text(live.read_text().replace("name: mock_bench", "name: other_bench", 1))
    path = sweep_file(
        tmp_path, (other, other), "base: base.yaml\ngrid: {{backend: [{{station: {live}}}]}}\n"
    )
    db = tmp_path / "runs.db"
    with pytest.raises(ConfigError) as info:
        run_sweep(path, db=db, progress=False)
    assert info.value.key == "resources" and "station:other_bench" in info.value.reason
    assert "ray start" in info.value.reason and not db.exists()  # nothing submitted or stored
