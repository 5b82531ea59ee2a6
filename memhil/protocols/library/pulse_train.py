"""LTP then LTD: ``n_pulses`` potentiating then ``n_pulses`` depressing pulses, a read after
every pulse (and one before the train). One unit per phase.

Several amplitudes (for fitting a threshold model such as VTEAM, whose rate depends on
the amplitude): ``v_ltp`` and ``v_ltd`` may be equally long lists; train ``i`` is then
``n_pulses`` at ``v_ltp[i]`` followed by ``n_pulses`` at ``v_ltd[i]``, trains in list
order, and records carry a ``train`` key (the pulse index ``n`` counts across the whole
run). LTD pulses last ``width_ltd_s`` when given (thresholds differ by polarity), else
``width_s``."""

from __future__ import annotations

from dataclasses import dataclass

from memhil.core.config import require
from memhil.protocols.common import (
    OpenCircuitCheck,
    check_cells,
    positive,
    read_columns,
    resolve_cells,
)
from memhil.protocols.plan import Pulse, Read, cell_records, keys, unit


@dataclass(frozen=True)
class PulseTrainParams:
    n_pulses: int = 32
    v_ltp: float | tuple[float, ...] = 2.0
    v_ltd: float | tuple[float, ...] = -2.0
    width_s: float = 100e-9
    width_ltd_s: float | None = None
    compliance_a: float = 1e-3
    v_read: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "n_pulses", "width_s", "compliance_a", "v_read")
        require(
            self.width_ltd_s is None or self.width_ltd_s > 0,
            "width_ltd_s",
            f"must be > 0, got {self.width_ltd_s}",
        )
        require(
            isinstance(self.v_ltp, float) == isinstance(self.v_ltd, float),
            "v_ltd",
            "v_ltp and v_ltd must both be numbers or both be lists",
        )
        ltp, ltd = self.amplitudes()
        require(
            len(ltp) > 0 and len(ltp) == len(ltd),
            "v_ltd",
            f"needs as many amplitudes as v_ltp ({len(ltp)}), got {len(ltd)}",
        )
        for v in ltp:
            require(v > 0, "v_ltp", f"must be > 0, got {v}")
        for v in ltd:
            require(v < 0, "v_ltd", f"must be < 0, got {v}")
        check_cells(self.cells)

    @property
    def several(self) -> bool:
        """True when the run holds several trains (list amplitudes)."""
        return not isinstance(self.v_ltp, float)

    def amplitudes(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(LTP amplitudes, LTD amplitudes), one per train."""
        as_tuple = lambda v: (float(v),) if isinstance(v, (int, float)) else tuple(map(float, v))
        return as_tuple(self.v_ltp), as_tuple(self.v_ltd)

    @property
    def ltd_width_s(self) -> float:
        return self.width_s if self.width_ltd_s is None else self.width_ltd_s


def plan(p: PulseTrainParams, caps):
    cells = resolve_cells(p.cells, caps)
    several = p.several
    train_key = (lambda i: {"train": i}) if several else (lambda i: {})

    def start():
        r = yield Read(cells, "start", p.v_read, keys(v_read="v_read"))
        check = OpenCircuitCheck("pulse_train", ("pulse_train", "start"))
        check.add(r)
        yield from cell_records(
            "pulse_train",
            cells,
            {"phase": "start", **train_key(0), "pulse": 0, "n": 0},
            {**read_columns(r), "open_circuit": check.flags()},
        )

    yield from unit(("pulse_train", "start"), start())
    n0 = 0
    for train, (v_up, v_down) in enumerate(zip(*p.amplitudes())):
        for phase, v, key, width, wkey in (
            ("ltp", v_up, "v_ltp", p.width_s, "width_s"),
            (
                "ltd",
                v_down,
                "v_ltd",
                p.ltd_width_s,
                "width_s" if p.width_ltd_s is None else "width_ltd_s",
            ),
        ):
            unit_key = ("pulse_train", train, phase) if several else ("pulse_train", phase)

            def body(
                phase=phase,
                v=v,
                key=key,
                width=width,
                wkey=wkey,
                train=train,
                n0=n0,
                unit_key=unit_key,
            ):
                check = OpenCircuitCheck("pulse_train", unit_key)
                rows = []
                for k in range(1, p.n_pulses + 1):
                    yield Pulse(
                        cells,
                        v,
                        width,
                        1,
                        p.compliance_a,
                        keys(amplitude=key, width=wkey, compliance="compliance_a"),
                    )
                    r = yield Read(cells, phase, p.v_read, keys(v_read="v_read"))
                    check.add(r)
                    rows.append(
                        (
                            {"phase": phase, **train_key(train), "pulse": k, "n": n0 + k},
                            read_columns(r),
                        )
                    )
                flags = check.flags()  # records are stored when the unit commits anyway
                for rec_key, columns in rows:
                    yield from cell_records(
                        "pulse_train", cells, rec_key, {**columns, "open_circuit": flags}
                    )

            yield from unit(unit_key, body())
            n0 += p.n_pulses


def pulse_schedule(p: PulseTrainParams) -> list[tuple[float, float]]:
    """(amplitude V, width s) of every pulse of the run, in the order applied (pulse
    ``n`` of the records is entry ``n - 1``)."""
    out: list[tuple[float, float]] = []
    for v_up, v_down in zip(*p.amplitudes()):
        out += [(v_up, p.width_s)] * p.n_pulses + [(v_down, p.ltd_width_s)] * p.n_pulses
    return out
