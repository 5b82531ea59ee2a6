"""ConvergeToState: feedback programming of chosen cells to target conductances (ArC ONE's
ConvergeToState), run by the one program-and-verify routine
(``memhil.analog.program.program_and_verify``) through the plan's ``Program`` message, so
its pulses pass the pre-flight and its report is stored: per cell the target, the final
verify read, the error, whether it is within tolerance and the pulses it took."""

from __future__ import annotations

from dataclasses import dataclass

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, resolve_cells
from memhil.protocols.plan import Program, cell_records, keys, unit


@dataclass(frozen=True)
class ConvergeParams:
    g_targets_s: tuple[float, ...] = (20e-6,)  # one conductance per cell, or one for all
    g_tolerance_s: float = 1e-6
    set_v: float = 1.0
    set_width_s: float = 1e-6
    reset_v: float = -1.0
    reset_width_s: float = 1e-6
    max_iterations: int = 50
    n_reads: int = 1  # verify reads averaged per iteration
    compliance_a: float = 1e-3
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(
            self,
            "g_tolerance_s",
            "set_v",
            "set_width_s",
            "reset_width_s",
            "max_iterations",
            "n_reads",
            "compliance_a",
        )
        require(self.reset_v < 0, "reset_v", f"must be < 0 (RESET polarity), got {self.reset_v}")
        require(len(self.g_targets_s) > 0, "g_targets_s", "must list at least one conductance")
        for g in self.g_targets_s:
            require(g > 0, "g_targets_s", f"each target must be > 0 S, got {g}")
        check_cells(self.cells)
        require(
            len(self.g_targets_s) == 1
            or self.cells is None
            or len(self.g_targets_s) == len(self.cells),
            "g_targets_s",
            f"needs one target or one per cell ({len(self.cells or ())}), got {len(self.g_targets_s)}",
        )


def program_message(p: ConvergeParams, cells, g_targets_s) -> Program:
    """The ``Program`` message of these parameters for ``cells`` (shared with the seekers)."""
    return Program(
        tuple(cells),
        tuple(float(g) for g in g_targets_s),
        p.g_tolerance_s,
        (p.set_v, p.set_width_s),
        (p.reset_v, p.reset_width_s),
        p.max_iterations,
        p.n_reads,
        p.compliance_a,
        keys(amplitude="set_v", width="set_width_s", compliance="compliance_a"),
    )


def report_columns(report) -> dict:
    """The stored columns of a ``ProgramReport``."""
    return {
        "g_target": report.target_s,
        "g": report.achieved_s,
        "g_error": report.error_s,
        "within": report.within,
        "set_pulses": report.set_pulses,
        "reset_pulses": report.reset_pulses,
        "iterations": [report.iterations] * report.n_cells,
    }


def plan(p: ConvergeParams, caps):
    cells = resolve_cells(p.cells, caps)
    if len(p.g_targets_s) == 1:
        targets = [p.g_targets_s[0]] * len(cells)
    else:  # the params list the cells in file order: targets follow them
        given = {tuple(int(x) for x in c): g for c, g in zip(p.cells or (), p.g_targets_s)}
        targets = [given[c] for c in cells]

    def body():
        report = yield program_message(p, cells, targets)
        yield from cell_records("converge_to_state", cells, {}, report_columns(report))

    yield from unit(("converge_to_state",), body())
