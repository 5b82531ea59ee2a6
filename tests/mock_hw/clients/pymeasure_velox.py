"""A PyMeasure lab script for the Velox prober: identify, check the wafer map module,
step the map from its first die to its end (the 703 status, not an error), index and
XY moves, reading the chuck status and position, and the contact cycle around a
measurement."""

from __future__ import annotations

from pymeasure.instruments.formfactor import Velox

from tests.mock_hw.clients.common import PROBER, TIMEOUT_MS, VISA_LIBRARY


def main(visa_library: str = VISA_LIBRARY) -> None:
    prober = Velox(PROBER, visa_library=visa_library, timeout=TIMEOUT_MS)
    try:
        assert "Velox" in prober.id
        assert prober.version
        assert prober.wafermap.enabled
        prober.chuck.move_separation()
        prober.chuck.index = (1000.0, 1000.0)
        assert prober.chuck.index == [1000.0, 1000.0]
        first = prober.wafermap.step_first_die()
        assert first[:2] == [0, 0], first
        dies = [first[:2]]
        while True:
            step = prober.wafermap.step_next_die()
            if prober.wafermap.end_reached:
                break
            dies.append(step[:2])
        assert dies == [[0, 0], [1, 0]]  # the station's wafer, in map order
        prober.wafermap.step_to_die(0, 0)
        prober.chuck.move_contact()
        # PresetHeight, the 7th field of ReadChuckStatus: contact height
        assert prober.ask("ReadChuckStatus").split()[6] == "C"
        assert prober.ask("ReadProberStatus").split()[1] == "1"  # FlagsContact
        assert prober.error_code == 0
        prober.chuck.move_separation()
        prober.chuck.move_index(1, 0, pos_ref="relative")  # one die to the right
        prober.chuck.move(-1000, 0, pos_ref="relative", unit="microns")  # and back
        x, y, *_ = (float(v) for v in prober.ask("ReadChuckPosition Y H").split())
        assert (x, y) == (0.0, 0.0)
        prober.ask("MoveChuckSubsite 100 200 Y 100")  # a subsite of die (0, 0)
        x, y, *_ = (float(v) for v in prober.ask("ReadChuckPosition Y H").split())
        assert (x, y) == (100.0, 200.0)
    finally:
        prober.adapter.close()


def touch_down(visa_library: str = VISA_LIBRARY) -> None:
    """Step to the first die and make contact (what a measurement script does first)."""
    prober = Velox(PROBER, visa_library=visa_library, timeout=TIMEOUT_MS)
    try:
        prober.chuck.move_separation()
        prober.wafermap.step_first_die()
        prober.chuck.move_contact()
    finally:
        prober.adapter.close()


if __name__ == "__main__":
    main()
