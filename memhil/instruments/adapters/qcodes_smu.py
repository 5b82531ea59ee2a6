"""The part of a ``SourceMeter`` that every adapter over a QCoDeS source-measure driver
shares (the Keithley 2600B and 2450 adapters): the cached source mode and level, levels,
output, the safe state, argument checks, assembling measurements and sweeps by source
mode, parsing readback, ``resync`` and ``close``.

A subclass names its driver's parameters (``_mode_parameter``, ``_level_parameter``,
``_output_parameter``) and how it identifies itself when resynchronizing
(``_identify``/``_identity_ok``, and ``_leave_busy_state`` where it has one), and implements what
differs between instruments: compliance, measure, sweep, pulse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from qcodes.instrument import Instrument

from memhil.instruments.capabilities import Measurement, SourceMode, SweepResult
from memhil.instruments.session import resync_qcodes


class QCodesSourceMeter:
    """A ``SourceMeter`` over a QCoDeS instrument (or one channel of it), ``name`` in
    messages. The source mode and the last level set are cached (the level stands in for
    the sourced value of a reading not in compliance); ``resync`` forgets both."""

    def __init__(self, instrument: Any, name: str):
        self._instrument = instrument
        self.name = name
        self._mode: SourceMode | None = None
        self._level: float | None = None

    # -- what a subclass names -----------------------------------------------------------------
    def _mode_parameter(self) -> Any:
        """The driver parameter that reads the source mode ("voltage" / "current")."""
        raise NotImplementedError

    def _write_mode(self, mode: SourceMode) -> None:
        """Switch the instrument to source ``mode`` (the one checked mode)."""
        self._mode_parameter()(mode)

    def _level_parameter(self, voltage: bool) -> Any:
        """The driver parameter that sets the source level in volts or in amperes."""
        raise NotImplementedError

    def _output_parameter(self) -> Any:
        """The driver parameter that switches the output (True / False)."""
        raise NotImplementedError

    def _identify(self) -> str:
        """The identity query ``resync`` checks the connection with."""
        raise NotImplementedError

    def _identity_ok(self, reply: str) -> bool:
        """Whether ``reply`` to ``_identify`` names the instrument the driver connected to."""
        raise NotImplementedError

    def _leave_busy_state(self) -> None:
        """Bring the command interface back to idle before ``*CLS`` (e.g. out of a
        half-loaded script), harmless when it is idle; nothing by default."""

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def instrument(self) -> Any:
        return self._instrument

    @property
    def source_mode(self) -> SourceMode:
        if self._mode is None:
            self._mode = self._mode_parameter()()
        return self._mode

    # -- SourceMeter ---------------------------------------------------------------------------
    def set_source_mode(self, mode: SourceMode) -> None:
        if mode not in ("voltage", "current"):
            raise ValueError(
                f"{self.name}: source mode must be 'voltage' or 'current', got {mode!r}"
            )
        self._write_mode(mode)
        self._mode, self._level = mode, None

    def set_level(self, value: float) -> None:
        self._level_parameter(self.source_mode == "voltage")(value)
        self._level = float(value)

    def output(self, on: bool) -> None:
        self._output_parameter()(bool(on))

    def output_is_on(self) -> bool:
        return bool(self._output_parameter()())

    def safe_state(self) -> None:
        try:
            self.set_level(0.0)
        finally:
            self.output(False)

    def resync(self) -> None:
        """``Resyncable``: drain, leave a busy state where the instrument has one,
        ``*CLS``, and the identity query must name the instrument the driver connected
        to; re-open the VISA session if that fails. Outputs and levels are left as they
        are; the cached mode and level are re-read on next use."""
        resync_qcodes(
            self.instrument,
            identify=self._identify,
            expected=self._identity_ok,
            idle=self._leave_busy_state,
        )
        self._mode = self._level = None

    def close(self) -> None:
        """Close the underlying instrument (idempotent; shared by the channels of one)."""
        if Instrument.is_valid(self._instrument):
            self._instrument.close()

    # -- shared by the subclasses' measure, sweep and pulse ------------------------------------
    def _measurement(self, sourced: float, measured: float, limited: bool) -> Measurement:
        """One point from the sourced and measured values of the present source mode."""
        if self.source_mode == "voltage":
            return Measurement(voltage_v=sourced, current_a=measured, in_compliance=limited)
        return Measurement(voltage_v=measured, current_a=sourced, in_compliance=limited)

    def _sweep_result(
        self,
        source: np.ndarray,
        sourced: np.ndarray,
        measured: np.ndarray,
        in_compliance: np.ndarray,
    ) -> SweepResult:
        """A sweep from its programmed levels and the sourced and measured values."""
        voltage = self.source_mode == "voltage"
        self._level = float(source[-1])
        return SweepResult(
            source=source,
            voltage_v=sourced if voltage else measured,
            current_a=measured if voltage else sourced,
            in_compliance=in_compliance,
            mode="voltage" if voltage else "current",
        )

    def _check_sweep(self, points: int) -> None:
        if points < 2:
            raise ValueError(f"{self.name}: a sweep needs at least 2 points, got {points}")

    def _check_pulse(self, width_s: float, count: int) -> None:
        if not width_s > 0:
            raise ValueError(f"{self.name}: pulse width must be > 0 s, got {width_s}")
        if int(count) != count or count < 1:
            raise ValueError(f"{self.name}: pulse count must be an integer >= 1, got {count}")

    def _floats(
        self, values: Iterable[str], what: str, text: str, expected: int | None = None
    ) -> np.ndarray:
        """``values`` (``expected`` of them) as floats; a ValueError naming ``what`` and the
        reply ``text`` (its first 80 characters) for a garbled or truncated reply."""
        try:
            out = np.array([float(x) for x in values], dtype=float)
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot parse {what} {text[:80]!r}") from exc
        if expected is not None and out.size != expected:
            raise ValueError(
                f"{self.name}: expected {expected} values in the {what}, got {out.size}"
            )
        return out


__all__ = ["QCodesSourceMeter"]
