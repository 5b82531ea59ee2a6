"""``SourceMeter`` over the unmodified QCoDeS Keithley 2450 driver (SCPI language mode).

* mode: ``source_function`` (and the complementary ``sense_function``: current when
  sourcing voltage, voltage when sourcing current); compliance: ``source.limit``
  (``:SOUR:VOLT:ILIM`` / ``:SOUR:CURR:VLIM``); NPLC: ``sense.nplc``; level:
  ``source.voltage`` / ``source.current``; output: ``output_enabled``;
* ``measure`` reads ``sense.current`` / ``sense.voltage`` (``:MEASure?`` into the active
  buffer), ``source.limit_tripped`` for the compliance flag, and the sourced value of
  that same reading from the buffer (``:FETCh? 'buf', SOUR``: the limited value when the
  source was in compliance). The driver refuses to measure with the output off;
* ``sweep`` is the instrument's linear sweep (``source.sweep_setup`` + ``sweep_start``:
  ``:SOUR:SWE:<f>:LIN ... ; :INIT; *WAI``, ``failAbort OFF``), read back from the buffer
  with the reading, the sourced value and its source status (``source_value_status``,
  whose ``SOURCE_STATUS_LIMIT`` bit flags a limited reading); ``dual=True`` is the 2450's
  dual sweep (start -> stop -> start, ``2 * points`` readings). The buffer is cleared
  after the readback (as the driver's ``sense.sweep`` does);
* ``pulse`` uses the same sweep engine: a 2-point sweep level -> base repeated ``count``
  times with the source delay ``width - t_int`` (t_int = NPLC / line frequency, the
  reading taken at the end of each step), so the level is held for exactly ``width`` as
  timed by the instrument and the base for the same time: ``period_s`` must be None or
  ``2 * width``. Widths shorter than the integration time are refused (lower the NPLC;
  the 2450's minimum is 0.01 PLC, 167 us at 60 Hz). The output is left on at ``base``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from qcodes.instrument import Instrument
from qcodes.instrument_drivers.Keithley import Keithley2450

from memhil.instruments.capabilities import Measurement, SourceMode, SweepResult
from memhil.instruments.registry import InstrumentRanges, QCODES_VISA_OPTIONS, register_instrument
from memhil.instruments.session import idn_matches, resync_qcodes

log = logging.getLogger(__name__)

#: SOURSTATus bit of a reading whose source was limited (matches memhil's 2450 emulator;
#: verify against the 2450 reference manual before relying on it on a bench).
SOURCE_STATUS_LIMIT = 0x08

_MIN_NPLC = 0.01
_SWEEP_ELEMENTS = ["measurement", "source_value", "source_value_status"]


class Keithley2450SourceMeter:
    """A QCoDeS ``Keithley2450`` as a ``SourceMeter``."""

    def __init__(self, instrument: Keithley2450, name: str | None = None):
        if "source_function" not in instrument.parameters:
            raise RuntimeError(f"{instrument.name}: the 2450 is not in SCPI language mode; "
                               "run set_correct_language() and power-cycle it")
        self.instrument = instrument
        self.name = name or instrument.name
        self._mode: SourceMode | None = None
        self._level: float | None = None

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def source_mode(self) -> SourceMode:
        if self._mode is None:
            self._mode = self.instrument.source_function()
        return self._mode

    def _buffer(self):
        instr = self.instrument
        return instr.buffer(instr.buffer_name())

    def _t_int(self) -> float:
        instr = self.instrument
        return float(instr.sense.nplc()) / float(instr.line_frequency())

    # -- SourceMeter -------------------------------------------------------------------------
    def set_source_mode(self, mode: SourceMode) -> None:
        if mode not in ("voltage", "current"):
            raise ValueError(f"{self.name}: source mode must be 'voltage' or 'current', got {mode!r}")
        instr = self.instrument
        instr.sense_function("current" if mode == "voltage" else "voltage")
        instr.source_function(mode)
        self._mode, self._level = mode, None

    def set_compliance(self, limit: float) -> None:
        self.instrument.source.limit(limit)

    def set_nplc(self, nplc: float) -> None:
        if not _MIN_NPLC <= nplc <= 10:
            raise ValueError(f"{self.name}: NPLC must be in [{_MIN_NPLC}, 10], got {nplc}")
        self.instrument.sense.nplc(nplc)

    def set_level(self, value: float) -> None:
        src = self.instrument.source
        (src.voltage if self.source_mode == "voltage" else src.current)(value)
        self._level = float(value)

    def output(self, on: bool) -> None:
        self.instrument.output_enabled(bool(on))

    def output_is_on(self) -> bool:
        return bool(self.instrument.output_enabled())

    def measure(self) -> Measurement:
        instr = self.instrument
        sense = instr.sense
        measured = float(sense.current() if self.source_mode == "voltage" else sense.voltage())
        limited = bool(instr.source.limit_tripped())
        raw = instr.ask(f":FETCh? '{instr.buffer_name()}', SOUR")
        try:
            sourced = float(raw)
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot parse the sourced value {raw!r}") from exc
        if self.source_mode == "voltage":
            return Measurement(voltage_v=sourced, current_a=measured, in_compliance=limited)
        return Measurement(voltage_v=measured, current_a=sourced, in_compliance=limited)

    def sweep(self, start: float, stop: float, points: int, *, dual: bool = False) -> SweepResult:
        if points < 2:
            raise ValueError(f"{self.name}: a sweep needs at least 2 points, got {points}")
        n = 2 * points if dual else points
        reading, sourced, status = self._run_sweep(start, stop, points, delay_s=0.0, count=1,
                                                   dual=dual, expected=n)
        src = np.linspace(start, stop, points)
        if dual:
            src = np.concatenate([src, src[::-1]])
        voltage = self.source_mode == "voltage"
        self._level = float(src[-1])
        return SweepResult(source=src, voltage_v=sourced if voltage else reading,
                           current_a=reading if voltage else sourced,
                           in_compliance=(status & SOURCE_STATUS_LIMIT) != 0,
                           mode="voltage" if voltage else "current")

    def _run_sweep(self, start: float, stop: float, points: int, *, delay_s: float, count: int,
                   dual: bool, expected: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        instr = self.instrument
        source, buf = instr.source, self._buffer()
        buf.clear_buffer()
        source.sweep_setup(start, stop, points, delay=delay_s, sweep_count=count,
                           range_mode="BEST", fail_abort="OFF", dual="ON" if dual else "OFF",
                           buffer_name=buf.buffer_name)
        duration = expected * (delay_s + self._t_int())
        try:
            source.sweep_start()
            with instr.timeout.set_to(2.0 * duration + (instr.timeout() or 5.0)):
                n = int(buf.number_of_readings())  # answered once *WAI lets the sweep end
            if n != expected:
                raise RuntimeError(f"{self.name}: sweep stored {n} readings, expected {expected}")
            previous = buf.elements()
            buf.elements(_SWEEP_ELEMENTS)
            try:
                raw = buf.get_data(1, n)
            finally:
                buf.elements(previous or [])
            try:
                values = np.array([float(x) for x in raw], dtype=float).reshape(n, 3)
            except ValueError as exc:
                raise ValueError(f"{self.name}: cannot parse sweep readback "
                                 f"{','.join(raw)[:80]!r}") from exc
            buf.clear_buffer()
        finally:
            source.sweep_reset()
        return values[:, 0], values[:, 1], values[:, 2].astype(np.int64)

    def pulse(self, level: float, width_s: float, count: int = 1, *, base: float = 0.0,
              period_s: float | None = None) -> None:
        if not width_s > 0:
            raise ValueError(f"{self.name}: pulse width must be > 0 s, got {width_s}")
        if int(count) != count or count < 1:
            raise ValueError(f"{self.name}: pulse count must be an integer >= 1, got {count}")
        if period_s is not None and not math.isclose(period_s, 2 * width_s, rel_tol=1e-6):
            raise ValueError(f"{self.name}: the 2450 pulses with a 50 % duty cycle (one source "
                             f"delay for level and base): period_s must be None or "
                             f"{2 * width_s} s, got {period_s}")
        t_int = self._t_int()
        if width_s < t_int:
            raise ValueError(f"{self.name}: width {width_s} s is shorter than the integration "
                             f"time {t_int} s (lower the NPLC)")
        self._run_sweep(level, base, 2, delay_s=width_s - t_int, count=int(count), dual=False,
                        expected=2 * int(count))
        self.set_level(base)

    def in_compliance(self) -> bool:
        return bool(self.instrument.source.limit_tripped())

    def safe_state(self) -> None:
        try:
            self.set_level(0.0)
        finally:
            self.output(False)

    def resync(self) -> None:
        """``Resyncable``: drain, ``*CLS``, ``*IDN?`` must name the model and serial the
        driver connected to; re-open the VISA session if that fails. The output is left
        as it is; the cached mode and level are re-read on next use."""
        instr = self.instrument
        resync_qcodes(instr, identify=lambda: instr.ask("*IDN?"),
                      expected=lambda r: idn_matches(r, instr.IDN.cache.get(get_if_invalid=False)))
        self._mode = self._level = None

    def close(self) -> None:
        if Instrument.is_valid(self.instrument):
            self.instrument.close()


def create(address: str, name: str, **options: Any) -> Keithley2450SourceMeter:
    """Open a Keithley 2450 at ``address`` (``options`` go to the QCoDeS driver)."""
    return Keithley2450SourceMeter(Keithley2450(name, address, **options), name=name)


# 2450: +-200 V, +-1 A (the QCoDeS driver's source range validators)
register_instrument("keithley2450", "smu", create, options=QCODES_VISA_OPTIONS,
                    visa_option="visalib",
                    ranges=InstrumentRanges(v_max_v=200.0, i_max_a=1.0))

__all__ = ["SOURCE_STATUS_LIMIT", "Keithley2450SourceMeter", "create"]
