"""An emulation of the ``pyarc2.Instrument`` API (ArC TWO) backed by the mock lab's chip.

The ArC TWO talks to its host over USB to an FPGA through the vendor's native library, so
it cannot be emulated at the wire as the VISA instruments are; this object stands in for
``pyarc2.Instrument`` itself (the methods memhil's ArC TWO adapter calls, with pyarc2's
signatures and semantics) and is reached as ``arc2mock://<name>``.

Channel layout: the standard 32 x 32 mapping (rows on channels 0-15 and 32-47, columns
on 16-31 and 48-63); chip row i / column j sit on the i-th / j-th channel of each list.
A channel's current is the current flowing from the channel into the array (pyarc2's
convention). Queued operations (``config_channels``, ``pulse_slice_masked``,
``ground_all``) run at ``execute``: a pulse drives its low channel at -V/2 and its masked
high channels at +V/2 with every other line at 0 V for its width on the virtual clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from memhil.instruments.adapters.arc2 import (
    COL_CHANNELS,
    PULSE_WIDTH_MIN_S,
    ROW_CHANNELS,
    register_emulated_instrument,
    unregister_emulated_instrument,
)
from memhil.mock_hw.chip import MockChip


class ArC2Error(RuntimeError):
    """What pyarc2 raises for a refused operation (``pyarc2.ArC2Error``)."""


class EmulatedArC2:
    """``pyarc2.Instrument`` over ``chip`` (<= 32 x 32); ``probe``: an object with a
    ``contact_ok`` attribute (a prober emulator) gating every line."""

    def __init__(self, chip: MockChip, name: str = "arc2", *, probe: Any | None = None):
        if chip.rows > len(ROW_CHANNELS) or chip.cols > len(COL_CHANNELS):
            raise ValueError(
                f"the ArC TWO reaches 32 x 32 cells, the chip is {chip.rows}x{chip.cols}"
            )
        self.chip = chip
        self.name = name
        self.probe = probe
        self.lock = threading.RLock()
        self.row_of = {c: i for i, c in enumerate(ROW_CHANNELS[: chip.rows])}
        self.col_of = {c: j for j, c in enumerate(COL_CHANNELS[: chip.cols])}
        self.levels: dict[int, float] = {}  # channel -> voltage (absent: grounded)
        self._queue: list[tuple[str, tuple]] = []
        self.operations: list[str] = []  # what was called, for tests

    # -- mock-lab life cycle --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"arc2mock://{self.name}"

    def start(self) -> EmulatedArC2:
        register_emulated_instrument(self.name, lambda: self)
        return self

    def stop(self) -> None:
        unregister_emulated_instrument(self.name)

    # -- helpers ------------------------------------------------------------------------
    def _drive(self, levels: dict[int, float]) -> tuple[dict[int, float], dict[int, float]]:
        if self.probe is not None and not self.probe.contact_ok:
            return {}, {}
        rows = {i: 0.0 for i in range(self.chip.rows)}
        cols = {j: 0.0 for j in range(self.chip.cols)}
        for ch, v in levels.items():
            if ch in self.row_of:
                rows[self.row_of[ch]] = v
            elif ch in self.col_of:
                cols[self.col_of[ch]] = v
        return rows, cols

    def _log(self, op: str) -> None:
        self.operations.append(op)
        del self.operations[:-10_000]

    # -- pyarc2.Instrument ----------------------------------------------------------------
    def config_channels(self, config: Iterable[tuple[int, float]], base: float | None):
        with self.lock:
            self._log("config_channels")
            if base is not None:
                self.levels = {c: float(base) for c in (*self.row_of, *self.col_of)}
            for ch, v in config:
                self.levels[int(ch)] = float(v)
            return self

    def read_slice_open(self, highs: Iterable[int], ground_after: bool) -> np.ndarray:
        """Currents of ``highs`` (a 64-element array in channel order, NaN elsewhere) with
        the channels as configured; every line not configured is at 0 V."""
        with self.lock:
            self._log("read_slice_open")
            highs = [int(h) for h in np.asarray(highs, dtype=np.uint64)]
            levels = {**self.levels, **{h: 0.0 for h in highs}}
            i_rows, i_cols = self.chip.currents(*self._drive(levels))
            out = np.full(64, np.nan, dtype=np.float32)
            for h in highs:
                if h in self.row_of:
                    out[h] = i_rows[self.row_of[h]] if self.row_of[h] in i_rows else 0.0
                elif h in self.col_of:
                    out[h] = i_cols[self.col_of[h]] if self.col_of[h] in i_cols else 0.0
            if ground_after:
                self.levels = {}
            return out

    def pulse_slice_masked(self, chan: int, voltage: float, nanos: int, mask: Iterable[int]):
        if nanos * 1e-9 < PULSE_WIDTH_MIN_S:
            raise ArC2Error(f"pulse of {nanos} ns is below the high-speed drivers' 40 ns")
        with self.lock:
            self._log("pulse_slice_masked")
            self._queue.append(("pulse", (int(chan), float(voltage), int(nanos), list(mask))))
            return self

    def ground_all(self):
        with self.lock:
            self._log("ground_all")
            self._queue.append(("ground", ()))
            return self

    def execute(self):
        with self.lock:
            self._log("execute")
            queue, self._queue = self._queue, []
            for kind, args in queue:
                if kind == "ground":
                    self.levels = {}
                    continue
                chan, voltage, nanos, highs = args
                levels = {chan: -voltage / 2, **{int(h): voltage / 2 for h in highs}}
                rows, cols = self._drive(levels)
                if rows or cols:
                    self.chip.hold(rows, cols, nanos * 1e-9)
                else:
                    self.chip.clock.advance(nanos * 1e-9)
            return self

    def wait(self) -> None:
        """Everything ran at ``execute``."""

    def busy(self) -> bool:
        return False

    def vread_channels(self, chans: Iterable[int], averaging: bool) -> list[float]:
        with self.lock:
            self._log("vread_channels")
            return [self.levels.get(int(c), 0.0) for c in np.asarray(chans, dtype=np.uint64)]


__all__ = ["ArC2Error", "EmulatedArC2"]
