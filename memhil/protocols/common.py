"""Helpers shared by the protocols: cell selection and parameter checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from memhil.backends.base import Capabilities, Reading
from memhil.core.config import require
from memhil.core.types import CellList

log = logging.getLogger("memhil.protocols")


def resolve_cells(cells: Sequence[Sequence[int]] | None, caps: Capabilities) -> CellList:
    """Explicit (tile, row, col) cells, sorted row-major and unique (the order in which a
    backend returns the reads of a cell list); None means every cell."""
    if cells is None:
        return tuple(
            (t, r, c) for t in range(caps.tiles) for r in range(caps.rows) for c in range(caps.cols)
        )
    # each cell is a (tile, row, col) 3-tuple; mypy cannot see the length of tuple(genexpr)
    return tuple(sorted({tuple(int(x) for x in cell) for cell in cells}))  # type: ignore[misc]


def check_cells(cells: Any) -> None:
    if cells is not None:
        require(len(cells) > 0, "cells", "must list at least one (tile, row, col) or be null")
        for cell in cells:
            require(len(cell) == 3, "cells", f"each cell is [tile, row, col], got {list(cell)}")


def positive(obj: Any, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        require(v > 0, name, f"must be > 0, got {v}")


def read_columns(r: Reading, suffix: str = "") -> dict[str, Any]:
    """The stored columns of a read: conductance ``g``, the voltage applied ``v_read_v``
    and the current measured ``i_read_a`` (``suffix`` names reads of one record apart)."""
    return {f"g{suffix}": r.g_s, f"v_read{suffix}_v": r.v_v, f"i_read{suffix}_a": r.i_a}


class OpenCircuitCheck:
    """For protocols that expect conducting (formed) cells: per cell, whether every read of
    a unit sat at the instrument's open-circuit floor (lifted needles, an open line). Such
    cells are stored with ``open_circuit`` True and warned about on the console, never
    passed off as a measured conductance. Not for pristine cells (forming)."""

    def __init__(self, protocol: str, unit_key: tuple):
        self.protocol, self.unit_key = protocol, unit_key
        self._flags: torch.Tensor | None = None
        self._floor_a = 0.0
        self._v_v = 0.0

    def add(self, r: Reading) -> None:
        at = r.at_floor.reshape(-1)
        self._flags = at.clone() if self._flags is None else self._flags & at
        self._floor_a, self._v_v = r.floor_a, float(r.v_v.reshape(-1)[0]) if r.v_v.numel() else 0.0

    def flags(self) -> list[bool]:
        """One flag per cell; warns when any is set."""
        flags = [] if self._flags is None else [bool(x) for x in self._flags.tolist()]
        n = sum(flags)
        if n:
            log.warning(
                "%s unit %s: %d of %d cell(s) read an open circuit in every read "
                "(|I| < %.3g A at %.3g V): no contact with the pads? stored with "
                "open_circuit = True",
                self.protocol,
                self.unit_key,
                n,
                len(flags),
                self._floor_a,
                self._v_v,
            )
        return flags
