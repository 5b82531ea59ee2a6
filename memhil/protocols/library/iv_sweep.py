"""Curve tracer: bipolar staircase 0 -> +V -> 0 -> -V -> 0, a pulse of ``step_width_s`` at
each level and a read after it; records v and i = g * v per cell and step."""

from __future__ import annotations

from dataclasses import dataclass

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, read_columns, resolve_cells
from memhil.protocols.plan import Pulse, Read, cell_records, keys, unit


@dataclass(frozen=True)
class IVSweepParams:
    v_max: float = 1.0
    v_min: float | None = None  # negative end; default -v_max
    v_step: float = 0.1
    step_width_s: float = 1e-6
    cycles: int = 1
    compliance_a: float = 1e-4
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "v_max", "v_step", "step_width_s", "cycles", "compliance_a", "v_read")
        require(self.v_min is None or self.v_min < 0, "v_min", f"must be < 0, got {self.v_min}")
        check_cells(self.cells)


def levels(p: IVSweepParams) -> list[tuple[str, float]]:
    """(branch, V) of one cycle: up+, down+, up- (towards v_min), down-."""

    def ramp(a: float, b: float) -> list[float]:
        n = max(1, round(abs(b - a) / p.v_step))
        return [a + (b - a) * k / n for k in range(1, n + 1)]

    v_neg = -p.v_max if p.v_min is None else p.v_min
    out = [("up+", v) for v in ramp(0.0, p.v_max)]
    out += [("down+", v) for v in ramp(p.v_max, 0.0)[:-1]]
    out += [("up-", v) for v in ramp(0.0, v_neg)]
    out += [("down-", v) for v in ramp(v_neg, 0.0)[:-1]]
    return out


def plan(p: IVSweepParams, caps):
    cells = resolve_cells(p.cells, caps)
    lv = levels(p)
    for cycle in range(p.cycles):

        def body(cycle=cycle):
            for step, (branch, v) in enumerate(lv):
                src = "v_max" if v > 0 else ("v_min" if p.v_min is not None else "v_max")
                yield Pulse(
                    cells,
                    v,
                    p.step_width_s,
                    1,
                    p.compliance_a,
                    keys(amplitude=src, width="step_width_s", compliance="compliance_a"),
                )
                r = yield Read(cells, "iv", p.v_read, keys(v_read="v_read"))
                # i: the current at the sweep level v implied by the chord conductance read
                # at v_read (the read's own applied voltage and current are stored too)
                yield from cell_records(
                    "iv_sweep",
                    cells,
                    {"cycle": cycle, "step": step, "branch": branch},
                    {"v": [v] * len(cells), **read_columns(r), "i": r.g_s * v},
                )

        yield from unit(("iv_sweep", cycle), body())
