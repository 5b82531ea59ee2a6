"""``ArrayIO`` over the ArC TWO through the vendor's ``pyarc2`` (``pyarc2.Instrument``).

The ArC TWO has 64 channels; a standard 32 x 32 crossbar puts its rows on channels
0-15 and 32-47 and its columns on 16-31 and 48-63 (libarc2: "channels 0..16 and 32..48
correspond to rows"). ``row_channels``/``col_channels`` give another probe card's mapping
(arc2control keeps them in its mapping TOML files).

* ``read_columns(v_rows)``: a line-parallel read: ``config_channels`` puts every row at its
  voltage (columns at 0 V), ``read_slice_open(columns, ground_after=True)`` reads every
  column's current in one operation; ``read_rows`` is the transpose. pyarc2 reports a
  channel's current as flowing from the channel into the array (``read_one``: low at
  -vread, high at 0 V, positive for a positive conductance), so a column at 0 V carries
  ``-(V @ G)``: the adapter returns ``V @ G``.
* ``pulse_cells(mask, amplitude_v, width_s, count)``: one ``pulse_slice_masked`` per column
  with selected cells (the column is the low channel at -V/2, the selected rows at +V/2,
  every other line at 0 V: the V/2 scheme, so a selected cell sees ``V_row - V_col =
  amplitude_v``), queued ``count`` times, then ``execute`` and ``wait``. Widths are whole
  nanoseconds, at least ``PULSE_WIDTH_MIN_S`` (40 ns, the high-speed drivers). The
  ArC TWO has no current compliance on a pulse: ``compliance_a`` is not enforced by the
  instrument (it is logged once), and the backend's worst-case energy check, which
  assumes it, bounds nothing here: keep pulses short and amplitudes low.
* ``safe_state``: ``ground_all`` + ``execute`` + ``wait``, confirmed by reading back every
  channel's voltage (``vread_channels``) within ``SAFE_VOLTAGE_V`` of 0 V.

Addresses: ``arc2://<n>`` opens the n-th board of ``pyarc2.find_ids()`` with the
``firmware`` option (a path, given on the command line or in the station file). The USB /
FPGA link cannot be emulated at the wire (pyarc2 talks to the board through the vendor's
native library), so the mock lab registers an emulation of the ``pyarc2.Instrument`` API
backed by its chip under ``arc2mock://<name>`` (``register_emulated_instrument``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memhil.core.limits import SLACK
from memhil.instruments.registry import InstrumentRanges, register_instrument

log = logging.getLogger(__name__)

ROW_CHANNELS: tuple[int, ...] = (*range(0, 16), *range(32, 48))
COL_CHANNELS: tuple[int, ...] = (*range(16, 32), *range(48, 64))
#: The shortest pulse of the ArC TWO's high-speed drivers (ArC TWO data sheet: 40 ns).
PULSE_WIDTH_MIN_S = 40e-9
#: |V| a grounded channel may read back and still count as at 0 V (ADC offset).
SAFE_VOLTAGE_V = 0.01
#: ArC TWO output range (standard range, +-10 V).
V_MAX_V = 10.0

_EMULATED: dict[str, Callable[[], Any]] = {}


def register_emulated_instrument(name: str, factory: Callable[[], Any]) -> None:
    """Make ``arc2mock://<name>`` open ``factory()`` (an object with the
    ``pyarc2.Instrument`` methods this adapter uses): the mock lab's hook."""
    _EMULATED[name] = factory


def unregister_emulated_instrument(name: str) -> None:
    _EMULATED.pop(name, None)


def open_instrument(address: str, firmware: str | None = None) -> Any:
    """The ``pyarc2.Instrument`` (or registered emulation) at ``address``."""
    if address.startswith("arc2mock://"):
        key = address[len("arc2mock://") :]
        if key not in _EMULATED:
            raise ConnectionError(f"no emulated ArC TWO {key!r} (is its mock lab started?)")
        return _EMULATED[key]()
    if not address.startswith("arc2://"):
        raise ValueError(f"ArC TWO address {address!r}: expected 'arc2://<n>' (n-th board)")
    import pyarc2

    index = int(address[len("arc2://") :] or 0)
    ids = pyarc2.find_ids()
    if index >= len(ids):
        raise ConnectionError(f"ArC TWO board {index} not found (pyarc2.find_ids() = {ids})")
    if not firmware:
        raise ValueError("an ArC TWO needs its FPGA firmware: give options.firmware (a path)")
    return pyarc2.Instrument(ids[index], firmware)


class ArC2Array:
    """An ArC TWO as a line-parallel ``ArrayIO`` over ``rows x cols`` (<= 32 x 32) lines."""

    def __init__(
        self,
        instrument: Any,
        name: str,
        rows: int,
        cols: int,
        *,
        row_channels: Sequence[int] = ROW_CHANNELS,
        col_channels: Sequence[int] = COL_CHANNELS,
    ):
        if not (1 <= rows <= len(row_channels) and 1 <= cols <= len(col_channels)):
            raise ValueError(
                f"{name}: a {rows} x {cols} chip does not fit the "
                f"{len(row_channels)} x {len(col_channels)} channel mapping"
            )
        self.arc = instrument
        self.name = name
        self.rows, self.cols = int(rows), int(cols)
        self.row_ch = np.asarray(row_channels[:rows], dtype=np.uint64)
        self.col_ch = np.asarray(col_channels[:cols], dtype=np.uint64)
        if len(set(self.row_ch.tolist()) | set(self.col_ch.tolist())) != rows + cols:
            raise ValueError(f"{name}: row and column channels overlap")
        self._warned_compliance = False

    def _read(self, drive: np.ndarray, v: Sequence[float] | np.ndarray, sense: np.ndarray):
        v = np.asarray(v, dtype=float)
        if v.shape != (len(drive),):
            raise ValueError(f"{self.name}: expected {len(drive)} voltages, got shape {v.shape}")
        self.arc.config_channels([(int(c), float(x)) for c, x in zip(drive, v)], 0.0)
        currents = np.asarray(self.arc.read_slice_open(sense, True), dtype=float)
        return -currents[sense.astype(np.int64)]

    def read_columns(self, v_rows: Sequence[float] | np.ndarray) -> np.ndarray:
        return self._read(self.row_ch, v_rows, self.col_ch)

    def read_rows(self, v_cols: Sequence[float] | np.ndarray) -> np.ndarray:
        return self._read(self.col_ch, v_cols, self.row_ch)

    def pulse_cells(
        self,
        mask: np.ndarray,
        amplitude_v: float,
        width_s: float,
        count: int = 1,
        compliance_a: float | None = None,
    ) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.rows, self.cols):
            raise ValueError(f"{self.name}: mask shape {mask.shape} != {(self.rows, self.cols)}")
        nanos = round(width_s * 1e9)
        # the limits' float32 slack: a width asked equal to the floor arrives as float32
        if width_s < PULSE_WIDTH_MIN_S * (1 - SLACK) or nanos < 1:
            raise ValueError(
                f"{self.name}: pulse width {width_s:g} s is below the ArC TWO's "
                f"{PULSE_WIDTH_MIN_S:g} s"
            )
        if int(count) != count or count < 1:
            raise ValueError(f"{self.name}: pulse count must be an integer >= 1, got {count}")
        if compliance_a is not None and not self._warned_compliance:
            log.warning("%s: the ArC TWO limits no current on a pulse (compliance_a)", self.name)
            self._warned_compliance = True
        columns = np.nonzero(mask.any(axis=0))[0]
        for _ in range(int(count)):
            for j in columns:
                rows = self.row_ch[mask[:, j]]
                self.arc.pulse_slice_masked(int(self.col_ch[j]), float(amplitude_v), nanos, rows)
        self.arc.execute()
        self.arc.wait()

    def safe_state(self) -> None:
        """Every channel grounded, confirmed by reading their voltages back."""
        self.arc.ground_all()
        self.arc.execute()
        self.arc.wait()
        chans = np.concatenate([self.row_ch, self.col_ch])
        volts = np.asarray(self.arc.vread_channels(chans, False), dtype=float)
        if np.any(np.abs(volts) > SAFE_VOLTAGE_V):
            bad = int(chans[int(np.argmax(np.abs(volts)))])
            raise RuntimeError(
                f"{self.name}: channel {bad} reads {float(np.max(np.abs(volts))):g} V after "
                f"grounding (more than {SAFE_VOLTAGE_V:g} V)"
            )

    def resync(self) -> None:
        """``Resyncable``: wait for the command buffer to drain and check it is idle (the
        USB link has no identity query; a board that does not answer raises)."""
        self.arc.wait()
        if self.arc.busy():
            raise ConnectionError(f"{self.name}: the ArC TWO is still busy after wait()")

    def close(self) -> None:
        close = getattr(self.arc, "close", None)
        if callable(close):
            close()


def create(address: str, name: str, **options: Any) -> ArC2Array:
    """Open the ArC TWO at ``address`` for a ``rows x cols`` chip (options: ``rows``,
    ``cols`` from the station's chip section, ``firmware``, ``row_channels``,
    ``col_channels``)."""
    firmware = options.pop("firmware", None)
    return ArC2Array(open_instrument(address, firmware), name, **options)


register_instrument(
    "arc2",
    "array",
    create,
    options=("firmware", "row_channels", "col_channels", "rows", "cols"),
    ranges=InstrumentRanges(v_max_v=V_MAX_V, width_min_s=PULSE_WIDTH_MIN_S),
)

__all__ = [
    "COL_CHANNELS",
    "PULSE_WIDTH_MIN_S",
    "ROW_CHANNELS",
    "ArC2Array",
    "create",
    "open_instrument",
    "register_emulated_instrument",
    "unregister_emulated_instrument",
]
