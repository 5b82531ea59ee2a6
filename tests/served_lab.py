"""``memhil mock-lab serve`` as its own process, for tests that drive it over loopback."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServedLab:
    """The serving process, its live station file, and (after the block) its console
    output and exit status."""

    proc: subprocess.Popen
    live: Path
    out: str = ""
    returncode: int | None = None


@contextlib.contextmanager
def serve_mock_lab(station: Path, live: Path, timeout_s: float = 60.0) -> Iterator[ServedLab]:
    """Start ``memhil mock-lab serve STATION --write-station LIVE``, wait until LIVE is
    written, and stop the process with SIGTERM when the block ends."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memhil",
            "mock-lab",
            "serve",
            str(station),
            "--write-station",
            str(live),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = ServedLab(proc, live)
    try:
        deadline = time.monotonic() + timeout_s
        while not live.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the mock lab did not come up"
            time.sleep(0.1)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        served.out, _ = proc.communicate(timeout=30)
        served.returncode = proc.returncode
