"""Value types shared by every layer: one programming pulse, one list of cells."""

from __future__ import annotations

from typing import NamedTuple


class PulseSpec(NamedTuple):
    """One programming pulse: amplitude (V, sign = polarity) and width (s).

    A named tuple, so ``(amplitude_v, width_s)`` pairs from YAML or device presets unpack
    and compare equal to it."""

    amplitude_v: float
    width_s: float


def as_pulse(value: tuple[float, float] | None) -> PulseSpec | None:
    """``value`` (None, a PulseSpec or an (amplitude V, width s) pair) as a PulseSpec."""
    if value is None or isinstance(value, PulseSpec):
        return value
    amplitude_v, width_s = value
    return PulseSpec(float(amplitude_v), float(width_s))


CellList = tuple[tuple[int, int, int], ...]
"""Cells as ``(tile, row, col)`` index triples."""
