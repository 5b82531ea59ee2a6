"""Wire-level tests of memhil's array-board driver with PyMeasure's ``expected_protocol``:
every byte the driver sends and every reply it parses, without a board or an emulator.
The protocol itself is documented in ``memhil.instruments.array_board``."""

from __future__ import annotations

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from memhil.instruments.array_board import ArrayBoard, ArrayBoardError

INIT = [("SIZE?", "2,3")]  # the driver learns the array size when it connects


def test_init_reads_the_size():
    with expected_protocol(ArrayBoard, INIT) as board:
        assert (board.rows, board.cols) == (2, 3)


def test_identity_and_limits():
    with expected_protocol(
        ArrayBoard, INIT + [("*IDN?", "MEMHIL,ARRAYBOARD,board0,1.0"), ("VMAX?", "5")]
    ) as board:
        assert board.id == "MEMHIL,ARRAYBOARD,board0,1.0"
        assert board.v_max == 5.0


def test_read_columns_sends_one_voltage_per_row():
    with expected_protocol(
        ArrayBoard, INIT + [("READC 0.1,-0.05", "1.000000000e-06,-2.500000000e-07,0.000000000e+00")]
    ) as board:
        np.testing.assert_array_equal(board.read_columns([0.1, -0.05]), [1e-6, -2.5e-7, 0.0])


def test_read_rows_sends_one_voltage_per_column():
    with expected_protocol(ArrayBoard, INIT + [("READR 0.2,0,0.2", "3e-06,4e-06")]) as board:
        np.testing.assert_array_equal(board.read_rows([0.2, 0.0, 0.2]), [3e-6, 4e-6])


def test_mvm_is_one_readc_per_input_vector():
    with expected_protocol(
        ArrayBoard,
        INIT + [("READC 0.1,0", "1e-06,2e-06,3e-06"), ("READC 0,0.1", "4e-06,5e-06,6e-06")],
    ) as board:
        np.testing.assert_array_equal(
            board.mvm(0.1 * np.eye(2)), [[1e-6, 2e-6, 3e-6], [4e-6, 5e-6, 6e-6]]
        )


def test_wrong_vector_length_is_refused_before_anything_is_sent():
    with expected_protocol(ArrayBoard, INIT) as board:
        with pytest.raises(ValueError):
            board.read_columns([0.1, 0.1, 0.1])
        with pytest.raises(ValueError):
            board.read_rows([0.1])


def test_pulse_of_a_product_mask_is_one_command():
    # 2 x 3 array: bit k = i*3 + j; cells (0, 1), (0, 2), (1, 1), (1, 2) -> bits 1, 2, 4, 5
    mask = np.array([[0, 1, 1], [0, 1, 1]], bool)
    with expected_protocol(ArrayBoard, INIT + [("PULSE 36,1.5,1e-06,3", "OK")]) as board:
        assert board.pulse_cells(mask, 1.5, 1e-6, 3) == 1


def test_pulse_of_a_non_product_mask_is_split_by_row_pattern():
    # (0, 0) and (1, 2): two V/2 operations, bits 0 and 5
    mask = np.array([[1, 0, 0], [0, 0, 1]], bool)
    with expected_protocol(
        ArrayBoard, INIT + [("PULSE 01,-2,5e-05,1", "OK"), ("PULSE 20,-2,5e-05,1", "OK")]
    ) as board:
        assert board.pulse_cells(mask, -2.0, 50e-6) == 2


def test_pulse_of_an_empty_mask_sends_nothing():
    with expected_protocol(ArrayBoard, INIT) as board:
        assert board.pulse_cells(np.zeros((2, 3), bool), 1.0, 1e-6) == 0
        with pytest.raises(ValueError):
            board.pulse_cells(np.ones((3, 2), bool), 1.0, 1e-6)
        with pytest.raises(ValueError):
            board.pulse_cells(np.ones((2, 3), bool), 1.0, 1e-6, count=0)


def test_mask_is_zero_padded_hex_of_all_cells():
    # a 16 x 16 board: 256 bits -> 64 hex digits; cell (15, 15) is the top bit
    mask = np.zeros((16, 16), bool)
    mask[15, 15] = True
    with expected_protocol(
        ArrayBoard, [("SIZE?", "16,16"), ("PULSE 8" + "0" * 63 + ",1,1e-07,1", "OK")]
    ) as board:
        board.pulse_cells(mask, 1.0, 100e-9)


def test_safe_state_zeroes_every_line():
    with expected_protocol(ArrayBoard, INIT + [("ZERO", "OK")]) as board:
        board.safe_state()


def test_integration_time_get_and_set():
    with expected_protocol(ArrayBoard, INIT + [("TINT?", "0.001"), ("TINT 0.002", "OK")]) as board:
        assert board.integration_time == 0.001
        board.integration_time = 2e-3


def test_board_errors_raise_with_their_code():
    pairs = INIT + [
        ("READC 9,0", "ERR 3 voltage beyond +-5 V"),
        ("TINT 5", "ERR 3 integration time not in 1e-6..1 s"),
        ("ZERO", "BUSY"),
    ]
    with expected_protocol(ArrayBoard, pairs) as board:
        with pytest.raises(ArrayBoardError) as e:
            board.read_columns([9.0, 0.0])
        assert (e.value.code, e.value.text) == (3, "voltage beyond +-5 V")
        with pytest.raises(ArrayBoardError):
            board.integration_time = 5
        with pytest.raises(ArrayBoardError, match="expected OK"):
            board.safe_state()


def test_wrong_number_of_currents_is_an_error():
    with expected_protocol(ArrayBoard, INIT + [("READC 0,0", "1e-06,2e-06")]) as board:
        with pytest.raises(ArrayBoardError, match="expected 3 currents"):
            board.read_columns([0.0, 0.0])


def test_compliance_is_sent_before_the_pulses():
    mask = np.array([[0, 1, 1], [0, 1, 1]], bool)
    with expected_protocol(
        ArrayBoard, INIT + [("COMP 0.0001", "OK"), ("PULSE 36,1.5,1e-06,3", "OK")]
    ) as board:
        assert board.pulse_cells(mask, 1.5, 1e-6, 3, compliance_a=1e-4) == 1


def test_compliance_property_and_range():
    with expected_protocol(
        ArrayBoard,
        INIT
        + [
            ("COMP 2e-05", "OK"),
            ("COMP?", "2e-05"),
            ("COMP 5", "ERR 3 compliance not in 1e-9..0.1 A"),
        ],
    ) as board:
        board.compliance = 2e-5
        assert board.compliance == 2e-5
        with pytest.raises(ArrayBoardError) as e:
            board.compliance = 5
        assert e.value.code == 3
        # the driver refuses an out-of-range pulse compliance before sending anything
        with pytest.raises(ValueError, match="compliance_a"):
            board.pulse_cells(np.ones((2, 3), bool), 1.0, 1e-6, 1, compliance_a=1.0)
