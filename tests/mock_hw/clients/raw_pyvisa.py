"""Raw pyvisa, as a lab script without a driver: TSP to the 2636B over VXI-11 and its
raw socket, SCPI to the 2450 over USB and to the B2201 over GPIB, reads without a
termination character (the bus marks the end), and every error queue empty at the end."""

from __future__ import annotations

import pyvisa

from tests.mock_hw.clients.common import MATRIX, SMU_2450, SMU_2636B, TIMEOUT_MS, VISA_LIBRARY


def main(visa_library: str = VISA_LIBRARY) -> None:
    rm = pyvisa.ResourceManager(visa_library)
    try:
        listed = {str(pyvisa.rname.parse_resource_name(r)) for r in rm.list_resources()}
        assert {str(pyvisa.rname.parse_resource_name(r)) for r in (SMU_2450, MATRIX)} <= listed
        k2600 = rm.open_resource(SMU_2636B, timeout=TIMEOUT_MS)
        assert "2636B" in k2600.query("*IDN?")
        k2600.write("reset() errorqueue.clear()")
        k2600.write("smua.source.func = smua.OUTPUT_DCVOLTS smua.source.levelv = 0")
        k2600.write("smua.source.limiti = 1e-4 smua.measure.nplc = 0.01")
        v = float(k2600.query("print(smua.source.levelv)"))
        assert v == 0.0
        k2600.write("smua.source.limiti = 0")  # below the 2636B minimum: refused and queued
        assert float(k2600.query("print(errorqueue.count)")) == 1
        k2600.write("errorqueue.clear()")
        sock = rm.open_resource(
            "TCPIP0::10.0.0.5::5025::SOCKET", read_termination="\n", timeout=TIMEOUT_MS
        )
        assert sock.query("print(smua.source.limiti)") == "1.00000e-04"  # the same SMU
        k2450 = rm.open_resource(SMU_2450, timeout=TIMEOUT_MS)
        assert "2450" in k2450.query("*IDN?")
        k2450.write("*RST")
        k2450.write(":SOUR:FUNC VOLT;:SOUR:VOLT:ILIM 1e-4;:SENS:FUNC 'CURR'")
        assert k2450.query(":SOUR:FUNC?").strip() == "VOLT"
        matrix = rm.open_resource(MATRIX, timeout=TIMEOUT_MS)
        matrix.write("*RST")
        matrix.write(":ROUT:CLOS (@10101)")
        assert matrix.query(":ROUT:CLOS? (@10101)").strip() == "1"
        matrix.write(":ROUT:OPEN:CARD ALL")
        assert float(k2600.query("print(errorqueue.count)")) == 0
        assert k2450.query(":SYST:ERR?").startswith("0,")
        assert matrix.query(":SYST:ERR?").startswith("+0,")
    finally:
        rm.close()


if __name__ == "__main__":
    main()
