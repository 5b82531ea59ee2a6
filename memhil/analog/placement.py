"""Placing weight matrices on the tiles of a backend: one first-fit packer for every layer.

A region is a rectangle of devices (rows = inputs, columns = the output devices, e.g. two
per output for a differential pair). ``pack_columns`` lays regions side by side along the
columns of a tile and starts the next tile when one is full; ``one_per_tile`` gives each
region a tile of its own where there are enough, else packs them on tile 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """Where one matrix sits: ``tile``, first ``row`` and ``col``, and its size ``rows`` x
    ``cols`` in devices; ``name`` labels it in error messages."""

    tile: int
    row: int
    col: int
    rows: int
    cols: int
    name: str = ""

    def region(self) -> tuple[int, slice, slice]:
        """``(tile, rows, cols)`` index of the region into a ``(tiles, rows, cols)`` array."""
        rows = slice(self.row, self.row + self.rows)
        return self.tile, rows, slice(self.col, self.col + self.cols)


def _labels(sizes: Sequence[tuple[int, int]], names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"region {i}" for i in range(len(sizes))]
    if len(names) != len(sizes):
        raise ValueError(f"{len(names)} names for {len(sizes)} regions")
    return list(names)


def pack_columns(
    sizes: Sequence[tuple[int, int]],
    shape: tuple[int, int, int],
    *,
    names: Sequence[str] | None = None,
) -> list[Region]:
    """Regions of ``(rows, cols)`` ``sizes`` packed left to right along the columns of a
    tile from row 0, spilling to the next tile when one is full (first fit, in order).

    Raises ValueError naming the region, its size and the array when it does not fit."""
    tiles, rows, cols = shape
    labels = _labels(sizes, names)
    out: list[Region] = []
    tile, col = 0, 0
    for label, (n_rows, n_cols) in zip(labels, sizes):
        if n_rows > rows or n_cols > cols:
            raise ValueError(
                f"{label} needs {n_rows} rows x {n_cols} columns: a {n_rows} x "
                f"{n_cols} region does not fit a {rows} x {cols} tile"
            )
        if col + n_cols > cols:
            tile, col = tile + 1, 0
        if tile >= tiles:
            need = sum(c for _, c in sizes)
            raise ValueError(
                f"{label} does not fit: regions of {need} columns in all "
                f"({list(sizes)}) do not fit {tiles} tile(s) of {rows} x {cols}"
            )
        out.append(Region(tile, 0, col, n_rows, n_cols, label))
        col += n_cols
    return out


def one_per_tile(
    sizes: Sequence[tuple[int, int]],
    shape: tuple[int, int, int],
    *,
    names: Sequence[str] | None = None,
) -> list[Region]:
    """Each region on a tile of its own (a read of one then touches one tile) when there
    are enough tiles and each fits one; otherwise all side by side on tile 0.

    Raises ValueError naming the sizes and the array when neither fits."""
    tiles, rows, cols = shape
    labels = _labels(sizes, names)
    need_rows = max(r for r, _ in sizes)
    if tiles >= len(sizes) and need_rows <= rows and max(c for _, c in sizes) <= cols:
        return [
            Region(t, 0, 0, r, c, label) for t, (label, (r, c)) in enumerate(zip(labels, sizes))
        ]
    total_cols = sum(c for _, c in sizes)
    if need_rows > rows or total_cols > cols:
        raise ValueError(
            f"regions {list(sizes)} (rows x cols) do not fit an array of "
            f"{tiles} tiles x {rows} rows x {cols} cols (need {need_rows} rows and "
            f"{total_cols} columns on one tile, or one tile per region)"
        )
    return pack_columns(sizes, (1, rows, cols), names=labels)
