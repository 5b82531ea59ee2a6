"""Emulator of memhil's line-parallel array board (protocol: ``memhil.instruments.array_board``).

The board has one DAC and one transimpedance ADC per array line and drives the chip
directly: ``READC`` holds every row at its voltage and every column at 0 V (virtual
ground) and returns the column currents from ``chip.currents`` (every line driven, so
sneak paths do not enter); ``READR`` is the transpose; ``PULSE`` holds the V/2 drive
(selected rows at amp, selected columns at 0 V, every other line at amp/2) with
``chip.hold``, so half-selected cells are disturbed as the device model says, every
cell's current limited to the ``COMP`` compliance (per cell, at the start of each pulse,
as the simulator models it). Each read charges ``integration_s`` to the chip's virtual
clock.

Reach it in-process through the pyserial URL handler::

    with ArrayBoardEmulator(chip, "board0") as emu:   # registers memhilboard://board0
        board = ArrayBoard(emu.url)

With ``probe`` (e.g. a ``VeloxEmulator``) the board reaches the chip only while
``probe.contact_ok``: otherwise reads return 0 A (open circuit) and pulses do nothing.
Faults: ``faults`` (a ``FaultInjector``: timeouts, garbled replies, disconnects, latency);
``dead_line("row"|"col", index)`` models a broken DAC/ADC channel (the line floats: it
is not driven, its current reads 0 A).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from memhil.mock_hw import protocol_memhilboard
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.scpi import CommonCommands, ScpiError, is_common
from memhil.mock_hw.server import TRANSCRIPT_LINES, FaultInjector

log = logging.getLogger(__name__)

FIRMWARE = "1.0"

ERR_UNKNOWN = 1
ERR_SYNTAX = 2
ERR_RANGE = 3
ERR_MASK = 4
ERR_INTERNAL = 5

COMPLIANCE_MIN_A, COMPLIANCE_MAX_A = 1e-9, 0.1  # COMP range; power-on value: the maximum


class _BoardError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class ArrayBoardEmulator:
    """A ``rows x cols`` line-parallel board wired to every line of ``chip``."""

    def __init__(
        self,
        chip: MockChip,
        board_id: str = "board0",
        name: str = "arrayboard",
        *,
        integration_s: float = 1e-3,
        v_max: float = 5.0,
        baudrate: int | None = 115200,
        probe: Any | None = None,
        faults: FaultInjector | None = None,
    ):
        self.chip = chip
        self.board_id = board_id
        self.name = name
        self.rows, self.cols = chip.rows, chip.cols
        self.integration_s = float(integration_s)
        self.v_max = float(v_max)
        self.baudrate = baudrate
        self.terminator = "\n"
        self.probe = probe
        self.faults = faults or FaultInjector()
        self.lock = threading.RLock()
        self.transactions = 0
        # the last lines received (for tests / debugging), bounded like any command log
        self.transcript: deque[str] = deque(maxlen=TRANSCRIPT_LINES)
        self.compliance_a = COMPLIANCE_MAX_A  # per-cell pulse current limit (COMP)
        self._dead: set[tuple[str, int]] = set()
        self.common = CommonCommands(lambda: f"MEMHIL,ARRAYBOARD,{self.board_id},{FIRMWARE}")

    # -- registration ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{protocol_memhilboard.SCHEME}://{self.board_id}"

    def start(self) -> ArrayBoardEmulator:
        protocol_memhilboard.register(self.board_id, self)
        return self

    def stop(self) -> None:
        protocol_memhilboard.unregister(self.board_id)

    def __enter__(self) -> ArrayBoardEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------
    def dead_line(self, kind: str, index: int) -> None:
        if kind not in ("row", "col"):
            raise ValueError(f"kind must be 'row' or 'col', got {kind!r}")
        self._dead.add((kind, int(index)))

    def heal(self) -> None:
        self._dead.clear()

    @property
    def connected(self) -> bool:
        return self.probe is None or bool(self.probe.contact_ok)

    # -- protocol ----------------------------------------------------------------------------
    def handle(self, line: str) -> str:
        self.transactions += 1
        self.transcript.append(line)
        cmd, _, arg = line.strip().partition(" ")
        cmd = cmd.upper()
        try:
            with self.lock:
                if is_common(cmd):
                    try:
                        return self.common(cmd) or ""
                    except ScpiError:
                        raise _BoardError(ERR_UNKNOWN, f"unknown command {cmd}") from None
                if cmd == "SIZE?":
                    return f"{self.rows},{self.cols}"
                if cmd == "VMAX?":
                    return f"{self.v_max:.6g}"
                if cmd == "TINT?":
                    return f"{self.integration_s:.6g}"
                if cmd == "TINT":
                    t = _floats(arg, 1)[0]
                    if not 1e-6 <= t <= 1.0:
                        raise _BoardError(ERR_RANGE, "integration time not in 1e-6..1 s")
                    self.integration_s = t
                    return "OK"
                if cmd == "COMP?":
                    return f"{self.compliance_a:.6g}"
                if cmd == "COMP":
                    c = _floats(arg, 1)[0]
                    if not COMPLIANCE_MIN_A <= c <= COMPLIANCE_MAX_A:
                        raise _BoardError(ERR_RANGE, "compliance not in 1e-9..0.1 A")
                    self.compliance_a = c
                    return "OK"
                if cmd == "READC":
                    return _fmt(self._read(_floats(arg, self.rows), transpose=False))
                if cmd == "READR":
                    return _fmt(self._read(_floats(arg, self.cols), transpose=True))
                if cmd == "PULSE":
                    self._pulse(arg)
                    return "OK"
                if cmd == "ZERO":
                    return "OK"
                raise _BoardError(ERR_UNKNOWN, f"unknown command {cmd}")
        except _BoardError as e:
            log.info("%s: %r -> ERR %d %s", self.name, line, e.code, e.text)
            return f"ERR {e.code} {e.text}"
        except Exception as e:  # never let the firmware die on a bad line
            log.exception("%s: internal error on %r", self.name, line)
            return f"ERR {ERR_INTERNAL} internal error: {type(e).__name__}"

    def _check_v(self, values: list[float]) -> None:
        if any(abs(v) > self.v_max for v in values):
            raise _BoardError(ERR_RANGE, f"voltage beyond +-{self.v_max:g} V")

    def _read(self, v: list[float], *, transpose: bool) -> list[float]:
        self._check_v(v)
        n_out = self.rows if transpose else self.cols
        self.chip.wait(self.integration_s)
        if not self.connected:
            return [0.0] * n_out
        drive_kind, sense_kind = ("col", "row") if transpose else ("row", "col")
        drive = {k: x for k, x in enumerate(v) if (drive_kind, k) not in self._dead}
        sense = {k: 0.0 for k in range(n_out) if (sense_kind, k) not in self._dead}
        rows, cols = (sense, drive) if transpose else (drive, sense)
        i_rows, i_cols = self.chip.currents(rows, cols)
        i_sense = i_rows if transpose else i_cols
        # A line held at 0 V sources -I; the transimpedance amplifier reads the current
        # flowing into the line from the array.
        return [-i_sense[k] if k in i_sense else 0.0 for k in range(n_out)]

    def _pulse(self, arg: str) -> None:
        parts = [p.strip() for p in arg.split(",")]
        if len(parts) != 4:
            raise _BoardError(ERR_SYNTAX, "PULSE needs mask_hex,amp,width,count")
        try:
            mask = int(parts[0], 16)
            amp, width = float(parts[1]), float(parts[2])
            count = int(parts[3])
        except ValueError:
            raise _BoardError(ERR_SYNTAX, "malformed PULSE arguments") from None
        n = self.rows * self.cols
        if mask < 0 or mask >> n:
            raise _BoardError(ERR_MASK, f"mask has bits beyond {n} cells")
        self._check_v([amp])
        if not 0 < width <= 1.0 or count < 1 or count > 10**6:
            raise _BoardError(ERR_RANGE, "width must be in (0, 1] s and count in 1..1e6")
        cells = {(k // self.cols, k % self.cols) for k in range(n) if (mask >> k) & 1}
        if not cells:
            return
        sel_rows = sorted({i for i, _ in cells})
        sel_cols = sorted({j for _, j in cells})
        if len(cells) != len(sel_rows) * len(sel_cols):
            raise _BoardError(ERR_MASK, "mask is not a row x column product")
        if not self.connected:
            self.chip.wait(width * count)
            return
        half = 0.5 * amp
        rows = {
            i: (amp if i in sel_rows else half)
            for i in range(self.rows)
            if ("row", i) not in self._dead
        }
        cols = {
            j: (0.0 if j in sel_cols else half)
            for j in range(self.cols)
            if ("col", j) not in self._dead
        }
        self.chip.hold(rows, cols, width, count, compliance_a=self.compliance_a)


def _floats(arg: str, n: int) -> list[float]:
    parts = [p for p in (x.strip() for x in arg.split(",")) if p] if arg.strip() else []
    if len(parts) != n:
        raise _BoardError(ERR_SYNTAX, f"expected {n} values, got {len(parts)}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise _BoardError(ERR_SYNTAX, "malformed number") from None


def _fmt(values: list[float]) -> str:
    return ",".join(f"{x:.9e}" for x in values)
