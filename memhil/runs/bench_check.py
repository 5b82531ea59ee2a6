"""The bring-up checklist of a bench (docs/bench-bringup.md), run before a chip goes on
the chuck: every instrument identifies itself, the safe state is confirmed by queries,
the prober makes contact, the station's declared test structure (a resistor or a
sacrificial device) reads within its tolerance, and an SMU clamps at a compliance set
below the structure's current. Nothing but the declared structure is read or driven.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memhil.backends.hardware import HardwareBackend
from memhil.core.errors import ConfigError
from memhil.instruments.capabilities import Resyncable
from memhil.instruments.station import ReferenceStructure

#: How far above its compliance an SMU's reading may sit and still count as clamped:
#: the current-measurement accuracy of the SMUs memhil drives is well within 1 % of range
#: (2636B, B1500A, 4200A-SCS data sheets), 2 % leaves room for a range boundary.
CLAMP_TOLERANCE_REL = 0.02
#: A test structure reading above this many times its nominal resistance is an open
#: circuit (needles off the pads), not a structure out of tolerance.
OPEN_FACTOR = 100.0


@dataclass(frozen=True)
class CheckResult:
    """One line of the checklist: ``passed`` None when the check does not apply."""

    name: str
    passed: bool | None
    value: str
    tolerance: str


def require_test_structure(backend: HardwareBackend) -> ReferenceStructure:
    """The station's declared test structure; a ConfigError when there is none (the check
    touches nothing it was not told it may touch)."""
    structure = backend.station.config.test_structure
    if structure is None:
        raise ConfigError(
            "test_structure",
            "the station declares no test structure (a resistor or a sacrificial device "
            "the bench check may drive): add a test_structure: section "
            "(docs/bench-bringup.md)",
            backend.station.config.source,
        )
    return structure


def check_bench(backend: HardwareBackend) -> list[CheckResult]:
    """Run the checklist on ``backend``'s station and return its lines (the station's
    safe state is restored at the end whatever happened)."""
    structure = require_test_structure(backend)
    results: list[CheckResult] = []

    def run(name: str, tolerance: str, fn: Callable[[], tuple[bool | None, str]]) -> None:
        try:
            passed, value = fn()
        except Exception as exc:  # noqa: BLE001 - a failed check is a line of the table
            passed, value = False, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        results.append(CheckResult(name, passed, value, tolerance))

    try:
        run("identity", "answers its identity query", lambda: _identity(backend))
        run("safe state", "confirmed by queries", lambda: _safe_state(backend))
        run("prober contact", "needles on the pads", lambda: _contact(backend, structure))
        tol = f"{structure.r_ohm:.4g} ohm +- {100 * structure.tolerance_rel:g} %"
        run(f"{structure.kind} read", tol, lambda: _resistance(backend, structure))
        run(
            "compliance clamp",
            f"|I| <= limit x (1 + {CLAMP_TOLERANCE_REL:g}), flagged",
            lambda: _clamp(backend, structure),
        )
    finally:
        run("safe state at the end", "confirmed by queries", lambda: _safe_state(backend))
    return results


def _identity(backend: HardwareBackend) -> tuple[bool, str]:
    st = backend.station
    parts = [*st.smus.values(), st.matrix, st.prober, st.array]
    names = []
    for obj in parts:
        if obj is None:
            continue
        name = str(getattr(obj, "name", obj))
        if not isinstance(obj, Resyncable):
            raise TypeError(f"{name}: cannot query its identity (no resync)")
        obj.resync()  # verifies the identity query and restores a clean interface
        names.append(name)
    return True, ", ".join(names)


def _safe_state(backend: HardwareBackend) -> tuple[bool, str]:
    report = backend.station.safe_state()
    if report.confirmed:
        return True, f"{len(report.entries)} components confirmed"
    return False, "; ".join(e.line() for e in report.unconfirmed)


def _contact(backend: HardwareBackend, s: ReferenceStructure) -> tuple[bool | None, str]:
    """Touch down (confirmed by the prober's status query), then continuity: the test
    structure must conduct (R below ``OPEN_FACTOR`` x its nominal); a prober cannot tell
    needles at contact height from needles on the pads."""
    prober = backend.station.prober
    if prober is None:
        return None, "no prober in the station"
    assert backend.site is not None  # a station with a prober has a site
    backend.site.ensure()
    if not prober.contact_ok():
        return False, "no contact (the prober's continuity check failed)"
    g = float(backend.read_conductance([(0, int(s.cell[0]), int(s.cell[1]))])[0])
    if not g * s.r_ohm * OPEN_FACTOR > 1:
        return False, f"no contact: the test structure reads open (G = {g:.3g} S)"
    return True, "contact, the test structure conducts"


def _resistance(backend: HardwareBackend, s: ReferenceStructure) -> tuple[bool, str]:
    g = float(backend.read_conductance([(0, int(s.cell[0]), int(s.cell[1]))])[0])
    if not g > 0:
        return False, f"G = {g:g} S (open circuit)"
    r = 1.0 / g
    return abs(r - s.r_ohm) <= s.tolerance_rel * s.r_ohm, f"{r:.4g} ohm"


def _clamp(backend: HardwareBackend, s: ReferenceStructure) -> tuple[bool | None, str]:
    """The drive SMU on the structure's row, its column at the matrix ground port, a
    compliance below V_read / R: the reading must sit at the limit, flagged."""
    st = backend.station
    w = st.config.wiring
    if st.matrix is None or not w.smu_ports or not w.ground_ports:
        return None, "no SMU routed through a matrix with a ground port"
    smu_key = next(iter(w.smu_ports))
    smu: Any = st.smus[smu_key]
    v = backend.read_voltage_v
    limit = s.compliance_a if s.compliance_a is not None else 0.1 * v / s.r_ohm
    row, col = w.rows[int(s.cell[0])], w.cols[int(s.cell[1])]
    st.matrix.open_all()
    try:
        st.matrix.connect_many([(w.smu_ports[smu_key], row), (w.ground_ports[0], col)])
        smu.set_source_mode("voltage")
        smu.set_compliance(limit)
        smu.set_level(0.0)
        smu.output(True)
        smu.set_level(v)
        m = smu.measure()
    finally:
        smu.safe_state()
        st.matrix.open_all()
    ok = m.in_compliance and abs(m.current_a) <= limit * (1 + CLAMP_TOLERANCE_REL)
    flag = "flagged" if m.in_compliance else "NOT flagged"
    return ok, f"{abs(m.current_a):.4g} A at limit {limit:.4g} A ({flag})"


def format_table(results: list[CheckResult]) -> str:
    """The checklist as a fixed-width table: check, pass, value, tolerance."""
    rows = [("check", "pass", "value", "tolerance")] + [
        (r.name, {True: "PASS", False: "FAIL", None: "n/a"}[r.passed], r.value, r.tolerance)
        for r in results
    ]
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows
    )


__all__ = [
    "CLAMP_TOLERANCE_REL",
    "CheckResult",
    "check_bench",
    "format_table",
    "require_test_structure",
]
