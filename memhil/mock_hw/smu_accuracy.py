"""The measurement accuracy of the emulated source-measure units: every reading of a unit
is off by its range's error, ``reading * (1 + gain) + offset``, where ``|gain|`` and
``|offset|`` lie within the manufacturer's one-year accuracy specification for that range
(± (% of reading + offset), 23 °C ± 5 °C). A real unit's error on a range is mostly
systematic (its calibration), so each emulated unit draws one (gain, offset) per quantity
and range, uniformly within the specification, from a seed: the same station and seed
give the same unit, reading after reading and run after run.

Specifications (measure accuracy, 1 year, 23 °C ± 5 °C, at 1 PLC):
- 2601B/2602B/2604B: Keithley "Models 2601B, 2602B and 2604B System SourceMeter
  Instrument Specifications" (SPEC-2602B Rev. B, February 2014), "Voltage/Current accuracy
  specifications", Measure column: every digit below checked against that table. The
  2600B Reference Manual's verification limits (2600BS-901-01 Rev. F, section 10, "current
  measurement accuracy limits": 0.89928 to 0.90073 uA for 0.9 uA on the 1 uA range) agree.
- 2450: Keithley "Model 2450 Interactive SourceMeter Instrument Specifications"
  (SPEC-2450 Rev. A, July 2013), Measure columns: every digit checked (the 1 A range's
  measure accuracy is 0.03 % + 500 uA; 0.067 % + 900 uA is its source accuracy).
- 2634B/2635B/2636B: the same family's datasheet, "Meter specifications (2634B, 2635B,
  2636B)": NOT verified (that table was not reachable here): entered from memory. Its
  10 uA .. 1 A current ranges carry the same values as the verified 2602B-class table;
  its voltage ranges, 100 pA .. 1 uA and 1.5 A are unchecked digits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from memhil.mock_hw.smu_ranges import K2450, K2602B, K2636B, RangeTable


@dataclass(frozen=True)
class Spec:
    """One range's accuracy: ± (``gain_rel`` x |reading| + ``offset``) (offset in V or A)."""

    gain_rel: float
    offset: float

    def bound(self, value: float) -> float:
        """The largest error the specification allows for a reading of ``value``."""
        return self.gain_rel * abs(value) + self.offset


@dataclass(frozen=True)
class AccuracyTable:
    """A model's measurement accuracy, one ``Spec`` per measure range of its RangeTable."""

    ranges: RangeTable
    measure_v: tuple[Spec, ...]
    measure_i: tuple[Spec, ...]

    def __post_init__(self) -> None:
        if len(self.measure_v) != len(self.ranges.measure_v) or len(self.measure_i) != len(
            self.ranges.measure_i
        ):
            raise ValueError("one accuracy Spec per measure range")

    def spec(self, kind: str, rng: float) -> Spec:
        """The Spec of measure range ``rng`` of quantity ``kind`` ('v' or 'i')."""
        ranges = self.ranges.measure_v if kind == "v" else self.ranges.measure_i
        specs = self.measure_v if kind == "v" else self.measure_i
        return specs[ranges.index(rng)]


def _pct(*pairs: tuple[float, float]) -> tuple[Spec, ...]:
    """Specs from (% of reading, offset) pairs."""
    return tuple(Spec(p / 100.0, o) for p, o in pairs)


#: 2634B/2635B/2636B: 200 mV .. 200 V; 100 pA .. 1.5 A.
K2636B_ACCURACY = AccuracyTable(
    K2636B,
    measure_v=_pct((0.015, 225e-6), (0.02, 350e-6), (0.015, 5e-3), (0.015, 50e-3)),
    measure_i=_pct(
        (0.15, 120e-15),
        (0.15, 240e-15),
        (0.15, 3e-12),
        (0.06, 40e-12),
        (0.025, 400e-12),
        (0.025, 1.5e-9),
        (0.02, 25e-9),
        (0.02, 200e-9),
        (0.02, 2.5e-6),
        (0.02, 20e-6),
        (0.03, 1.5e-3),
        (0.05, 3.5e-3),
    ),
)

#: 2601B/2602B/2604B: 100 mV .. 40 V; 100 nA .. 3 A.
K2602B_ACCURACY = AccuracyTable(
    K2602B,
    measure_v=_pct((0.015, 150e-6), (0.015, 200e-6), (0.015, 1e-3), (0.015, 8e-3)),
    measure_i=_pct(
        (0.05, 100e-12),
        (0.025, 500e-12),
        (0.025, 1.5e-9),
        (0.02, 25e-9),
        (0.02, 200e-9),
        (0.02, 2.5e-6),
        (0.02, 20e-6),
        (0.03, 1.5e-3),
        (0.05, 3.5e-3),
    ),
)

#: 2450: 20 mV .. 200 V; 10 nA .. 1 A.
K2450_ACCURACY = AccuracyTable(
    K2450,
    measure_v=_pct((0.1, 150e-6), (0.012, 200e-6), (0.012, 300e-6), (0.015, 1e-3), (0.015, 10e-3)),
    measure_i=_pct(
        (0.1, 50e-12),
        (0.06, 100e-12),
        (0.025, 300e-12),
        (0.025, 700e-12),
        (0.02, 6e-9),
        (0.02, 60e-9),
        (0.02, 600e-9),
        (0.025, 6e-6),
        (0.03, 500e-6),
    ),
)


def accuracy_table(ranges: RangeTable) -> AccuracyTable:
    """The accuracy table of a model's range table."""
    for table in (K2636B_ACCURACY, K2602B_ACCURACY, K2450_ACCURACY):
        if table.ranges is ranges:
            return table
    raise KeyError("no accuracy table for this range table")


class ReadingErrors:
    """One emulated unit's systematic reading errors: a (gain, offset) per quantity and
    range drawn once from ``seed`` and the unit's ``key`` (``"smu.smua"``), uniform within
    the specification. ``enabled=False``: readings are exact (tests that need them)."""

    def __init__(self, table: AccuracyTable, key: str, seed: int = 0, enabled: bool = True):
        self.table = table
        self.enabled = bool(enabled)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])
        self._errors: dict[tuple[str, float], tuple[float, float]] = {}
        for kind, ranges, specs in (
            ("v", table.ranges.measure_v, table.measure_v),
            ("i", table.ranges.measure_i, table.measure_i),
        ):
            for r, spec in zip(ranges, specs):
                g, o = rng.uniform(-1.0, 1.0, size=2)
                self._errors[(kind, r)] = (float(g) * spec.gain_rel, float(o) * spec.offset)

    def range_of(self, kind: str, fixed_range: float | None, value: float) -> float:
        """The measure range a reading of ``value`` is taken on: ``fixed_range``, or under
        autorange the smallest range that holds it (the largest beyond all)."""
        if fixed_range is not None:
            return fixed_range
        ranges = self.table.ranges.measure_v if kind == "v" else self.table.ranges.measure_i
        snapped = self.table.ranges.snap(ranges, value)
        return ranges[-1] if snapped is None else snapped

    def apply(self, kind: str, fixed_range: float | None, value: float) -> float:
        """``value`` (V for 'v', A for 'i') as this unit reads it on its range."""
        if not self.enabled:
            return value
        gain, offset = self._errors[(kind, self.range_of(kind, fixed_range, value))]
        return value * (1.0 + gain) + offset
