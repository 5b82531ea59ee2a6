"""AutoFormer: ramp the forming pulse from ``v_start`` by ``v_step`` up to ``v_max``
(optionally doubling the width each step), read after each pulse, and stop pulsing a cell
once its read current at ``v_read`` reaches ``i_target_a``. Every pulse carries
``compliance_a``. One resumable unit per ramp step; a read before the ramp decides which
cells are already formed (so a resumed run never re-forms them)."""

from __future__ import annotations

from dataclasses import dataclass

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, read_columns, resolve_cells
from memhil.protocols.plan import Pulse, Read, cell_records, keys, unit


@dataclass(frozen=True)
class FormingParams:
    v_start: float = 1.0
    v_step: float = 0.1
    v_max: float = 3.0
    width_s: float = 1e-6
    double_width: bool = False
    width_max_s: float = 1e-3
    compliance_a: float = 1e-4
    i_target_a: float = 1e-6
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(
            self,
            "v_start",
            "v_step",
            "v_max",
            "width_s",
            "width_max_s",
            "compliance_a",
            "i_target_a",
            "v_read",
        )
        require(
            self.v_start <= self.v_max,
            "v_start",
            f"must be <= v_max ({self.v_max}), got {self.v_start}",
        )
        check_cells(self.cells)


def ramp(p: FormingParams) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    k = 0
    while True:
        v = p.v_start + k * p.v_step
        if v > p.v_max * (1 + 1e-9):
            return out
        w = min(p.width_s * 2**k, p.width_max_s) if p.double_width else p.width_s
        out.append((min(v, p.v_max), w))
        k += 1


def plan(p: FormingParams, caps):
    cells = resolve_cells(p.cells, caps)
    r0 = yield Read(cells, "pre", p.v_read, keys(v_read="v_read"))
    active = [c for c, i in zip(cells, r0.i_a.abs().tolist()) if i < p.i_target_a]
    for step, (v, w) in enumerate(ramp(p)):
        if not active:
            break

        def body(step=step, v=v, w=w, todo=tuple(active)):
            yield Pulse(
                todo,
                v,
                w,
                1,
                p.compliance_a,
                keys(
                    amplitude="v_max",
                    width="width_max_s" if p.double_width else "width_s",
                    compliance="compliance_a",
                ),
            )
            r = yield Read(todo, "form", p.v_read, keys(v_read="v_read"))
            i = r.i_a.abs()  # measured; pristine cells read low by design: no open-circuit flag
            yield from cell_records(
                "forming",
                todo,
                {"step": step},
                {
                    "v_pulse": [v] * len(todo),
                    "width_s": [w] * len(todo),
                    **read_columns(r),
                    "compliance_a": [p.compliance_a] * len(todo),
                    "formed": (i >= p.i_target_a).tolist(),
                },
            )
            return [c for c, ok in zip(todo, (i >= p.i_target_a).tolist()) if ok]

        formed = yield from unit(("forming", step), body())
        if formed is None:  # resumed: this step is journaled; the pre-read covers its effect
            continue
        active = [c for c in active if c not in set(formed)]
