"""A QCoDeS lab script for the B2201 matrix on GPIB: connection rule and sequence, bias
and ground modes, connect / disconnect and the parsed connection list, the manual's
``:ROUTe:`` forms sent raw, and an empty error queue at the end."""

from __future__ import annotations

from qcodes.instrument_drivers.Keysight import KeysightB2201

from tests.mock_hw.clients.common import MATRIX, TIMEOUT_S, VISA_LIBRARY


def main(visa_library: str = VISA_LIBRARY) -> None:
    matrix = KeysightB2201("client_b2201", MATRIX, visalib=visa_library, timeout=TIMEOUT_S)
    try:
        matrix.reset()
        matrix.connection_rule("single")
        matrix.connection_sequence("bbm")
        assert matrix.connection_rule() == "single"
        matrix.connect(1, 1)
        matrix.connect(2, 2)
        assert matrix.connections() == {(1, 1), (2, 2)}
        matrix.disconnect(2, 2)
        matrix.connect_paths([(3, 3)])
        assert matrix.connections() == {(1, 1), (3, 3)}
        matrix.gnd_mode(True)
        matrix.gnd_mode(False)
        matrix.bias_input_port(10)
        assert matrix.bias_input_port() == 10
        matrix.write(":ROUT:OPEN:CARD ALL")  # the manual's form, which the driver never sends
        assert matrix.connections() == set()
        matrix.disconnect_all()
        assert matrix.ask("*TST?") == "0"
        assert matrix.get_error() == '+0,"No error"'
    finally:
        matrix.close()


if __name__ == "__main__":
    main()
