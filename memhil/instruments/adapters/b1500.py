"""``SourceMeter`` over the unmodified QCoDeS Keysight B1500 driver (``KeysightB1500``),
one adapter per SMU module (B1517A HRSMU, B1511B MPSMU; one channel each).

* the mainframe discovers its modules (``UNT?``); every write of the driver is followed
  by its own ``ERRX?`` check, so an instrument error raises at the command that caused it;
* ``set_level`` is the module's spot ``voltage``/``current`` Parameter (``DV``/``DI``,
  carrying the compliance of ``source_config``); with the output relay open the level is
  kept and forced when ``output(True)`` closes it (``CN`` sets 0 V first);
* ``measure`` is the high-speed spot measurement (``TI``/``TV``) with the driver's
  ``measurement_status`` (``C``: compliance);
* ``set_nplc``: the high-resolution ADC in NPLC mode (``AAD ch,1`` + ``AIT 1,2,n``);
  the B1500 takes whole PLCs there, so ``n = max(1, round(nplc))``;
* ``sweep`` is a staircase sweep (``WV`` + ``MM 2`` + ``XE``) built with the driver's
  ``MessageBuilder`` and parsed with its FMT parser. The driver's ``IVSweepMeasurement``
  is not used: it measures two channels and reads its set-up back with ``*LRN?`` types
  a one-channel sweep does not need;
* ``pulse`` is the SMU's own pulse (``PT`` + ``PV`` + ``MM 3`` for one pulse, ``PWV`` +
  ``MM 4`` for a constant-amplitude train timed by the instrument). SMU pulses are slow:
  width 500 us to 2 s, period 5 ms to 5 s and at least width + 2 ms (B1500A data sheet,
  "SMU pulse"); shorter pulses need the B1530A WGFMU, which has no driver
  (docs/bench-bringup.md). Requests outside those floors raise before anything is sent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qcodes.instrument_drivers.Keysight.keysightb1500 import KeysightB1500, constants
from qcodes.instrument_drivers.Keysight.keysightb1500.KeysightB1500_module import (
    fmt_response_base_parser,
)
from qcodes.instrument_drivers.Keysight.keysightb1500.message_builder import MessageBuilder

from memhil.instruments.adapters.qcodes_smu import QCodesSourceMeter
from memhil.instruments.capabilities import Measurement, SourceMode, SweepResult
from memhil.instruments.registry import QCODES_VISA_OPTIONS, InstrumentRanges, register_instrument

#: SMU pulse timing of the B1517A/B1511B (B1500A data sheet, "SMU pulse setting").
PULSE_WIDTH_MIN_S = 500e-6
PULSE_WIDTH_MAX_S = 2.0
PULSE_PERIOD_MIN_S = 5e-3
PULSE_PERIOD_MAX_S = 5.0


def pulse_period_floor_s(width_s: float) -> float:
    """The shortest SMU pulse period for ``width_s``: 5 ms, and width + 2 ms up to 100 ms
    widths, width + 10 ms beyond (B1500A Programming Guide, ``PT``)."""
    return max(PULSE_PERIOD_MIN_S, width_s + (2e-3 if width_s <= 0.1 else 10e-3))


class B1500SourceMeter(QCodesSourceMeter):
    """One SMU module of a ``KeysightB1500`` as a ``SourceMeter``; ``resync`` acts on the
    mainframe (its modules share the connection)."""

    def __init__(self, module: Any, name: str | None = None):
        super().__init__(module.root_instrument, name or module.full_name)
        self.module = module
        self.channel = int(module.channels[0])
        self._mode = "voltage"
        self._compliance: float | None = None
        self._enabled: bool | None = None
        self._source_config()

    @property
    def instrument(self) -> KeysightB1500:
        return self._instrument

    @property
    def source_mode(self) -> SourceMode:
        return self._mode or "voltage"

    # -- QCodesSourceMeter hooks --------------------------------------------------------
    def _identify(self) -> str:
        return self.instrument.ask("*IDN?")

    def _identity_ok(self, reply: str) -> bool:
        return "B1500" in reply

    def resync(self) -> None:
        """``Resyncable``: the mainframe's drain, ``*CLS`` and identity check; the source
        mode and compliance are the adapter's and stay, the output state is re-queried."""
        mode = self.source_mode
        super().resync()
        self._mode, self._enabled = mode, None

    def _source_config(self) -> None:
        voltage = self.source_mode == "voltage"
        rng = constants.VOutputRange.AUTO if voltage else constants.IOutputRange.AUTO
        self.module.source_config(output_range=rng, compliance=self._compliance)

    # -- SourceMeter ------------------------------------------------------------------------
    def set_source_mode(self, mode: SourceMode) -> None:
        if mode not in ("voltage", "current"):
            raise ValueError(
                f"{self.name}: source mode must be 'voltage' or 'current', got {mode!r}"
            )
        self._mode, self._level = mode, None
        self._source_config()

    def set_compliance(self, limit: float) -> None:
        self._compliance = float(limit)
        self._source_config()
        if self._level is not None and self.output_is_on():
            self._force(self._level)  # FLEX applies a compliance with the next DV/DI

    def set_nplc(self, nplc: float) -> None:
        if not nplc > 0:
            raise ValueError(f"{self.name}: NPLC must be > 0, got {nplc}")
        self.module.use_high_resolution_adc()
        self.instrument.use_nplc_for_high_resolution_adc(max(1, round(nplc)))

    def _force(self, value: float) -> None:
        if self.source_mode == "voltage":
            self.module.voltage(value)
        else:
            self.module.current(value)

    def set_level(self, value: float) -> None:
        if self.output_is_on():
            self._force(value)
        self._level = float(value)

    def output(self, on: bool) -> None:
        if on:
            self.module.enable_outputs()
            self._enabled = True
            if self._level:
                self._force(self._level)
        else:
            self.module.disable_outputs()
            self._enabled = False

    def output_is_on(self) -> bool:
        """Queried (``*LRN? 0``) the first time and after ``resync``; cached from then on,
        since only ``output`` (and the safe state through it) switches the relay."""
        if self._enabled is None:
            self._enabled = bool(self.module.is_enabled())
        return self._enabled

    def measure(self) -> Measurement:
        voltage = self.source_mode == "voltage"
        measured_p = self.module.current if voltage else self.module.voltage
        measured = float(measured_p())
        status = measured_p.measurement_status
        limited = status is not None and status.name == "C"
        if limited or self._level is None:
            sourced_p = self.module.voltage if voltage else self.module.current
            sourced = float(sourced_p())
        else:
            sourced = self._level
        return self._measurement(sourced, measured, limited)

    def in_compliance(self) -> bool:
        """From a spot reading's status (the B1500 reports compliance per reading)."""
        return self.measure().in_compliance

    def sweep(self, start: float, stop: float, points: int) -> SweepResult:
        self._check_sweep(points)
        if self.source_mode != "voltage":
            raise ValueError(f"{self.name}: staircase sweeps are voltage sweeps here (WV)")
        if not self.output_is_on():
            self.output(True)
        ch, inst = self.channel, self.instrument
        comp = self._compliance
        inst.write(
            MessageBuilder()
            .wv(
                ch,
                constants.SweepMode.LINEAR,
                constants.VOutputRange.AUTO,
                start,
                stop,
                points,
                comp,
            )
            .message
        )
        inst.set_measurement_mode(constants.MM.Mode.STAIRCASE_SWEEP, [ch])
        with inst.timeout.set_to(10.0 + points * 2.0):
            raw = inst.ask(MessageBuilder().xe().message)
        data = fmt_response_base_parser(raw)
        if len(data.value) != 2 * points:
            raise ValueError(
                f"{self.name}: expected {2 * points} values from the sweep, got {len(data.value)}"
            )
        current = np.asarray(data.value[0::2], dtype=float)
        sourced = np.asarray(data.value[1::2], dtype=float)
        comp_flags = np.array([s == "C" for s in data.status[0::2]])
        return self._sweep_result(np.linspace(start, stop, points), sourced, current, comp_flags)

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
        # whole microseconds (the SMU's timing is far coarser): a width asked equal to the
        # floor arrives as float32 (memhil.core.limits.SLACK) and must not fall below it
        width_s = round(float(width_s), 6)
        if self.source_mode != "voltage":
            raise ValueError(f"{self.name}: SMU pulses are voltage pulses here (PV/PWV)")
        if not PULSE_WIDTH_MIN_S <= width_s <= PULSE_WIDTH_MAX_S:
            raise ValueError(
                f"{self.name}: pulse width {width_s:g} s is outside the B1500 SMU's "
                f"{PULSE_WIDTH_MIN_S:g}..{PULSE_WIDTH_MAX_S:g} s (a shorter pulse needs "
                f"the B1530A WGFMU: docs/bench-bringup.md)"
            )
        floor = pulse_period_floor_s(width_s)
        period = floor if period_s is None else float(period_s)
        if not floor <= period <= PULSE_PERIOD_MAX_S:
            raise ValueError(
                f"{self.name}: pulse period {period:g} s is outside {floor:g}..5 s for a "
                f"{width_s:g} s pulse"
            )
        if not self.output_is_on():
            self.output(True)
        ch, inst = self.channel, self.instrument
        v_range = constants.VOutputRange.AUTO
        commands = [MessageBuilder().pt(hold=0.0, width=width_s, period=period).message]
        if count == 1:
            commands.append(MessageBuilder().pv(ch, v_range, base, level, self._compliance).message)
            mode = constants.MM.Mode.PULSED_SPOT
        else:
            # written out: QCoDeS 0.58's MessageBuilder.pwv emits "PWI" (a current sweep)
            comp = "" if self._compliance is None else f",{self._compliance}"
            commands.append(
                f"PWV {ch},{int(constants.SweepMode.LINEAR)},{int(v_range)},{base},"
                f"{level},{level},{int(count)}{comp}"
            )
            mode = constants.MM.Mode.PULSED_SWEEP
        for command in commands:
            inst.write(command)  # one write each: the driver checks ERRX? after every one
        inst.set_measurement_mode(mode, [ch])
        with inst.timeout.set_to(10.0 + 2.0 * count * period):
            raw = inst.ask(MessageBuilder().xe().message)
        data = fmt_response_base_parser(raw)
        if len(data.value) != count:
            raise ValueError(f"{self.name}: expected {count} pulse readings, got {len(data.value)}")
        self._level = float(base)


def create(address: str, name: str, **options: Any) -> dict[str, B1500SourceMeter]:
    """Open a B1500A at ``address`` (``options`` go to the QCoDeS driver, e.g.
    ``visalib="@py"``, ``timeout``) and return its SMU modules as ``SourceMeter``s named
    as the driver names them (``smu1``, ``smu2``, ...)."""
    instr = KeysightB1500(name, address, **options)
    smus = instr.by_kind[constants.ModuleKind("SMU")]
    return {m.short_name: B1500SourceMeter(m, name=f"{name}.{m.short_name}") for m in smus}


# B1517A/B1511B: +-100 V, 100 mA; SMU pulses 500 us .. 2 s (B1500A data sheet)
register_instrument(
    "keysight_b1500a",
    "smu",
    create,
    options=QCODES_VISA_OPTIONS,
    visa_option="visalib",
    ranges=InstrumentRanges(
        v_max_v=100.0, i_max_a=0.1, width_max_s=PULSE_WIDTH_MAX_S, width_min_s=PULSE_WIDTH_MIN_S
    ),
)

__all__ = [
    "PULSE_PERIOD_MIN_S",
    "PULSE_WIDTH_MAX_S",
    "PULSE_WIDTH_MIN_S",
    "B1500SourceMeter",
    "create",
    "pulse_period_floor_s",
]
