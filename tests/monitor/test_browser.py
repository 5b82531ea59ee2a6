"""End to end in a real headless Chromium: protocol runs written by another process appear
in the monitor live, their plots grow, one ends completed, a stop request from the page
ends another resumable with the instruments' outputs confirmed off; a screenshot of each
page kind is saved and checked to be non-blank.

Robust by construction: every wait polls with a deadline of a minute, and the writer is
held slow (``paced_writer``'s HOLD file) until the page has seen what the test checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memhil.monitor.server import Served
from memhil.store import RunStore
from tests.monitor.cdp import Chromium, chromium_path

ROOT = Path(__file__).resolve().parents[2]
STATION = ROOT / "examples" / "mock_station.yaml"
RETENTION = """protocol: retention
name: {name}
params: {{program_v: 1.5, program_width_s: 1.0e-6, duration_s: 1.0e4, spacing: log,
         t_first_s: 1.0, n_points: {n}, v_read: 0.2, cells: [[0, 0, 0], [0, 3, 3], [0, 5, 2]]}}
"""


DENSE_CELLS, DENSE_STEPS = 4, 2000


def _dense_run(db: Path) -> int:
    """A completed pulse train of 8000 points (one transaction): past the page's overview."""
    with RunStore(db) as store:
        w = store.new_run(
            "dense",
            keys=["n", "tile", "row", "col"],
            values=["g"],
            metadata={"protocol_config": {"protocol": "pulse_train"}, "backend_config": "sim"},
        )
        with w.transaction():
            w.add_many(
                [
                    {"n": k, "tile": 0, "row": r, "col": 0, "g": 1e-6 * (1 + r + (k % 97) / 97)}
                    for k in range(DENSE_STEPS)
                    for r in range(DENSE_CELLS)
                ]
            )
        w.close("completed")
        return w.run_id


def _writer(tmp: Path, db: Path, runs: list[tuple[str, int, Path]]) -> subprocess.Popen:
    """One writer process for ``runs`` (name, reads, HOLD file), one after the other."""
    args = []
    for name, n, hold in runs:
        proto = tmp / f"{name}.yaml"
        proto.write_text(RETENTION.format(name=name, n=n))
        hold.touch()
        args += [str(proto), str(hold)]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.monitor.paced_writer", str(db), str(STATION), "0.002"] + args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _next_result(proc: subprocess.Popen) -> dict:
    """The writer's report of its next run (a JSON line)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    _, err = proc.communicate(timeout=60)
    raise AssertionError(f"the writer ended (rc {proc.returncode}): {err[-2000:]}")


def _non_blank(path: Path) -> None:
    """A page drawn: many colours and real contrast, not a white (or one-colour) frame."""
    px = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    colours = len(np.unique(px.reshape(-1, 3), axis=0))
    assert px.std() > 10 and colours > 50, f"{path} looks blank ({colours} colours)"


def _row(name: str) -> str:
    """JS: the run list row of run ``name`` as {id, status, n}, or null."""
    return (
        "(() => { for (const tr of document.querySelectorAll('#runs tbody tr[data-id]')) {"
        f" if (tr.querySelector('a') && tr.querySelector('a').textContent === {name!r})"
        " return {id: Number(tr.dataset.id), status: tr.dataset.status,"
        " n: Number(tr.querySelector('td.n').textContent)}; } return null; })()"
    )


@pytest.mark.slow
def test_live_runs_in_chromium_grow_complete_and_stop_resumable(store_db, tmp_path):
    assert chromium_path(), "no chromium: apt-get install -y chromium (.ci/run does)"
    db, ids = store_db
    dense = _dense_run(db)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    hold, hold_stop = tmp_path / "hold", tmp_path / "hold_stop"
    served = Served(db)
    # one writer process, one run after the other (QCoDeS creates runs in one database from
    # one process at a time): the live run, then the run to stop
    writer = _writer(
        tmp_path,
        db,
        [("retention_live", 16, hold), ("retention_stop", 40, hold_stop)],
    )
    try:
        with Chromium() as page:
            # 1. the run list: a run written by another process appears, running
            page.goto(served.url + "#/")
            page.wait_for("window.memhil && window.memhil.page === 'list'", "the run list")
            row = page.wait_for(
                f"(r => r && r.status === 'running' && r)({_row('retention_live')})",
                "the live run in the list, running",
            )
            page.screenshot(shots / "run_list.png")

            # 2. its page: the plotted point count grows while it runs, then completes
            page.goto(served.url + f"#/run/{row['id']}")
            first = page.wait_for(
                "window.memhil.status === 'running' && window.memhil.plotted > 0"
                " && window.memhil.plotted",
                "points plotted while running",
            )
            page.wait_for(
                f"window.memhil.status === 'running' && window.memhil.plotted > {first}",
                "the plotted point count to grow while running",
            )
            hold.unlink()  # seen: let it finish fast
            page.wait_for("window.memhil.status === 'completed'", "the run to complete")
            done = _next_result(writer)
            assert done["outcome"] == "completed"
            n = RunStore(db).load(done["run_id"]).shape[0]
            page.wait_for(f"window.memhil.plotted === {n}", f"all {n} points plotted")
            page.screenshot(shots / "run_page.png")

            # 3. a stop request from the page: the second run ends resumable, outputs off
            page.goto(served.url + "#/")
            row = page.wait_for(
                f"(r => r && r.status === 'running' && r.n > 0 && r)({_row('retention_stop')})",
                "the second run running with points",
            )
            page.goto(served.url + f"#/run/{row['id']}")
            page.wait_for(
                "window.memhil.status === 'running' && !document.getElementById('stop').disabled",
                "the stop button of a running run",
            )
            page.js("document.getElementById('stop').click()")
            hold_stop.unlink()
            page.wait_for("window.memhil.status === 'resumable'", "the run to stop resumable")
            stopped = _next_result(writer)
            assert stopped["outcome"] == "stopped" and stopped["run_id"] == row["id"]
            assert stopped["safe_state_confirmed"] and stopped["sources_off"]
            assert any("output off (confirmed)" in line for line in stopped["safe_state"])
            with RunStore(db) as store:
                units = store.units(row["id"])
                n_stopped = len(store.load(row["id"]))
            assert units["done"].all() and 0 < n_stopped < 40 * 3  # stopped between units
            page.wait_for(f"window.memhil.plotted === {n_stopped}", "every stored point")
            page.screenshot(shots / "run_page_stopped.png")

            # 4. the sweep page: the trial table and metric vs axis
            page.goto(served.url + f"#/sweep/{ids['sweep']}")
            page.wait_for("window.memhil.page === 'sweep' && window.memhil.plotted === 3", "trials")
            page.screenshot(shots / "sweep_page.png")

            # 5. a training run: learning curves and pulse tallies, one trace per metric
            page.goto(served.url + f"#/run/{ids['experiment']}")
            page.wait_for("window.memhil.plotted === 8", "the training run's points")
            names = "id => document.getElementById(id).data.map(t => t.name)"
            assert page.js(f"({names})('plot0')") == ["metric loss", "metric accuracy"]
            assert page.js(f"({names})('plot1')") == ["metric set_pulses"]
            page.screenshot(shots / "experiment_page.png")

            # 6. a run of many points: an overview of at most 5000, every point once zoomed in
            page.goto(served.url + f"#/run/{dense}")
            page.wait_for(f"window.memhil.plotted === {DENSE_CELLS * DENSE_STEPS}", "dense run")
            drawn = "document.getElementById('plot0').data.slice(0, {}).reduce((s, t) => s + t.x.length, 0)"
            page.wait_for(f"{drawn.format(DENSE_CELLS)} > 0", "the overview drawn")
            assert page.js(drawn.format(DENSE_CELLS)) <= 5000
            page.js("Plotly.relayout('plot0', {'xaxis.range': [100, 199]})")
            page.wait_for(
                f"{drawn.format(DENSE_CELLS)} === {DENSE_CELLS * 100}", "all points in view"
            )

            # 7. a page left before its data arrives: the late reply finds the next page
            # shown and is dropped (it once wrote into the elements of a page gone)
            page.js(f"runPage({ids['experiment']}); sweepPage({ids['sweep']}); true")
            page.wait_for("window.memhil.stale > 0", "the run page's late reply dropped")
            page.wait_for("window.memhil.page === 'sweep' && window.memhil.plotted === 3", "trials")
            assert page.js("window.memhil.errors") == []  # no script error on any page
    finally:
        try:
            writer.communicate(timeout=60)  # the writer closes the mock lab and exits
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.communicate()
        served.stop()
    for png in sorted(shots.glob("*.png")):
        _non_blank(png)
    assert len(list(shots.glob("*.png"))) == 5
