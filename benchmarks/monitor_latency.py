"""The live monitor in a headless Chromium: commit-to-page latency (median, p95) while a
writer commits 100 points/s, from the commit returning to the frame that drew the point,
and the frame time of a run page holding 10^5 points while it is zoomed: the page draws an
overview of at most 5000 points (min/max per bucket, full data once zoomed in), in SVG by
default and in WebGL side by side.

The writer uses the store's own writer (``RunWriter.add``: one committed SQLite transaction
per point, as a protocol's records are stored); the page reads the store read-only through
the server's change poll (``poll_s``). Latency is read from the page's draw log
(``window.memhil.drawn``) against the commit times, on one machine clock.

Run: ``python benchmarks/monitor_latency.py [--seconds S] [--rate HZ] [--points N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memhil.monitor.server import Served  # noqa: E402
from memhil.store import RunStore  # noqa: E402
from tests.monitor.cdp import Chromium  # noqa: E402

META = {"protocol_config": {"protocol": "retention"}, "backend_config": "sim"}
CELLS = [(0, r, c) for r in range(10) for c in range(10)]


def latency(page: Chromium, served: Served, db: Path, seconds: float, rate_hz: float) -> dict:
    with RunStore(db) as store:
        w = store.new_run(
            "latency", keys=["index_", "tile", "row", "col"], values=["t_s", "g"], metadata=META
        )
        w.add(index_=0, tile=0, row=0, col=0, t_s=1.0, g=1e-6)  # the run exists: open its page
        page.goto(served.url + f"#/run/{w.run_id}")
        page.wait_for("window.memhil.plotted === 1", "the first point on the page")
        commits: list[float] = []
        t_next = time.time()
        for k in range(1, int(seconds * rate_hz) + 1):
            t_next += 1 / rate_hz
            time.sleep(max(0.0, t_next - time.time()))
            w.add(index_=k, tile=0, row=k % 10, col=0, t_s=1.0 + k, g=1e-6 * (1 + k % 7))
            commits.append(time.time() * 1e3)
        n = len(commits) + 1
        page.wait_for(f"window.memhil.plotted === {n}", f"all {n} points drawn", 120)
        w.close("completed")
    drawn = page.js("window.memhil.drawn")
    lat = []
    for k, t_commit in enumerate(commits, start=2):  # point k-1 is the k-th plotted
        t_draw = next(t for t, plotted in drawn if plotted >= k)
        lat.append(t_draw - t_commit)
    lat.sort()
    return {
        "rate_hz": rate_hz,
        "points": len(commits),
        "latency_median_ms": statistics.median(lat),
        "latency_p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "poll_ms": served_poll_ms(),
    }


def served_poll_ms() -> float:
    import inspect

    return inspect.signature(Served).parameters["poll_s"].default * 1e3


def frame_time(
    page: Chromium, served: Served, db: Path, n_points: int, webgl: bool = False
) -> dict:
    per_cell = n_points // len(CELLS)
    with RunStore(db) as store:
        w = store.new_run(
            "frames",
            keys=["n", "tile", "row", "col"],
            values=["g"],
            metadata={"protocol_config": {"protocol": "pulse_train"}, "backend_config": "sim"},
        )
        with w.transaction():
            w.add_many(
                [
                    {
                        "n": k,
                        "tile": t,
                        "row": r,
                        "col": c,
                        "g": 1e-6 * (1 + (k % 50) / 50 + r / 10),
                    }
                    for k in range(per_cell)
                    for t, r, c in CELLS
                ]
            )
        w.close("completed")
    t0 = time.perf_counter()
    page.goto(served.url + ("&webgl_above=0" if webgl else "") + f"#/run/{w.run_id}")
    n = per_cell * len(CELLS)
    page.wait_for(f"window.memhil.plotted === {n}", f"{n} points drawn", 300)
    first_draw_s = time.perf_counter() - t0
    # zoom in and out frame by frame: the time from a relayout to the next painted frame
    frames = page.js(
        """(async () => {
        const div = document.getElementById('plot0'), out = [];
        for (let k = 0; k < 40; k++) {
          const t0 = performance.now();
          await Plotly.relayout(div, {'xaxis.range': [k, k + 200 + 10 * (k % 5)]});
          await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
          out.push(performance.now() - t0);
        }
        return out; })()""",
        await_promise=True,
    )
    kinds = page.js("document.getElementById('plot0').data.map(t => t.type)")
    frames = sorted(frames)
    return {
        "points": n,
        "traces": len(kinds),
        "webgl": all(k == "scattergl" for k in kinds),
        "first_draw_s": first_draw_s,
        "frame_median_ms": statistics.median(frames),
        "frame_p95_ms": frames[int(0.95 * (len(frames) - 1))],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        RunStore(db).close()
        served = Served(db)
        try:
            with Chromium() as page:
                page.js("1")
                lat = latency(page, served, db, args.seconds, args.rate)
                frames = frame_time(page, served, db, args.points)  # the default: SVG
                gl = frame_time(page, served, db, args.points, webgl=True)
        finally:
            served.stop()
    result = {"latency": lat, "frames_svg": frames, "frames_webgl": gl}
    print(
        f"commit-to-page latency at {lat['rate_hz']:.0f} points/s ({lat['points']} points): "
        f"median {lat['latency_median_ms']:.0f} ms, p95 {lat['latency_p95_ms']:.0f} ms "
        f"(server poll {lat['poll_ms']:.0f} ms)"
    )
    print(
        f"{frames['points']} points in {frames['traces']} traces, overview of at most 5000 "
        f"points: first draw {frames['first_draw_s']:.1f} s, zoom frame median "
        f"{frames['frame_median_ms']:.0f} ms, p95 {frames['frame_p95_ms']:.0f} ms (SVG)"
    )
    print(
        f"the same with WebGL traces: zoom frame median {gl['frame_median_ms']:.0f} ms "
        f"(WebGL / SVG = {gl['frame_median_ms'] / frames['frame_median_ms']:.2f}x)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
