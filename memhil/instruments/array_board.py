"""Driver for memhil's line-parallel array board (no maintained driver exists: this is
memhil's own), a thin PyMeasure ``Instrument`` so its wire format is tested with
``pymeasure.test.expected_protocol``. It implements the ``ArrayIO`` capability.

Array-board line protocol, version 1
====================================

Transport: a serial line (USB CDC or UART, 115200 baud 8N1) or anything pyserial opens
by URL (``memhilboard://<board-id>`` reaches the in-process emulator). ASCII, one
command per line terminated by ``\\n`` (a ``\\r`` before it is ignored); every command
is answered by exactly one line terminated by ``\\n``. Commands are case-insensitive;
arguments are comma-separated decimal numbers in SI units (V, A, s); currents are
returned as ``%.9e``.

========================================  ==================================================
command                                   reply
========================================  ==================================================
``*IDN?``                                 ``MEMHIL,ARRAYBOARD,<board-id>,<firmware>``
``SIZE?``                                 ``<rows>,<cols>``
``VMAX?``                                 ``<v>``: the largest \\|V\\| a line may be driven to
``TINT?``                                 ``<s>``: ADC integration time of one read
``TINT <s>``                              ``OK`` (1e-6 .. 1 s)
``READC v0,v1,...,v{rows-1}``             ``i0,i1,...,i{cols-1}``
``READR v0,v1,...,v{cols-1}``             ``i0,i1,...,i{rows-1}``
``COMP?``                                 ``<a>``: the pulse current compliance
``COMP <a>``                              ``OK`` (1e-9 .. 0.1 A)
``PULSE mask_hex,amp,width,count``        ``OK``
``ZERO``                                  ``OK``
any error                                 ``ERR <code> <text>``
========================================  ==================================================

``READC``: every row i is driven at v_i and every column is held at 0 V by its
transimpedance amplifier (virtual ground); the reply is the current flowing into each
column (A), so an ideal array returns ``I = V @ G``. Every line is driven, so sneak
paths do not enter. ``READR`` is the transpose (columns driven, rows at virtual ground,
``I = G @ V``). Lines return to 0 V after each read.

``PULSE``: the V/2 scheme. ``mask_hex`` is a rows*cols-bit cell mask in hexadecimal,
bit ``k = i*cols + j`` (least significant bit = cell (0, 0)); the selected cells must be
a product of a row set R and a column set C. Rows in R are driven at ``amp`` (V),
columns in C at 0 V, every other line at ``amp/2``, for ``count`` pulses of ``width``
seconds: selected cells see ``amp``, half-selected cells ``amp/2``, all others 0 V.
Lines return to 0 V afterwards.

``COMP``: the current compliance of the following ``PULSE`` commands, per cell: each
selected cell has its own current limiter (as the simulator models a source in
compliance), so at the start of every pulse a cell whose current ``|amp| * G`` would
exceed ``COMP`` sees its voltage lowered to ``COMP / G``. Half-selected cells are limited
the same way. The value holds until the next ``COMP`` (``ZERO`` keeps it); at power-on it
is the board's maximum, 0.1 A (in effect no limit for memristive cells). Versions of the
driver that never send ``COMP`` pulse at that maximum.

``ZERO``: all lines to 0 V (the safe state).

Error codes: 1 unknown command, 2 malformed command or wrong number of arguments,
3 value out of range (\\|v\\| > VMAX, integration time, width not in (0, 1] s, count not
in 1..1e6, compliance not in 1e-9..0.1 A), 4 mask not a row x column product (or bits
beyond the array), 5 internal.

The driver sends a non-product mask as several ``PULSE`` commands, one per group of rows
sharing the same column pattern, so every cell of the mask is pulsed and no other cell
sees more than ``amp/2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pymeasure.adapters import SerialAdapter
from pymeasure.instruments import Instrument

from memhil.core.limits import row_column_blocks
from memhil.instruments.registry import InstrumentRanges, register_instrument
from memhil.instruments.session import resync_pymeasure


class ArrayBoardError(RuntimeError):
    """The board answered ``ERR <code> <text>``."""

    def __init__(self, code: int, text: str):
        super().__init__(f"array board error {code}: {text}")
        self.code, self.text = code, text


def _v(x: float) -> str:
    return f"{float(x):.6g}"


class ArrayBoard(Instrument):
    """memhil array board (``ArrayIO``): ``ArrayBoard("memhilboard://board0")``, a serial
    URL or port, a ``serial.Serial``, a VISA resource (``ASRL...::INSTR``) or an Adapter.
    """

    def __init__(
        self,
        adapter: Any,
        name: str = "arrayboard",
        *,
        timeout: float = 5.0,
        baudrate: int = 115200,
        **kwargs: Any,
    ):
        import serial  # pyserial

        if isinstance(adapter, str) and "://" in adapter and "::" not in adapter:
            adapter = serial.serial_for_url(adapter, timeout=timeout, baudrate=baudrate)
        if isinstance(adapter, serial.SerialBase):
            adapter = SerialAdapter(adapter, write_termination="\n", read_termination="\n")
        elif isinstance(adapter, str):  # a VISA resource string
            kwargs.setdefault("read_termination", "\n")
            kwargs.setdefault("write_termination", "\n")
            kwargs.setdefault("timeout", int(timeout * 1000))
            if adapter.upper().startswith("ASRL"):
                kwargs.setdefault("asrl", {"baud_rate": baudrate})
        super().__init__(adapter, name, includeSCPI=False, **kwargs)
        rows, cols = self.size
        self.rows, self.cols = int(rows), int(cols)

    # -- plumbing ---------------------------------------------------------------------------
    def read(self, **kwargs: Any) -> str:
        got = super().read(**kwargs).strip()
        if not got:
            raise TimeoutError(f"{self.name}: no reply from the array board")
        if got.startswith("ERR"):
            _, code, *text = got.split(" ", 2)
            raise ArrayBoardError(int(code) if code.isdigit() else -1, text[0] if text else "")
        return got

    def _ok(self, command: str) -> None:
        reply = self.ask(command)
        if reply != "OK":
            raise ArrayBoardError(-1, f"expected OK to {command.split(' ')[0]}, got {reply!r}")

    def check_set_errors(self) -> list:
        reply = self.read()
        if reply != "OK":
            raise ArrayBoardError(-1, f"expected OK, got {reply!r}")
        return []

    def close(self) -> None:
        self.adapter.close()

    def resync(self) -> None:
        """``Resyncable``: flush and drain the port, ``*IDN?`` must answer
        ``MEMHIL,ARRAYBOARD,...`` (the protocol has no ``*CLS``); close and re-open the
        port (serial URL or VISA resource) if that fails. Line voltages are not touched."""
        resync_pymeasure(
            self,
            identify=lambda: self.ask("*IDN?"),
            expected=lambda r: r.startswith("MEMHIL,ARRAYBOARD,"),
        )

    # -- properties -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.ask("*IDN?")

    size = Instrument.measurement("SIZE?", "Get the array size (rows, cols).", cast=int)

    v_max = Instrument.measurement("VMAX?", "Get the largest line voltage magnitude (V).")

    integration_time = Instrument.control(
        "TINT?",
        "TINT %.6g",
        "Control the ADC integration time of one read (s).",
        check_set_errors=True,
    )

    # -- ArrayIO --------------------------------------------------------------------------------
    def read_columns(self, v_rows: Sequence[float] | np.ndarray) -> np.ndarray:
        """Drive ``v_rows`` (V) on all rows, columns at virtual ground; column currents (A)."""
        return self._read("READC", v_rows, self.rows, self.cols)

    def read_rows(self, v_cols: Sequence[float] | np.ndarray) -> np.ndarray:
        """Drive ``v_cols`` (V) on all columns, rows at virtual ground; row currents (A)."""
        return self._read("READR", v_cols, self.cols, self.rows)

    def mvm(self, v_rows: np.ndarray) -> np.ndarray:
        """One ``READC`` per input vector: ``(batch, rows)`` -> ``(batch, cols)``."""
        v = np.atleast_2d(np.asarray(v_rows, dtype=float))
        return np.stack([self.read_columns(x) for x in v])

    compliance = Instrument.control(
        "COMP?",
        "COMP %.6g",
        "Control the per-cell current compliance of the following pulses (A).",
        check_set_errors=True,
    )

    def pulse_cells(
        self,
        mask: np.ndarray,
        amplitude_v: float,
        width_s: float,
        count: int = 1,
        compliance_a: float | None = None,
    ) -> int:
        """Pulse the masked cells with the V/2 scheme; returns the PULSE commands sent.
        ``compliance_a`` (A): sent as ``COMP`` before the pulses (None: the board keeps
        the compliance it has)."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self.rows, self.cols):
            raise ValueError(f"mask shape {m.shape} is not the array's {(self.rows, self.cols)}")
        if width_s <= 0 or int(count) != count or count < 1:
            raise ValueError(f"need width_s > 0 and an integer count >= 1, got {width_s}, {count}")
        if compliance_a is not None:
            if not 1e-9 <= compliance_a <= 0.1:
                raise ValueError(
                    f"compliance_a {compliance_a} A is outside the board's 1e-9 .. 0.1 A"
                )
            self._ok(f"COMP {_v(compliance_a)}")
        blocks = row_column_blocks(m)
        for rows, cols in blocks:
            block = np.zeros_like(m)
            block[np.ix_(rows, cols)] = True
            self._ok(f"PULSE {self._mask_hex(block)},{_v(amplitude_v)},{_v(width_s)},{int(count)}")
        return len(blocks)

    def safe_state(self) -> None:
        """All lines to 0 V."""
        self._ok("ZERO")

    # -- helpers ----------------------------------------------------------------------------------
    def _read(
        self, command: str, v: Sequence[float] | np.ndarray, n_in: int, n_out: int
    ) -> np.ndarray:
        values = [float(x) for x in np.asarray(v, dtype=float).ravel()]
        if len(values) != n_in:
            raise ValueError(f"{command} needs {n_in} voltages, got {len(values)}")
        reply = self.ask(f"{command} {','.join(_v(x) for x in values)}")
        out = np.array([float(x) for x in reply.split(",")])
        if out.shape != (n_out,):
            raise ArrayBoardError(-1, f"{command}: expected {n_out} currents, got {out.size}")
        return out

    def _mask_hex(self, mask: np.ndarray) -> str:
        bits = np.flatnonzero(mask.ravel())
        value = 0
        for k in bits:
            value |= 1 << int(k)
        digits = (self.rows * self.cols + 3) // 4
        return format(value, f"0{digits}X")


def create(address: str, name: str, **options: Any) -> ArrayBoard:
    """Open an array board at ``address``: a pyserial URL (``memhilboard://board0``,
    ``socket://127.0.0.1:PORT``), a serial port or an ``ASRL`` VISA resource."""
    return ArrayBoard(address, name, **options)


# protocol version 1: COMP <= 0.1 A, width <= 1 s, count <= 1e6; lines +-5 V (the
# reference board's DACs; VMAX? reports a board's own)
register_instrument(
    "memhil_array_board",
    "array",
    create,
    options=("timeout", "baudrate", "visa_library"),
    visa_option="visa_library",  # an ASRL resource: PyMeasure's VISAAdapter library
    ranges=InstrumentRanges(v_max_v=5.0, i_max_a=0.1, width_max_s=1.0, count_max=10**6),
)
