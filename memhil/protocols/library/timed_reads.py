"""Reads over time: ``retention`` (optional programming, then a read every interval up to
``duration_s``, linear or log spaced), ``read_noise`` (repeated reads of the same cells),
``conductance_map`` (one full read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from memhil.core.config import require
from memhil.protocols.common import (
    OpenCircuitCheck,
    check_cells,
    positive,
    read_columns,
    resolve_cells,
)
from memhil.protocols.plan import Now, Pulse, Read, Wait, cell_records, keys, unit


@dataclass(frozen=True)
class RetentionParams:
    duration_s: float = 1e4
    interval_s: float = 100.0  # linear spacing: the read period
    spacing: Literal["linear", "log"] = "linear"
    t_first_s: float = 1.0  # log spacing: first read after programming
    n_points: int = 20  # log spacing: reads from t_first_s to duration_s
    program_v: float | None = None  # optional programming pulse before the first read
    program_width_s: float = 1e-6
    program_count: int = 1
    compliance_a: float = 1e-3
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(
            self,
            "duration_s",
            "interval_s",
            "t_first_s",
            "n_points",
            "program_width_s",
            "program_count",
            "compliance_a",
            "v_read",
        )
        require(
            self.t_first_s <= self.duration_s,
            "t_first_s",
            f"must be <= duration_s ({self.duration_s})",
        )
        check_cells(self.cells)

    def times(self) -> list[float]:
        if self.spacing == "log":
            n = self.n_points
            if n == 1:
                return [self.duration_s]
            r = (self.duration_s / self.t_first_s) ** (1 / (n - 1))
            return [self.t_first_s * r**k for k in range(n)]
        n = int(self.duration_s // self.interval_s + 1e-9)
        return [self.interval_s * k for k in range(n + 1)]


def retention_plan(p: RetentionParams, caps):
    cells = resolve_cells(p.cells, caps)
    if p.program_v is not None:

        def program():
            yield Pulse(
                cells,
                p.program_v,
                p.program_width_s,
                p.program_count,
                p.compliance_a,
                keys(
                    amplitude="program_v",
                    width="program_width_s",
                    count="program_count",
                    compliance="compliance_a",
                ),
            )

        yield from unit(("retention", "program"), program())
    t0 = yield Now()
    for k, t in enumerate(p.times()):

        def body(k=k, t=t):
            now = yield Now()
            if t0 + t > now:
                yield Wait(t0 + t - now)
            r = yield Read(cells, "retention", p.v_read, keys(v_read="v_read"))
            t_read = (yield Now()) - t0
            check = OpenCircuitCheck("retention", ("retention", k))
            check.add(r)
            yield from cell_records(
                "retention",
                cells,
                {"index": k},
                {"t_s": [t_read] * len(cells), **read_columns(r), "open_circuit": check.flags()},
            )

        yield from unit(("retention", k), body())


@dataclass(frozen=True)
class ReadNoiseParams:
    n_reads: int = 100
    interval_s: float = 0.0
    checkpoint_every: int = 100
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "n_reads", "checkpoint_every", "v_read")
        require(self.interval_s >= 0, "interval_s", f"must be >= 0, got {self.interval_s}")
        check_cells(self.cells)


def read_noise_plan(p: ReadNoiseParams, caps):
    cells = resolve_cells(p.cells, caps)
    for start in range(0, p.n_reads, p.checkpoint_every):

        def body(start=start):
            check = OpenCircuitCheck("read_noise", ("read_noise", start))
            rows = []
            for k in range(start, min(start + p.checkpoint_every, p.n_reads)):
                if p.interval_s and k:
                    yield Wait(p.interval_s)
                t = yield Now()
                r = yield Read(cells, "noise", p.v_read, keys(v_read="v_read"))
                check.add(r)
                rows.append(({"read": k}, {"t_s": [t] * len(cells), **read_columns(r)}))
            flags = check.flags()
            for key, columns in rows:
                yield from cell_records(
                    "read_noise", cells, key, {**columns, "open_circuit": flags}
                )

        yield from unit(("read_noise", start), body())


@dataclass(frozen=True)
class ConductanceMapParams:
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "v_read")
        check_cells(self.cells)


def conductance_map_plan(p: ConductanceMapParams, caps):
    cells = resolve_cells(p.cells, caps)

    def body():
        r = yield Read(cells, "map", p.v_read, keys(v_read="v_read"))
        check = OpenCircuitCheck("conductance_map", ("conductance_map",))
        check.add(r)
        yield from cell_records(
            "conductance_map", cells, {}, {**read_columns(r), "open_circuit": check.flags()}
        )

    yield from unit(("conductance_map",), body())
