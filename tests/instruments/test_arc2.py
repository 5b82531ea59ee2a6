"""The ArC TWO adapter (``ArrayIO`` over ``pyarc2.Instrument``) on the mock lab's emulation
of the pyarc2 API, and a line-parallel station on it. The USB/FPGA link cannot be
emulated at the wire; the real pyarc2 is exercised as far as a machine without a board
allows (it imports and finds no board)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memhil.instruments.adapters.arc2 import COL_CHANNELS, ROW_CHANNELS, ArC2Array, create
from memhil.instruments.capabilities import ArrayIO
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.arc2 import ArC2Error, EmulatedArC2
from tests.backends import ARC2_BACKEND

CFG = {"rows": 4, "cols": 3, "seed": 5, "device": {"model": "neurosim"}}


@pytest.fixture
def board():
    chip = MockChip(CFG)
    emu = EmulatedArC2(chip, name="arc-test").start()
    arc = create(emu.url, "arc", rows=4, cols=3)
    yield chip, emu, arc
    emu.stop()


def _g(chip: MockChip) -> np.ndarray:
    return chip.sim.read_conductance()[0].double().numpy()


def test_a_read_is_one_line_parallel_operation_returning_v_at_g(board):
    chip, emu, arc = board
    assert isinstance(arc, ArrayIO)
    v = np.array([0.1, -0.2, 0.05, 0.15])
    i = arc.read_columns(v)
    assert emu.operations == ["config_channels", "read_slice_open"]
    # every line driven: no sneak paths; NeuroSim reads are linear at these voltages and
    # the emulation carries 1 % read noise per cell (default read path): 5 % covers it
    np.testing.assert_allclose(i, v @ _g(chip), rtol=0.05, atol=1e-9)
    u = np.array([0.1, 0.2, -0.1])
    np.testing.assert_allclose(arc.read_rows(u), _g(chip) @ u, rtol=0.05, atol=1e-9)


def test_pulses_go_one_masked_slice_per_column_and_move_only_the_selected_cells(board):
    chip, emu, arc = board
    g0 = _g(chip)
    mask = np.zeros((4, 3), dtype=bool)
    mask[[0, 2], 0] = True
    mask[1, 2] = True
    arc.pulse_cells(mask, 2.0, 100e-9, count=2)
    assert emu.operations.count("pulse_slice_masked") == 4  # 2 columns x 2 pulses
    assert emu.operations[-1] == "execute"
    g1 = _g(chip)
    assert np.all(g1[mask] > g0[mask])
    np.testing.assert_allclose(g1[~mask], g0[~mask])  # half-selected at 1 V: below threshold


def test_a_pulse_below_40_ns_is_refused_before_anything_is_queued(board):
    _, emu, arc = board
    with pytest.raises(ValueError, match="4e-08"):
        arc.pulse_cells(np.ones((4, 3), dtype=bool), 2.0, 10e-9)
    assert emu.operations == []
    arc.pulse_cells(np.eye(4, 3, dtype=bool), 2.0, float(np.float32(40e-9)))  # float32 floor
    assert emu.operations[-1] == "execute"
    with pytest.raises(ArC2Error, match="40 ns"):
        emu.pulse_slice_masked(16, 2.0, 10, [0])


def test_the_safe_state_grounds_every_channel_and_reads_them_back(board):
    _, emu, arc = board
    emu.config_channels([(0, 0.3)], None)
    arc.safe_state()
    assert emu.operations[-1] == "vread_channels" and emu.levels == {}


def test_the_default_mapping_is_the_standard_32_by_32_layout():
    assert sorted(ROW_CHANNELS + COL_CHANNELS) == list(range(64))
    assert ROW_CHANNELS[:16] == tuple(range(16)) and COL_CHANNELS[16:] == tuple(range(48, 64))
    with pytest.raises(ValueError, match="overlap"):
        ArC2Array(object(), "arc", 2, 2, row_channels=(0, 1), col_channels=(1, 2))


def test_the_real_pyarc2_imports_and_finds_no_board_here():
    import pyarc2

    assert pyarc2.find_ids() == []
    with pytest.raises(ConnectionError, match="not found"):
        create("arc2://0", "arc", rows=4, cols=3, firmware="fw.bin")


def test_an_arc2_station_reads_line_parallel():
    """The ArC TWO station of the conformance suite (tests/backends.py) reads one input
    vector per line-parallel operation, not cell by cell."""
    backend = ARC2_BACKEND.make()
    try:
        assert backend.strategy == "parallel" and backend.capabilities.read_strategy == "parallel"
        sent = backend.transactions
        backend.mvm(torch.full((3, 8), 0.1))
        assert backend.transactions - sent == 3
    finally:
        backend.close()
