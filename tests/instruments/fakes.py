"""Small fake instruments for the Station and guard tests: each implements one capability
protocol, records every call it receives (``calls``) and keeps the state a real
instrument would, so tests can assert on exactly what reached the "instrument"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memhil.instruments.capabilities import Measurement, SweepResult


class Recorder:
    def __init__(self, name: str):
        self.name = name
        self.calls: list[tuple] = []
        self.closed = 0
        self.fail_safe_state: BaseException | None = None

    def commands(self) -> list[tuple]:
        """Calls that change something (queries left out)."""
        queries = {
            "output_is_on",
            "measure",
            "in_compliance",
            "connections",
            "position",
            "in_contact",
            "contact_ok",
            "read_columns",
            "read_rows",
            "get_idn",
        }
        return [c for c in self.calls if c[0] not in queries]

    def close(self) -> None:
        self.closed += 1

    def _safe(self) -> None:
        self.calls.append(("safe_state",))
        if self.fail_safe_state is not None:
            raise self.fail_safe_state


class FakeSMU(Recorder):
    """One SMU channel: accepts anything (the guard must do the refusing)."""

    def __init__(self, name: str = "smua", idn: str | None = None):
        super().__init__(name)
        self.mode = "voltage"
        self.compliance = 1e-3
        self.level = 0.0
        self.on = False
        self.idn = idn

    def get_idn(self):
        return self.idn

    def set_source_mode(self, mode):
        self.calls.append(("set_source_mode", mode))
        self.mode = mode

    def set_compliance(self, limit):
        self.calls.append(("set_compliance", limit))
        self.compliance = limit

    def set_nplc(self, nplc):
        self.calls.append(("set_nplc", nplc))

    def set_level(self, value):
        self.calls.append(("set_level", value))
        self.level = value

    def output(self, on):
        self.calls.append(("output", on))
        self.on = bool(on)

    def output_is_on(self):
        self.calls.append(("output_is_on",))
        return self.on

    def measure(self):
        self.calls.append(("measure",))
        return Measurement(self.level, self.level * 1e-4, False)

    def sweep(self, start, stop, points):
        self.calls.append(("sweep", start, stop, points))
        src = np.linspace(start, stop, points)
        return SweepResult(src, src, src * 1e-4, np.zeros(points, bool), self.mode)

    def pulse(self, level, width_s, count=1, *, base=0.0, period_s=None):
        self.calls.append(("pulse", level, width_s, count, base, period_s))

    def in_compliance(self):
        self.calls.append(("in_compliance",))
        return False

    def safe_state(self):
        self.level = 0.0
        self.on = False
        self._safe()


class FakeMatrix(Recorder):
    def __init__(self, name: str = "matrix"):
        super().__init__(name)
        self.closed_relays: set[tuple[int, int]] = set()

    def connect(self, port, line):
        self.calls.append(("connect", port, line))
        self.closed_relays.add((port, line))

    def disconnect(self, port, line):
        self.calls.append(("disconnect", port, line))
        self.closed_relays.discard((port, line))

    def connect_many(self, pairs: Sequence[tuple[int, int]]):
        self.calls.append(("connect_many", list(pairs)))
        self.closed_relays.update(tuple(p) for p in pairs)

    def connections(self):
        self.calls.append(("connections",))
        return set(self.closed_relays)

    def open_all(self):
        self.calls.append(("open_all",))
        self.closed_relays.clear()

    def safe_state(self):
        self.closed_relays.clear()
        self._safe()


class FakeProber(Recorder):
    """A prober whose driver would happily move in contact."""

    def __init__(self, name: str = "prober"):
        super().__init__(name)
        self.contacted = False
        self.pos = ((0, 0), 0)

    def load_map(self, dies, subsites=1):
        self.calls.append(("load_map", list(dies), subsites))

    def step_to(self, die, subsite=0):
        self.calls.append(("step_to", die, subsite))
        self.pos = (tuple(die), subsite)

    def position(self):
        self.calls.append(("position",))
        return self.pos

    def contact(self):
        self.calls.append(("contact",))
        self.contacted = True

    def separate(self):
        self.calls.append(("separate",))
        self.contacted = False

    def in_contact(self):
        self.calls.append(("in_contact",))
        return self.contacted

    def contact_ok(self):
        self.calls.append(("contact_ok",))
        return self.contacted

    def safe_state(self):
        self.contacted = False
        self._safe()


class FakeArray(Recorder):
    def __init__(self, name: str = "array", rows: int = 8, cols: int = 8):
        super().__init__(name)
        self.rows = rows
        self.cols = cols
        self.lines_v = 0.0

    def read_columns(self, v_rows):
        self.calls.append(("read_columns", list(v_rows)))
        return np.zeros(self.cols)

    def read_rows(self, v_cols):
        self.calls.append(("read_rows", list(v_cols)))
        return np.zeros(self.rows)

    def pulse_cells(self, mask, amplitude_v, width_s, count=1, compliance_a=None):
        self.calls.append(
            ("pulse_cells", np.array(mask), amplitude_v, width_s, count, compliance_a)
        )
        self.lines_v = 0.0

    def safe_state(self):
        self.lines_v = 0.0
        self._safe()
