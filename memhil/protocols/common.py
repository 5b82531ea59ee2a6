"""Helpers shared by the protocols: cell selection and parameter checks."""

from __future__ import annotations

from typing import Any, Sequence

from memhil.backends.base import Capabilities
from memhil.config import require

CellList = tuple[tuple[int, int, int], ...]


def resolve_cells(cells: Sequence[Sequence[int]] | None, caps: Capabilities) -> CellList:
    """Explicit (tile, row, col) cells, sorted row-major and unique (the order in which a
    backend returns the reads of a cell list); None means every cell."""
    if cells is None:
        return tuple((t, r, c) for t in range(caps.tiles) for r in range(caps.rows)
                     for c in range(caps.cols))
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
