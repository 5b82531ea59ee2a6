"""Value types shared by every layer: one programming pulse, one list of cells."""

from __future__ import annotations

from typing import NamedTuple


class PulseSpec(NamedTuple):
    """One programming pulse: amplitude (V, sign = polarity) and width (s).

    A named tuple, so ``(amplitude_v, width_s)`` pairs from YAML or device presets unpack
    and compare equal to it."""

    amplitude_v: float
    width_s: float


CellList = tuple[tuple[int, int, int], ...]
"""Cells as ``(tile, row, col)`` index triples."""
