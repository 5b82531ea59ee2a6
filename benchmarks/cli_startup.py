"""Start-up time of ``memhil run`` on the simulator: from process start to the first line
it prints (what runs where), to the end of the pre-flight (the progress bar's first draw
needs the full stack: torch, QCoDeS, the protocol) and to the final summary, for a small
conductance map. Target: first output under 3 s on 2 cores.

Run: ``python benchmarks/cli_startup.py [--repeat N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 3.0


def one_run(work: Path, k: int) -> dict[str, float]:
    proto = work / "map.yaml"
    proto.write_text("protocol: conductance_map\nbackend: sim\n")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memhil",
            "run",
            str(proto),
            "--db",
            str(work / f"s{k}.db"),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=(work / f"s{k}.stderr").open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    code = proc.wait()
    t_end = time.perf_counter() - t0
    if code != 0 or not first.startswith("memhil run:"):
        err = (work / f"s{k}.stderr").read_text()
        raise SystemExit(f"memhil run failed ({code}): {first}{rest}{err}")
    return {"first_output_s": t_first, "total_s": t_end}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()
    n = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(Path(tmp), k) for k in range(n)]
    res = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    res.update(repeat=n, cpus=os.cpu_count(), target_first_output_s=TARGET_S)
    print(f"memhil run (simulator, 64x64 conductance map), median of {n}:")
    print(
        f"  process start -> first output: {res['first_output_s']:.2f} s "
        f"(target {TARGET_S:.0f} s on 2 cores: "
        f"{'met' if res['first_output_s'] < TARGET_S else 'NOT met'})"
    )
    print(f"  process start -> summary (run done): {res['total_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
