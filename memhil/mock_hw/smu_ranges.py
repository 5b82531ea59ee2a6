"""The ranges of the emulated source-measure units: which ranges a model has, how a
requested range snaps to one, how far a source may go on a fixed range, when a reading
overflows, the smallest limits, and the noise floor an open circuit reads.

Range tables: Keithley 2600B reference manual (2600BS-901-01), "Available ranges" and
"Maximum source values and readings" (full-scale source 101 %, measurement 102 % of the
range; the instrument autoranges at 100 %), and QCoDeS's ``Keithley2600`` tables
(limits); Keithley 2450 reference manual (2450-901-01), source and measure ranges
(105 % over-range) and limits. Overflowed readings are ``9.91e37`` on the 2600B and
``9.9e37`` on the 2450 (their manuals' overflow value).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RangeTable:
    """One SMU model's ranges (ascending, V and A), limits and noise floor."""

    source_v: tuple[float, ...]
    source_i: tuple[float, ...]
    measure_v: tuple[float, ...]
    measure_i: tuple[float, ...]
    limit_v_min: float  # smallest voltage limit (V)
    limit_i_min: float  # smallest current limit (A)
    source_full_scale: float  # the largest source level on a range, as a fraction of it
    measure_full_scale: float  # the largest reading on a range, as a fraction of it
    overflow: float  # what an overflowed reading reads
    #: RMS current noise of a reading on the lowest range (A): what an open circuit reads.
    #: An assumption of the order of the lowest range's noise specification; the same
    #: absolute noise on every range (a floor, below every range's accuracy).
    noise_floor_a: float

    def snap(self, ranges: tuple[float, ...], value: float) -> float | None:
        """The range a request for ``value`` selects (the smallest that holds |value|),
        None beyond the largest."""
        x = abs(float(value))
        return next((r for r in ranges if x <= r * (1 + 1e-12)), None)

    def source_fits(self, rng: float, level: float) -> bool:
        """Whether ``level`` can be sourced on the fixed range ``rng``."""
        return abs(level) <= rng * self.source_full_scale * (1 + 1e-12)

    def reading(self, ranges: tuple[float, ...], rng: float | None, value: float) -> float:
        """``value`` as read on the fixed range ``rng`` (None: autorange): the overflow
        value beyond full scale."""
        if rng is None:
            rng = ranges[-1]
        return self.overflow if abs(value) > rng * self.measure_full_scale else value


_K2600B_I = (1e-9, 10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0, 1.5)

#: Keithley 2634B/2635B/2636B (200 V class; the 100 pA range measures only).
K2636B = RangeTable(
    source_v=(0.2, 2.0, 20.0, 200.0),
    source_i=_K2600B_I,
    measure_v=(0.2, 2.0, 20.0, 200.0),
    measure_i=(100e-12, *_K2600B_I),
    limit_v_min=20e-3,
    limit_i_min=100e-12,
    source_full_scale=1.01,
    measure_full_scale=1.02,
    overflow=9.91e37,
    noise_floor_a=20e-15,
)

_K2600B_40V_I = (100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0, 3.0)

#: Keithley 2601B/2602B/2604B (40 V class).
K2602B = RangeTable(
    source_v=(0.1, 1.0, 6.0, 40.0),
    source_i=_K2600B_40V_I,
    measure_v=(0.1, 1.0, 6.0, 40.0),
    measure_i=_K2600B_40V_I,
    limit_v_min=10e-3,
    limit_i_min=10e-9,
    source_full_scale=1.01,
    measure_full_scale=1.02,
    overflow=9.91e37,
    noise_floor_a=1e-12,
)

_K2450_I = (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)

#: Keithley 2450.
K2450 = RangeTable(
    source_v=(0.02, 0.2, 2.0, 20.0, 200.0),
    source_i=_K2450_I,
    measure_v=(0.02, 0.2, 2.0, 20.0, 200.0),
    measure_i=_K2450_I,
    limit_v_min=0.02,
    limit_i_min=1e-9,
    source_full_scale=1.05,
    measure_full_scale=1.05,
    overflow=9.9e37,
    noise_floor_a=1e-13,
)


def k2600_table(model: str) -> RangeTable:
    """The range table of a 2600B model name (``"2636B"``)."""
    return K2636B if model.startswith("26") and model[2] in "13" else K2602B
