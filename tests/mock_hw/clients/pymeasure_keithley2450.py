"""A PyMeasure lab script for the 2450 over USB: identify, reset, source V / measure I
through a closed matrix route, compliance, a ramp, the buffer (configure, trigger a
simple loop, statistics, data), output-off mode, filter, shutdown; no error queued."""

from __future__ import annotations

import numpy as np
from pymeasure.instruments.keithley import Keithley2450
from qcodes.instrument_drivers.Keysight import KeysightB2201

from tests.mock_hw.clients.common import MATRIX, SMU_2450, TIMEOUT_MS, TIMEOUT_S, VISA_LIBRARY
from tests.mock_hw.clients.pymeasure_velox import touch_down


def main(visa_library: str = VISA_LIBRARY) -> None:
    smu = Keithley2450(SMU_2450, visa_library=visa_library, timeout=TIMEOUT_MS)
    matrix = KeysightB2201("client_matrix_k2450", MATRIX, visalib=visa_library, timeout=TIMEOUT_S)
    try:
        touch_down(visa_library)
        assert "2450" in smu.id
        smu.reset()
        matrix.connect_paths([(3, 2), (12, 10)])  # 2450 HI -> row 1, ground -> col 1
        smu.apply_voltage(compliance_current=1e-3)
        smu.measure_current(nplc=0.01)
        smu.current_filter_type = "REP"
        smu.current_filter_count = 5
        smu.current_filter_state = "OFF"
        smu.voltage_output_off_state = "NORM"
        smu.source_voltage = 0.1
        smu.enable_source()
        assert smu.source_enabled
        i_read = smu.current
        assert 1e-6 < i_read < 1e-3, i_read
        smu.compliance_current = 1e-6
        # clamped at the limit, read within the 1 uA range accuracy (0.025 % + 300 pA)
        assert abs(smu.current - 1e-6) <= 0.025e-2 * 1e-6 + 300e-12
        smu.compliance_current = 1e-3
        smu.ramp_to_voltage(0.15, steps=4, pause=0.01)
        smu.config_buffer(points=5)
        smu.write(':TRIG:LOAD "SimpleLoop", 5')
        smu.start_buffer()
        data = smu.buffer_data
        assert data.shape == (5,) and np.all(data > 0)
        assert smu.means == np.mean(data) or abs(smu.means - np.mean(data)) < 1e-9
        smu.write(":SENS:CURR:RANG 10e-6")  # below the reading: the overflow value
        assert smu.current == 9.9e37
        smu.write(":SENS:CURR:RANG:AUTO 1")
        smu.shutdown()  # ramps to 0 V, stops the buffer, output off
        assert not smu.source_enabled
        assert smu.check_errors() == []
        assert matrix.get_error() == '+0,"No error"'
    finally:
        matrix.close()
        smu.adapter.close()


if __name__ == "__main__":
    main()
