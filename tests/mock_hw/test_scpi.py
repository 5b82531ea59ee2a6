"""The IEEE 488.2 common commands and status reporting shared by the emulators."""

from __future__ import annotations

import pytest

from memhil.mock_hw.scpi import (
    ESR_COMMAND_ERROR,
    ESR_DEVICE_ERROR,
    ESR_EXECUTION_ERROR,
    STB_ERROR_AVAILABLE,
    CommonCommands,
    ScpiError,
    ScpiStatus,
)


def test_errors_set_their_class_bit_and_star_cls_clears_queue_and_register():
    status = ScpiStatus()
    resets = []
    common = CommonCommands("ACME,X1,0,1.0", reset=lambda: resets.append(1), status=status)
    status.push(-113, "Undefined header")
    status.push(-222, "Data out of range")
    status.push(-1110, "instrument-specific")
    assert int(common("*STB?")) & STB_ERROR_AVAILABLE
    assert int(common("*esr?")) == ESR_COMMAND_ERROR | ESR_EXECUTION_ERROR | ESR_DEVICE_ERROR
    assert common("*ESR?") == "0"  # read and cleared
    assert status.pop() == (-113, "Undefined header")
    common("*CLS")
    assert status.errors == [] and status.esr == 0
    assert common("*IDN?") == "ACME,X1,0,1.0" and common("*OPC?") == "1"
    assert common("*RST") is None and resets == [1]


def test_an_identify_only_dialect_refuses_the_other_common_commands():
    common = CommonCommands(lambda: "Probe,1")
    assert common("*IDN?") == "Probe,1"
    with pytest.raises(ScpiError) as info:
        common("*RST")
    assert info.value.code == -113 and info.value.esr_bit == ESR_COMMAND_ERROR


def test_the_error_queue_keeps_the_newest_errors():
    status = ScpiStatus(queue_size=2)
    for code in (-100, -101, -102):
        status.push(code, "x")
    assert [c for c, _ in status.errors] == [-101, -102]
