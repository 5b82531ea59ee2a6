"""memhil's array-board driver over the ``memhilboard://`` pyserial URL handler to the
board emulator: line-parallel reads of a 16 x 16 array with sneak paths on, V/2 pulses,
the virtual clock, serial-line behaviour (partial reads, echo, baud rate), faults, and
the same board through pyvisa-py as ``ASRLmemhilboard://<id>::INSTR``."""

from __future__ import annotations

import numpy as np
import pytest
import serial
import torch

from memhil.instruments.array_board import ArrayBoard, ArrayBoardError
from memhil.instruments.capabilities import ArrayIO
from memhil.mock_hw import protocol_memhilboard
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.array_board import ArrayBoardEmulator

N = 16
NOISE = 0.002


def make_chip(noise: float = NOISE, seed: int = 5) -> MockChip:
    chip = MockChip(
        {
            "rows": N,
            "cols": N,
            "device": {"model": "hp", "dx_std": 0.0},
            "seed": seed,
            "dtype": "float64",
            "read": {"read_noise_rel": noise},
        },
        sneak_paths=True,
    )
    amp = 3.0 * torch.rand(
        (1, N, N), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    chip.sim.pulse(None, amp, 0.2, 1)  # random states
    return chip


@pytest.fixture
def rig():
    opened: list = []

    def make(board_id: str = "b16", url_options: str = "", chip: MockChip | None = None, **emu_kw):
        chip = chip or make_chip()
        emu = ArrayBoardEmulator(chip, board_id, **emu_kw).start()
        opened.append(emu)
        board = ArrayBoard(emu.url + url_options, timeout=1.0)
        opened.append(board)
        return chip, emu, board

    yield make
    for obj in reversed(opened):
        if isinstance(obj, ArrayBoard):
            obj.close()
        else:
            obj.stop()
    assert not [b for b in protocol_memhilboard.registered() if b.startswith("b16")]


def test_serial_url_reaches_the_registered_board(rig):
    _chip, _emu, board = rig()
    assert isinstance(board, ArrayIO)
    assert board.id == "MEMHIL,ARRAYBOARD,b16,1.0"
    assert (board.rows, board.cols) == (N, N)
    assert board.v_max == 5.0
    with pytest.raises(serial.SerialException, match="no memhil board"):
        serial.serial_for_url("memhilboard://nobody", timeout=0.1)


def test_row_by_row_read_in_16_transactions_matches_v_at_g(rig):
    chip, emu, board = rig()
    g = chip.sim.true_conductance()[0].numpy()
    v = 0.1 * np.eye(N)  # one row pattern per transaction
    before = emu.transactions
    i = board.mvm(v)
    assert emu.transactions - before == N
    expected = v @ g
    # sneak paths do not enter: every line is driven; the rest is read noise
    np.testing.assert_allclose(i, expected, rtol=6 * NOISE)
    g_measured = i / 0.1
    assert np.sqrt(np.mean(((g_measured - g) / g) ** 2)) < 2 * NOISE


def test_full_mvm_in_one_transaction_and_transpose(rig):
    chip, emu, board = rig()
    g = chip.sim.true_conductance()[0].numpy()
    rng = np.random.default_rng(0)
    v = rng.uniform(-0.2, 0.2, N)
    before = emu.transactions
    i = board.read_columns(v)
    assert emu.transactions - before == 1
    # a sum of N noisy terms of both signs: compare with the scale of |V| @ G
    np.testing.assert_allclose(i, v @ g, atol=6 * NOISE * float((np.abs(v) @ g).max()))
    i_t = board.read_rows(v)
    np.testing.assert_allclose(i_t, g @ v, atol=6 * NOISE * float((g @ np.abs(v)).max()))


def test_reads_charge_the_integration_time_to_the_virtual_clock(rig):
    chip, emu, board = rig(integration_s=2e-3)
    assert board.integration_time == pytest.approx(2e-3)
    t0 = chip.clock.now()
    board.mvm(0.1 * np.eye(4, N))
    assert chip.clock.now() - t0 == pytest.approx(4 * 2e-3)
    board.integration_time = 1e-4
    assert emu.integration_s == pytest.approx(1e-4)
    with pytest.raises(ArrayBoardError) as e:
        board.integration_time = 5.0
    assert e.value.code == 3


def test_v_half_pulses_change_the_selected_cells_as_the_model_says(rig):
    chip, _emu, board = rig(chip=make_chip(noise=0.0))
    reference = make_chip(noise=0.0).sim  # same devices, stepped directly
    g0 = chip.sim.true_conductance()[0].numpy()
    mask = np.zeros((N, N), bool)
    mask[3, [2, 9]] = True  # two groups: rows {3} x cols {2, 9}
    mask[[7, 11], 5] = True  #             rows {7, 11} x col {5}
    amp, width = 2.0, 0.02
    t0 = chip.clock.now()
    assert board.pulse_cells(mask, amp, width, count=2) == 2
    assert chip.clock.now() - t0 == pytest.approx(2 * 2 * width)
    g1 = chip.sim.true_conductance()[0].numpy()
    for rows, cols in (([3], [2, 9]), ([7, 11], [5])):
        v = torch.full((1, N, N), 0.0, dtype=torch.float64)
        v[0, rows, :] = amp / 2
        v[0, :, cols] = amp / 2
        v[0, np.ix_(rows, cols)[0], np.ix_(rows, cols)[1]] = amp
        reference.pulse(None, v, width, 2)
    np.testing.assert_allclose(g1, reference.true_conductance()[0].numpy(), rtol=1e-9)
    dg = g1 - g0
    assert (dg[mask] > 0).all()
    # the change is visible through the board's own reads as well
    g_read = board.mvm(0.1 * np.eye(N)) / 0.1
    np.testing.assert_allclose(g_read[mask], g1[mask], rtol=1e-9)
    board.safe_state()


def test_board_errors(rig):
    _chip, _emu, board = rig()
    with pytest.raises(ArrayBoardError) as e:
        board.read_columns(np.full(N, 6.0))  # beyond VMAX
    assert e.value.code == 3
    with pytest.raises(ValueError):
        board.read_columns(np.zeros(N - 1))  # caught by the driver, nothing sent
    with pytest.raises(ArrayBoardError) as e:  # a raw non-product mask
        board.ask("PULSE " + format((1 << 0) | (1 << (N + 1)), "X") + ",1,1e-3,1")
    assert e.value.code == 4
    with pytest.raises(ArrayBoardError) as e:
        board.ask("FLY")
    assert e.value.code == 1


def test_partial_reads_echo_and_baud_rate(rig):
    chip, emu, board = rig(url_options="?chunk=5&gap=0.0002")  # replies in 5-byte pieces
    g = chip.sim.true_conductance()[0].numpy()
    np.testing.assert_allclose(board.read_columns(0.1 * np.eye(N)[4]), 0.1 * g[4], rtol=6 * NOISE)
    port = serial.serial_for_url(emu.url + "?chunk=3&gap=0.01", timeout=1.0, baudrate=115200)
    try:
        port.write(b"SIZE?\r\n")
        assert 0 < port.in_waiting <= 3  # only the first piece has arrived
        assert port.read(2) == b"16"
        assert port.read_until(b"\n") == b",16\n"
        port.timeout = 0.05
        assert port.read(10) == b""  # nothing more: read times out empty
    finally:
        port.close()
    echo = serial.serial_for_url(emu.url + "?echo=1", timeout=0.5, baudrate=115200)
    try:
        echo.write(b"SIZE?\n")
        assert echo.read_until(b"\n") == b"SIZE?\n"
        assert echo.read_until(b"\n") == b"16,16\n"
        echo.write(b"SIZE?\nSIZE?\n")  # one echoed chunk holding two lines: one at a time
        assert [echo.read_until(b"\n") for _ in range(3)] == [b"SIZE?\n", b"SIZE?\n", b"16,16\n"]
        assert echo.read_until(b"\n", size=3) == b"16,"  # at most size bytes, rest kept
        assert echo.read_until(b"\n") == b"16\n"
    finally:
        echo.close()
    slow = serial.serial_for_url(emu.url, timeout=0.05, baudrate=9600)
    try:
        slow.write(b"SIZE?\n")
        assert slow.read(6) == b""  # framing errors: the board never answers
    finally:
        slow.close()


def test_injected_faults(rig):
    _chip, emu, board = rig()
    board.adapter.connection.timeout = 0.05
    emu.faults.timeout_next()
    with pytest.raises(TimeoutError):
        board.read_columns(np.zeros(N))
    assert board.id.startswith("MEMHIL")  # the next command is answered
    emu.faults.garble_next()
    with pytest.raises((ValueError, ArrayBoardError, UnicodeDecodeError)):
        board.read_columns(np.zeros(N))
    emu.faults.drop_next()
    with pytest.raises(serial.SerialException, match="disconnected"):
        board.read_columns(np.zeros(N))
    with pytest.raises(serial.SerialException):
        _ = board.id


def test_board_through_pyvisa_asrl_resource(rig):
    pyvisa = pytest.importorskip("pyvisa")
    chip, emu, _board = rig(board_id="b16visa")
    g = chip.sim.true_conductance()[0].numpy()
    visa_board = ArrayBoard(f"ASRL{emu.url}::INSTR", visa_library="@py")
    try:
        assert (visa_board.rows, visa_board.cols) == (N, N)
        np.testing.assert_allclose(
            visa_board.read_columns(0.1 * np.eye(N)[0]), 0.1 * g[0], rtol=6 * NOISE
        )
    finally:
        visa_board.close()
    rm = pyvisa.ResourceManager("@py")
    try:
        res = rm.open_resource(
            f"ASRL{emu.url}::INSTR",
            baud_rate=115200,
            read_termination="\n",
            write_termination="\n",
            timeout=1000,
        )
        assert res.query("SIZE?") == "16,16"
        res.close()
    finally:
        rm.close()


def test_pulse_compliance_limits_the_set(rig):
    """``COMP`` on the emulated board: a VTEAM cell at OFF (R_off = 1 kOhm, no D2D or C2C)
    pulsed at 0.3 V with a 0.2 mA compliance sees at most I_c / G = 0.2 V = v_on, so it
    does not SET; the limit holds for later pulses; at 10 mA it SETs, and the board's
    result equals the simulator's own compliance model for the same pulses."""
    device = {
        "model": "vteam",
        "v_on_dtod": 0.0,
        "r_on_dtod": 0.0,
        "r_off_dtod": 0.0,
        "k_on_dtod": 0.0,
        "dx_std": 0.0,
    }
    chip = MockChip({"rows": 2, "cols": 2, "device": device, "seed": 1, "dtype": "float64"})
    _chip, emu, board = rig(board_id="b16comp", chip=chip)
    everything = np.ones((2, 2), bool)
    g0 = chip.sim.true_conductance()[0].numpy()
    assert emu.compliance_a == 0.1  # power-on: the board maximum
    board.pulse_cells(everything, 0.3, 1e-6, 1, compliance_a=2e-4)
    assert board.compliance == pytest.approx(2e-4)
    board.pulse_cells(everything, 0.3, 1e-6, 2)  # compliance kept
    np.testing.assert_allclose(chip.sim.true_conductance()[0].numpy(), g0, rtol=1e-12)
    board.pulse_cells(everything, 0.3, 1e-6, 1, compliance_a=1e-2)
    g1 = chip.sim.true_conductance()[0].numpy()
    assert (g1 > 5 * g0).all()  # SET
    # the same pulses on the simulator with its per-cell compliance
    from memhil.backends.sim import SimBackend

    ref = SimBackend(
        {
            "rows": 2,
            "cols": 2,
            "device": device,
            "dtype": "float64",
            "limits": {"compliance_max_a": 0.1},
        }
    )
    ref.pulse(None, 0.3, 1e-6, 3, compliance_a=2e-4)
    ref.pulse(None, 0.3, 1e-6, 1, compliance_a=1e-2)
    np.testing.assert_allclose(g1, ref.true_conductance()[0].numpy(), rtol=1e-9)
    with pytest.raises(ArrayBoardError) as e:
        board.compliance = 1.0  # beyond the board's 0.1 A
    assert e.value.code == 3 and emu.compliance_a == pytest.approx(1e-2)
