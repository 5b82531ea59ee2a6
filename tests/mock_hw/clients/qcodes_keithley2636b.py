"""A QCoDeS lab script for the 2636B: a time trace, fast sweeps on both channels, a 2-D
sweep and a snapshot, through the unmodified driver; no error left in the queue."""

from __future__ import annotations

import numpy as np
from qcodes.dataset import LinSweep
from qcodes.instrument_drivers.Keithley import Keithley2636B
from qcodes.instrument_drivers.Keysight import KeysightB2201

from tests.mock_hw.clients.common import MATRIX, SMU_2636B, TIMEOUT_S, VISA_LIBRARY
from tests.mock_hw.clients.pymeasure_velox import touch_down


def main(visa_library: str = VISA_LIBRARY) -> None:
    smu = Keithley2636B("client_k2636b", SMU_2636B, visalib=visa_library, timeout=TIMEOUT_S)
    matrix = KeysightB2201("client_matrix_2636b", MATRIX, visalib=visa_library, timeout=TIMEOUT_S)
    try:
        touch_down(visa_library)  # the needles on the pads of the first die
        smu.reset()
        matrix.connect_paths([(1, 1), (2, 2), (12, 9)])  # smua -> row 0, smub -> row 1
        for ch in (smu.smua, smu.smub):
            ch.mode("voltage")
            ch.nplc(0.01)
            ch.limiti(1e-3)
            ch.output("on")
        a = smu.smua
        a.volt(0.1)
        a.timetrace_npts(5)
        a.timetrace_dt(1e-3)
        a.timetrace_mode("current")
        trace = np.asarray(a.timetrace())
        assert trace.shape == (5,) and np.all(trace > 0)
        for ch in (smu.smua, smu.smub):
            ch.fastsweep.prepare_setpoints = None  # (driver attribute, left alone)
            ch.setup_fastsweep(LinSweep(ch.volt, -0.2, 0.2, 11))
            data = np.asarray(ch.fastsweep())
            assert data.shape == (11,) and data[0] < 0 < data[-1]
        inner = LinSweep(smu.smua.volt, -0.1, 0.1, 3)
        outer = LinSweep(smu.smub.volt, 0.0, 0.1, 2)
        smu.smua.setup_fastsweep(inner, outer)
        grid = np.asarray(smu.smua.fastsweep())
        assert grid.shape == (2, 3)
        snap = smu.snapshot(update=True)
        assert snap["submodules"]["smua"]["parameters"]["limiti"]["value"] == 1e-3
        for ch in (smu.smua, smu.smub):
            ch.volt(0.0)
            ch.output("off")
        assert smu.ask("print(errorqueue.count)") in ("0", "0.00000e+00")
        assert matrix.get_error() == '+0,"No error"'
    finally:
        matrix.close()
        smu.close()


if __name__ == "__main__":
    main()
