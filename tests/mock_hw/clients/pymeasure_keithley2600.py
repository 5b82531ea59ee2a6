"""A PyMeasure lab script for the 2636B: identify, reset, source V / measure I through a
closed matrix route, compliance, source ranges, ramps, a reading buffer (raw TSP, which
PyMeasure's driver has no API for) and the shutdown sequence; no error left in the queue."""

from __future__ import annotations

from pymeasure.instruments.keithley import Keithley2600
from qcodes.instrument_drivers.Keysight import KeysightB2201

from tests.mock_hw.clients.common import MATRIX, SMU_2636B, TIMEOUT_MS, TIMEOUT_S, VISA_LIBRARY
from tests.mock_hw.clients.pymeasure_velox import touch_down


def main(visa_library: str = VISA_LIBRARY) -> None:
    smu = Keithley2600(SMU_2636B, visa_library=visa_library, timeout=TIMEOUT_MS)
    matrix = KeysightB2201("client_matrix_k2600", MATRIX, visalib=visa_library, timeout=TIMEOUT_S)
    try:
        touch_down(visa_library)  # the needles on the pads of the first die
        assert "2636B" in smu.id
        smu.reset()
        matrix.connect_paths([(1, 1), (12, 9)])  # smua HI -> row 0, ground -> col 0
        ch = smu.ChA
        ch.apply_voltage(compliance_current=1e-3)
        ch.measure_current(nplc=0.01)
        ch.source_voltage = 0.1
        ch.source_output = "ON"
        i_read = ch.current
        assert 1e-6 < i_read < 1e-3, i_read  # a VTEAM cell at 0.1 V, not in compliance
        ch.compliance_current = 1e-6  # far below: the reading clamps at the limit
        # clamped at the limit, read within the 1 uA range accuracy (0.025 % + 400 pA)
        assert abs(abs(ch.current) - 1e-6) <= 0.025e-2 * 1e-6 + 400e-12
        ch.compliance_current = 1e-3
        ch.source_voltage_range = 2
        assert ch.ask("source.rangev") == 2.0
        ch.ramp_to_voltage(0.2, steps=5, pause=0.01)
        assert ch.source_voltage == 0.2
        smu.write("smua.nvbuffer1.clear() smua.measure.count = 5")
        smu.write("smua.measure.i(smua.nvbuffer1)")
        readings = smu.values("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
        assert len(readings) == 5 and all(r > 0 for r in readings)
        smu.write("smua.measure.count = 1")
        # what ch.shutdown() does, with a shorter ramp: PyMeasure's own waits 30 x 0.1 s
        ch.ramp_to_voltage(0.0, steps=3, pause=0.01)
        ch.source_output = "OFF"
        assert ch.source_output == "OFF"
        assert smu.check_errors() == []
        assert matrix.get_error() == '+0,"No error"'
    finally:
        matrix.close()
        smu.adapter.close()


if __name__ == "__main__":
    main()
