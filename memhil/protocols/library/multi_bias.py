"""MultiBias: one row (word line) driven at ``v_bias_v``, the chosen columns (bit lines)
read at once where the backend reads lines in parallel (one MVM with that row alone
driven: every column current in one operation), else cell by cell in turn (ArC ONE's
MultiBias). ``mode`` forces one way; the records say which was used (``parallel``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from memhil.core.config import require
from memhil.protocols.plan import MVM, Read, cell_records, keys, unit


@dataclass(frozen=True)
class MultiBiasParams:
    row: int = 0
    tile: int = 0
    cols: tuple[int, ...] | None = None  # None: every column
    v_bias_v: float = 0.2
    n_reads: int = 1
    mode: Literal["auto", "parallel", "sequential"] = "auto"

    def __post_init__(self) -> None:
        require(self.row >= 0, "row", f"must be >= 0, got {self.row}")
        require(self.tile >= 0, "tile", f"must be >= 0, got {self.tile}")
        require(self.v_bias_v != 0, "v_bias_v", "must be non-zero")
        require(self.n_reads >= 1, "n_reads", f"must be >= 1, got {self.n_reads}")
        require(
            self.mode in ("auto", "parallel", "sequential"),
            "mode",
            f"is 'auto', 'parallel' or 'sequential', got {self.mode!r}",
        )
        if self.cols is not None:
            require(len(self.cols) > 0, "cols", "must list at least one column or be null")
            for c in self.cols:
                require(c >= 0, "cols", f"each column must be >= 0, got {c}")


def plan(p: MultiBiasParams, caps):
    require(p.tile < caps.tiles, "tile", f"must be < {caps.tiles} (tiles), got {p.tile}")
    require(p.row < caps.rows, "row", f"must be < {caps.rows} (rows), got {p.row}")
    cols = list(range(caps.cols)) if p.cols is None else sorted(set(p.cols))
    for c in cols:
        require(c < caps.cols, "cols", f"each column must be < {caps.cols}, got {c}")
    parallel = p.mode == "parallel" or (
        p.mode == "auto" and caps.read_strategy in ("parallel", "line")
    )
    cells = tuple((p.tile, p.row, c) for c in cols)

    def body():
        v_rows = torch.zeros(1, caps.rows, dtype=torch.float64)
        v_rows[0, p.row] = p.v_bias_v
        for k in range(p.n_reads):
            if parallel:
                out = yield MVM(v_rows, "multi_bias", p.tile, keys(v_read="v_bias_v"))
                i_a = torch.as_tensor(out).reshape(-1)[cols].double()
            else:
                currents = []
                for cell in cells:
                    r = yield Read((cell,), "multi_bias", p.v_bias_v, keys(v_read="v_bias_v"))
                    currents.append(r.i_a.reshape(-1)[0].double())
                i_a = torch.stack(currents)
            yield from cell_records(
                "multi_bias",
                cells,
                {"read": k},
                {
                    "v_bias_v": [p.v_bias_v] * len(cells),
                    "i_a": i_a,
                    "g": i_a / p.v_bias_v,
                    "parallel": [parallel] * len(cells),
                },
            )

    yield from unit(("multi_bias",), body())
