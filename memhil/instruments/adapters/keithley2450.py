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
from qcodes.instrument_drivers.Keithley import Keithley2450

from memhil.instruments.adapters.qcodes_smu import QCodesSourceMeter
from memhil.instruments.capabilities import Measurement, SourceMode, SweepResult
from memhil.instruments.registry import QCODES_VISA_OPTIONS, InstrumentRanges, register_instrument
from memhil.instruments.session import idn_matches

log = logging.getLogger(__name__)

#: SOURSTATus bit of a reading whose source was limited (matches memhil's 2450 emulator;
#: verify against the 2450 reference manual before relying on it on a bench).
SOURCE_STATUS_LIMIT = 0x08

_MIN_NPLC = 0.01
_SWEEP_ELEMENTS = ["measurement", "source_value", "source_value_status"]


class Keithley2450SourceMeter(QCodesSourceMeter):
    """A QCoDeS ``Keithley2450`` as a ``SourceMeter``."""

    def __init__(self, instrument: Keithley2450, name: str | None = None):
        if "source_function" not in instrument.parameters:
            raise RuntimeError(
                f"{instrument.name}: the 2450 is not in SCPI language mode; "
                "run set_correct_language() and power-cycle it"
            )
        super().__init__(instrument, name or instrument.name)

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def instrument(self) -> Keithley2450:
        return self._instrument

    def _mode_parameter(self) -> Any:
        return self.instrument.source_function

    def _write_mode(self, mode: SourceMode) -> None:
        # sense the complementary quantity: current when sourcing voltage and vice versa
        instr = self.instrument
        instr.sense_function("current" if mode == "voltage" else "voltage")
        instr.source_function(mode)

    def _level_parameter(self, voltage: bool) -> Any:
        src = self.instrument.source
        return src.voltage if voltage else src.current

    def _output_parameter(self) -> Any:
        return self.instrument.output_enabled

    def _identify(self) -> str:
        return self.instrument.ask("*IDN?")

    def _identity_ok(self, reply: str) -> bool:
        # the model and serial the driver connected to
        return idn_matches(reply, self.instrument.IDN.cache.get(get_if_invalid=False))

    def _buffer(self):
        instr = self.instrument
        return instr.buffer(instr.buffer_name())

    def _t_int(self) -> float:
        instr = self.instrument
        return float(instr.sense.nplc()) / float(instr.line_frequency())

    # -- SourceMeter -------------------------------------------------------------------------
    def set_compliance(self, limit: float) -> None:
        self.instrument.source.limit(limit)

    def set_nplc(self, nplc: float) -> None:
        if not _MIN_NPLC <= nplc <= 10:
            raise ValueError(f"{self.name}: NPLC must be in [{_MIN_NPLC}, 10], got {nplc}")
        self.instrument.sense.nplc(nplc)

    def measure(self) -> Measurement:
        instr = self.instrument
        sense = instr.sense
        measured = float(sense.current() if self.source_mode == "voltage" else sense.voltage())
        limited = bool(instr.source.limit_tripped())
        raw = instr.ask(f":FETCh? '{instr.buffer_name()}', SOUR")
        sourced = float(self._floats([raw], "the sourced value", raw)[0])
        return self._measurement(sourced, measured, limited)

    def sweep(self, start: float, stop: float, points: int, *, dual: bool = False) -> SweepResult:
        self._check_sweep(points)
        n = 2 * points if dual else points
        reading, sourced, status = self._run_sweep(
            start, stop, points, delay_s=0.0, count=1, dual=dual, expected=n
        )
        src = np.linspace(start, stop, points)
        if dual:
            src = np.concatenate([src, src[::-1]])
        return self._sweep_result(src, sourced, reading, (status & SOURCE_STATUS_LIMIT) != 0)

    def _run_sweep(
        self,
        start: float,
        stop: float,
        points: int,
        *,
        delay_s: float,
        count: int,
        dual: bool,
        expected: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        instr = self.instrument
        source, buf = instr.source, self._buffer()
        buf.clear_buffer()
        source.sweep_setup(
            start,
            stop,
            points,
            delay=delay_s,
            sweep_count=count,
            range_mode="BEST",
            fail_abort="OFF",
            dual="ON" if dual else "OFF",
            buffer_name=buf.buffer_name,
        )
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
            values = self._floats(raw, "sweep readback", ",".join(raw), expected=3 * n).reshape(
                n, 3
            )
            buf.clear_buffer()
        finally:
            source.sweep_reset()
        return values[:, 0], values[:, 1], values[:, 2].astype(np.int64)

    def pulse(
        self,
        level: float,
        width_s: float,
        count: int = 1,
        *,
        base: float = 0.0,
        period_s: float | None = None,
    ) -> None:
        self._check_pulse(width_s, count)
        if period_s is not None and not math.isclose(period_s, 2 * width_s, rel_tol=1e-6):
            raise ValueError(
                f"{self.name}: the 2450 pulses with a 50 % duty cycle (one source "
                f"delay for level and base): period_s must be None or "
                f"{2 * width_s} s, got {period_s}"
            )
        t_int = self._t_int()
        if width_s < t_int:
            raise ValueError(
                f"{self.name}: width {width_s} s is shorter than the integration "
                f"time {t_int} s (lower the NPLC)"
            )
        self._run_sweep(
            level,
            base,
            2,
            delay_s=width_s - t_int,
            count=int(count),
            dual=False,
            expected=2 * int(count),
        )
        self.set_level(base)

    def in_compliance(self) -> bool:
        return bool(self.instrument.source.limit_tripped())


def create(address: str, name: str, **options: Any) -> Keithley2450SourceMeter:
    """Open a Keithley 2450 at ``address`` (``options`` go to the QCoDeS driver)."""
    return Keithley2450SourceMeter(Keithley2450(name, address, **options), name=name)


# 2450: +-200 V, +-1 A (the QCoDeS driver's source range validators)
register_instrument(
    "keithley2450",
    "smu",
    create,
    options=QCODES_VISA_OPTIONS,
    visa_option="visalib",
    ranges=InstrumentRanges(v_max_v=200.0, i_max_a=1.0),
)

__all__ = ["SOURCE_STATUS_LIMIT", "Keithley2450SourceMeter", "create"]
