"""What every client script shares: the VISA library that reaches the mock lab (the one
line a bench script changes) and the bench addresses of ``station.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

STATION = Path(__file__).with_name("station.yaml")
#: The VISA library: ``MEMHIL_CLIENT_VISA`` (a served lab's station file @memhil), else
#: this folder's station file (a lab in this process, or the served one of that file).
VISA_LIBRARY = os.environ.get("MEMHIL_CLIENT_VISA", f"{STATION}@memhil")

SMU_2636B = "TCPIP0::10.0.0.5::inst0::INSTR"
SMU_2450 = "USB0::0x05E6::0x2450::04424242::INSTR"
MATRIX = "GPIB0::22::INSTR"
PROBER = "GPIB0::28::INSTR"

#: The scripts' I/O timeout (ms): a bench answers in milliseconds, but the served lab is a
#: process on a shared CI machine; a generous timeout keeps a slow reply from being a
#: failure (no race between a short timeout and a late reply). QCoDeS takes seconds.
TIMEOUT_MS = 60_000
TIMEOUT_S = TIMEOUT_MS / 1000
