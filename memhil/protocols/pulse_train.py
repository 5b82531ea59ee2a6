"""LTP then LTD: ``n_pulses`` potentiating then ``n_pulses`` depressing pulses, a read after
every pulse (and one before the train). One unit per phase."""

from __future__ import annotations

from dataclasses import dataclass

from memhil.config import require
from memhil.protocols.common import check_cells, positive, resolve_cells
from memhil.protocols.plan import Pulse, Read, cell_records, keys, unit


@dataclass(frozen=True)
class PulseTrainParams:
    n_pulses: int = 32
    v_ltp: float = 2.0
    v_ltd: float = -2.0
    width_s: float = 100e-9
    compliance_a: float = 1e-3
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "n_pulses", "v_ltp", "width_s", "compliance_a", "v_read")
        require(self.v_ltd < 0, "v_ltd", f"must be < 0, got {self.v_ltd}")
        check_cells(self.cells)


def plan(p: PulseTrainParams, caps):
    cells = resolve_cells(p.cells, caps)

    def start():
        g = yield Read(cells, "start", p.v_read, keys(v_read="v_read"))
        yield from cell_records("pulse_train", cells, {"phase": "start", "pulse": 0, "n": 0}, {"g": g})
    yield from unit(("pulse_train", "start"), start())
    for phase_i, (phase, v, key) in enumerate((("ltp", p.v_ltp, "v_ltp"), ("ltd", p.v_ltd, "v_ltd"))):
        def body(phase=phase, v=v, key=key, phase_i=phase_i):
            for k in range(1, p.n_pulses + 1):
                yield Pulse(cells, v, p.width_s, 1, p.compliance_a,
                            keys(amplitude=key, width="width_s", compliance="compliance_a"))
                g = yield Read(cells, phase, p.v_read, keys(v_read="v_read"))
                yield from cell_records("pulse_train", cells,
                                        {"phase": phase, "pulse": k, "n": phase_i * p.n_pulses + k},
                                        {"g": g})
        yield from unit(("pulse_train", phase), body())
