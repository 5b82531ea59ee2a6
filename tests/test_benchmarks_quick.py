"""Every learning-algorithm benchmark's ``--quick`` smoke run finishes and writes its results,
so a refactor cannot silently break a script that no other test imports. Marked slow
(~2 min together on 2 cores); the numbers themselves are the benchmarks' job, not this test's."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BENCHMARKS = ["mars", "cmru", "cmru_budget", "eprop_pcm", "eqprop_memristors", "pruning"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_quick_run(name, tmp_path):
    extra = ["--jobs", "1"] if name == "eprop_pcm" else []
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--quick",
            "--out",
            str(tmp_path),
            *extra,
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip(), "the benchmark printed nothing"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written, f"{name} --quick wrote nothing under --out"
