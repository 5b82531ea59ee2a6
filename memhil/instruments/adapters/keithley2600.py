"""``SourceMeter`` over the unmodified QCoDeS Keithley 2600B driver (one adapter per channel).

* levels, mode, compliance, NPLC and output map onto the channel's Parameters (``volt``,
  ``curr``, ``mode``, ``limiti``/``limitv``, ``nplc``, ``output``);
* ``measure`` reads the measured quantity with the driver's ``measurement_status``
  (parsed from ``status.measurement.instrument.smuX.condition``); the sourced quantity is
  the programmed level unless the channel is in compliance, when it is measured too (a
  second integration at the same, limited, operating point);
* ``sweep`` is the driver's Lua fast sweep (``setup_fastsweep(LinSweep(...))`` +
  ``fastsweep``, binary readback); per-point compliance flags and the actually sourced
  values come from the same instrument buffer afterwards (``nvbuffer1.statuses`` bit 0x40
  and ``nvbuffer1.sourcevalues``, enabled with ``collectsourcevalues``), read in ASCII with
  one ``printbuffer`` query that also re-reads the readings (the driver does not check
  the binary block's ``#0`` header, so a corrupted transfer is caught by comparing the
  two). ``dual=True`` runs start -> stop and stop -> start (two fast
  sweeps; the stop level is measured twice). The output is left on at the last level.
* ``pulse`` runs a TSP script on the instrument (``loadandrunscript``): base level,
  output on, then ``count`` times {level; ``delay(width)``; base; ``delay(period - width)``}
  and a completion line the adapter waits for. The pulse timing is done by the
  instrument, not the host, so the transport latency does not enter a width; widths are
  as precise as the 2600B's script ``delay()`` plus the source's settling (tens of us on
  the low ranges): use this for widths of ~100 us and longer, a pulse generator below.
  Without ``period_s`` the off time equals the width. The output is left on at ``base``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from qcodes.instrument_drivers.Keithley import Keithley2636B
from qcodes.instrument_drivers.Keithley._Keithley_2600 import (
    Keithley2600,
    Keithley2600Channel,
    Keithley2600MeasurementStatus,
)

from memhil.instruments.adapters.qcodes_smu import QCodesSourceMeter
from memhil.instruments.capabilities import Measurement, SweepResult
from memhil.instruments.registry import QCODES_VISA_OPTIONS, InstrumentRanges, register_instrument
from memhil.instruments.session import read_watching_peer

log = logging.getLogger(__name__)

#: bufferVar.statuses bit of a reading taken in compliance (2600B reference manual).
BUFFER_STATUS_COMPLIANCE = 0x40

_PULSE_DONE = "memhil-pulse-done"

#: Sent by ``resync`` to leave script loading, harmless in either state. In the middle of
#: a ``loadscript``/``loadandrunscript`` chunk the first line (a character Lua never
#: accepts outside a string) makes the chunk a syntax error, so ``endscript`` then ends
#: loading with nothing compiled or run (a half-received pulse script must not run);
#: outside a chunk each line is a TSP syntax error, queued and then cleared by ``*CLS``.
#: ``abort`` stops a script still running (a pulse train), a no-op when none runs.
LEAVE_SCRIPT_LINES = ("@ memhil: abandon a half-loaded script @", "endscript", "abort")


class Keithley2600SourceMeter(QCodesSourceMeter):
    """One ``Keithley2600Channel`` (``smua``/``smub``) as a ``SourceMeter``. ``resync``
    acts on the whole instrument (both channels share the connection)."""

    def __init__(self, channel: Keithley2600Channel, name: str | None = None):
        super().__init__(channel.root_instrument, name or channel.full_name)
        self.channel = channel

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def instrument(self) -> Keithley2600:
        return self._instrument

    def _mode_parameter(self) -> Any:
        return self.channel.mode

    def _level_parameter(self, voltage: bool) -> Any:
        return self.channel.volt if voltage else self.channel.curr

    def _output_parameter(self) -> Any:
        return self.channel.output

    def _identify(self) -> str:
        return self.instrument.ask("localnode.model")

    def _identity_ok(self, reply: str) -> bool:
        return reply == self.instrument.model

    def _leave_busy_state(self) -> None:
        """Out of a half-loaded script (``LEAVE_SCRIPT_LINES``)."""
        for line in LEAVE_SCRIPT_LINES:
            self.instrument.visa_handle.write(line)

    def _tsp(self) -> str:
        return self.channel.channel

    # -- SourceMeter ---------------------------------------------------------------------------
    def set_compliance(self, limit: float) -> None:
        if self.source_mode == "voltage":
            self.channel.limiti(limit)
        else:
            self.channel.limitv(limit)

    def set_nplc(self, nplc: float) -> None:
        self.channel.nplc(nplc)

    def measure(self) -> Measurement:
        ok = Keithley2600MeasurementStatus.NORMAL
        voltage = self.source_mode == "voltage"
        ch = self.channel
        measured_p, sourced_p = (ch.curr, ch.volt) if voltage else (ch.volt, ch.curr)
        measured = float(measured_p())
        limited = measured_p.measurement_status not in (ok, None)
        sourced = float(sourced_p()) if (limited or self._level is None) else self._level
        return self._measurement(sourced, measured, limited)

    def sweep(self, start: float, stop: float, points: int, *, dual: bool = False) -> SweepResult:
        from qcodes.dataset import LinSweep  # heavy import, only when sweeping

        self._check_sweep(points)
        voltage = self.source_mode == "voltage"
        param = self._level_parameter(voltage)
        ch = self._tsp()
        src, meas, comp, sourced = [], [], [], []
        for a, b in [(start, stop)] + ([(stop, start)] if dual else []):
            # collectsourcevalues can only change on an empty buffer: clear first
            self.channel.write(f"{ch}.nvbuffer1.clear() {ch}.nvbuffer1.collectsourcevalues = 1")
            self.channel.setup_fastsweep(
                LinSweep(param, a, b, points), mode="IV" if voltage else "VI"
            )
            readings = np.asarray(self.channel.fastsweep(), dtype=float)
            statuses, values, check = self._buffer_columns(
                points, "statuses", "sourcevalues", "readings"
            )
            # The driver strips the binary block's '#0' header without checking it: compare
            # with the buffer's ASCII readings (6 digits) so that a corrupted transfer
            # raises instead of returning wrong currents.
            if not np.allclose(readings, check, rtol=1e-5, atol=0.0, equal_nan=False):
                bad = int(np.argmax(~np.isclose(readings, check, rtol=1e-5, atol=0.0)))
                raise ValueError(
                    f"{self.name}: fast-sweep binary readback is corrupt (point "
                    f"{bad}: {readings[bad]!r} vs {check[bad]!r} in the buffer)"
                )
            src.append(np.linspace(a, b, points))
            meas.append(readings)
            comp.append((statuses.astype(np.int64) & BUFFER_STATUS_COMPLIANCE) != 0)
            sourced.append(values)
        return self._sweep_result(
            np.concatenate(src), np.concatenate(sourced), np.concatenate(meas), np.concatenate(comp)
        )

    def _buffer_columns(self, n: int, *fields: str) -> list[np.ndarray]:
        """Columns of ``nvbuffer1`` (1..n) in one ASCII ``printbuffer`` query."""
        ch = self._tsp()
        cols = ", ".join(f"{ch}.nvbuffer1.{f}" for f in fields)
        raw = self.instrument.ask_raw(f"format.data = format.ASCII printbuffer(1, {n}, {cols})")
        values = self._floats(raw.split(","), "buffer readback", raw, expected=n * len(fields))
        return [values[k :: len(fields)] for k in range(len(fields))]

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
        off_s = width_s if period_s is None else period_s - width_s
        if off_s < 0:
            raise ValueError(
                f"{self.name}: period {period_s} s is shorter than the width {width_s} s"
            )
        ch, x = self._tsp(), "v" if self.source_mode == "voltage" else "i"
        script = [
            f"{ch}.source.level{x} = {base:.12g}",
            f"{ch}.source.output = 1",
            f"for k = 1, {int(count)} do",
            f"  {ch}.source.level{x} = {level:.12g}",
            f"  delay({width_s:.12g})",
            f"  {ch}.source.level{x} = {base:.12g}",
            f"  if k < {int(count)} then delay({off_s:.12g}) end",
            "end",
            "waitcomplete()",
            f'print("{_PULSE_DONE}")',
        ]
        instr = self.instrument
        duration_s = count * (width_s + off_s)
        instr.write("loadandrunscript\r\n" + "\r\n".join(script) + "\r\nendscript")
        with instr.timeout.set_to(2.0 * duration_s + (instr.timeout() or 5.0)):
            # a dropped connection is noticed at once, not at the end of the timeout
            reply = read_watching_peer(instr.visa_handle, instr.visa_handle.read)
        if reply.strip() != _PULSE_DONE:
            raise RuntimeError(f"{self.name}: pulse script did not complete (got {reply!r})")
        self._level = float(base)

    def in_compliance(self) -> bool:
        reply = self.channel.ask(f"{self._tsp()}.source.compliance").strip().lower()
        if reply not in ("true", "false"):
            raise ValueError(f"{self.name}: cannot parse compliance state {reply!r}")
        return reply == "true"


def create(address: str, name: str, **options: Any) -> dict[str, Keithley2600SourceMeter]:
    """Open a Keithley 2636B at ``address`` (``options`` go to the QCoDeS driver, e.g.
    ``visalib="@py"``, ``timeout``) and return its channels as ``SourceMeter``s."""
    instr = Keithley2636B(name, address, **options)
    return {
        ch.channel: Keithley2600SourceMeter(ch, name=f"{name}.{ch.channel}")
        for ch in instr.channels
    }


#: Shortest pulse of a 2600B (s): the Series 2600B datasheet's pulse specifications give a
#: minimum programmable pulse width of 100 us (a settled pulse at a given level and load
#: can need longer); ``pulse`` times its pulses with a TSP script's ``delay()``.
PULSE_WIDTH_MIN_S = 100e-6

# 2636B: +-200 V, 1.5 A DC (the QCoDeS driver's _vranges and _ilimit_minmax tables)
register_instrument(
    "keithley2636b",
    "smu",
    create,
    options=QCODES_VISA_OPTIONS,
    visa_option="visalib",
    ranges=InstrumentRanges(v_max_v=200.0, i_max_a=1.5, width_min_s=PULSE_WIDTH_MIN_S),
)

__all__ = ["BUFFER_STATUS_COMPLIANCE", "LEAVE_SCRIPT_LINES", "Keithley2600SourceMeter", "create"]
