"""SET/RESET cycling (``switching``) and its statistics, and ``endurance`` (read every k
cycles, stop when the LRS/HRS window collapses below ``min_window``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, read_columns, resolve_cells
from memhil.protocols.plan import Checkpoint, Commit, IsDone, Pulse, Read, cell_records, keys, unit


@dataclass(frozen=True)
class SwitchingParams:
    cycles: int = 10
    v_set: float = 1.2
    v_reset: float = -1.2
    width_set_s: float = 1e-6
    width_reset_s: float = 1e-6
    count_set: int = 1
    count_reset: int = 1
    compliance_set_a: float = 1e-4
    compliance_reset_a: float = 1e-3
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(
            self,
            "cycles",
            "v_set",
            "width_set_s",
            "width_reset_s",
            "count_set",
            "count_reset",
            "compliance_set_a",
            "compliance_reset_a",
            "v_read",
        )
        require(self.v_reset < 0, "v_reset", f"must be < 0 (RESET polarity), got {self.v_reset}")
        check_cells(self.cells)


@dataclass(frozen=True)
class EnduranceParams(SwitchingParams):
    cycles: int = 1000
    read_every: int = 100
    min_window: float = 2.0  # stop when median(LRS/HRS) < this

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "read_every", "min_window")


def _reset(p: SwitchingParams, cells) -> Pulse:
    return Pulse(
        cells,
        p.v_reset,
        p.width_reset_s,
        p.count_reset,
        p.compliance_reset_a,
        keys(
            amplitude="v_reset",
            width="width_reset_s",
            count="count_reset",
            compliance="compliance_reset_a",
        ),
    )


def _set(p: SwitchingParams, cells) -> Pulse:
    return Pulse(
        cells,
        p.v_set,
        p.width_set_s,
        p.count_set,
        p.compliance_set_a,
        keys(
            amplitude="v_set", width="width_set_s", count="count_set", compliance="compliance_set_a"
        ),
    )


def _cycle(p: SwitchingParams, cells):
    """RESET, read HRS, SET, read LRS; returns the two Readings."""
    yield _reset(p, cells)
    g_hrs = yield Read(cells, "hrs", p.v_read, keys(v_read="v_read"))
    yield _set(p, cells)
    g_lrs = yield Read(cells, "lrs", p.v_read, keys(v_read="v_read"))
    return g_hrs, g_lrs


def _pulse_only(p: SwitchingParams, cells):
    yield _reset(p, cells)
    yield _set(p, cells)


def switching_plan(p: SwitchingParams, caps):
    cells = resolve_cells(p.cells, caps)
    for cycle in range(p.cycles):

        def body(cycle=cycle):
            hrs, lrs = yield from _cycle(p, cells)
            yield from cell_records(
                "switching",
                cells,
                {"cycle": cycle},
                {
                    **read_columns(hrs, "_hrs"),
                    **read_columns(lrs, "_lrs"),
                    "window": lrs.g_s / hrs.g_s,
                },
            )

        yield from unit(("switching", cycle), body())


def endurance_plan(p: EnduranceParams, caps):
    cells = resolve_cells(p.cells, caps)
    stop_key = ("endurance", "collapsed")
    if (yield IsDone(stop_key)):
        return
    start = 0
    while start < p.cycles:
        n = min(p.read_every, p.cycles - start)

        def body(start=start, n=n):
            for _ in range(n - 1):
                yield from _pulse_only(p, cells)
            hrs, lrs = yield from _cycle(p, cells)
            window = lrs.g_s / hrs.g_s
            yield from cell_records(
                "endurance",
                cells,
                {"cycle": start + n},
                {**read_columns(hrs, "_hrs"), **read_columns(lrs, "_lrs"), "window": window},
            )
            return float(window.median())

        median = yield from unit(("endurance", start + n), body())
        start += n
        if median is not None and median < p.min_window:
            yield Checkpoint(stop_key)
            yield Commit(stop_key)
            return


def switching_stats(points: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """SET/RESET statistics of switching/endurance points: median and coefficient of
    variation of HRS and LRS, median window, and the number of points."""
    points = list(points)
    hrs = [pt["g_hrs"] for pt in points if "g_hrs" in pt]
    lrs = [pt["g_lrs"] for pt in points if "g_lrs" in pt]
    win = [pt["window"] for pt in points if "window" in pt]

    def cv(x):
        return statistics.pstdev(x) / statistics.fmean(x) if x else float("nan")

    return {
        "n": len(lrs),
        "hrs_median_s": statistics.median(hrs),
        "lrs_median_s": statistics.median(lrs),
        "hrs_cv": cv(hrs),
        "lrs_cv": cv(lrs),
        "window_median": statistics.median(win),
    }
