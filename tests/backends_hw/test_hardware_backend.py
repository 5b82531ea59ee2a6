"""HardwareBackend specifics (the contract itself is tests/conformance): strategy choice,
agreement with the simulator at the same device parameters, config selection, and
failures that end in the safe state."""

from __future__ import annotations

import pytest
import torch

from memhil.backends.hardware import FaultLatchedError, HardwareBackend, HardwareError
from memhil.backends.sim import SimBackend
from memhil.calibration.pulse_response import measure_pulse_response
from memhil.core.errors import ConfigError
from memhil.runs.backend_config import open_backend
from tests.backends import _mock_station


@pytest.fixture
def board():
    b = open_backend({"mock_lab": _mock_station("parallel", 8, 8), "strategy": "parallel"})
    yield b
    b.close()


@pytest.fixture
def matrix():
    b = open_backend({"mock_lab": _mock_station("cell", 4, 6), "strategy": "cell"})
    yield b
    b.close()


def test_strategy_is_chosen_and_reported(board, matrix):
    assert isinstance(board, HardwareBackend)
    assert board.capabilities.read_strategy == "parallel"
    assert matrix.capabilities.read_strategy == "cell"
    assert board.capabilities.virtual_clock  # the mock lab's clock
    assert board.capabilities.conductance_range_s == pytest.approx((0.476e-6, 10e-6))
    assert board.capabilities.set_pulse == pytest.approx((2.0, 80e-9))


def test_board_reads_the_full_array_in_rows_transactions(board):
    t0 = board.transactions
    g = board.read_conductance()
    assert board.transactions - t0 == board.shape[1]
    true = board.lab.chip.sim.true_conductance()
    # 1 % read noise: every cell within 5 sigma
    assert ((g - true).abs() <= 0.05 * true).all()


def test_mean_pulse_response_matches_the_simulator_at_the_same_parameters(board):
    # NeuroSim LTP curve, 64 cells each: the hardware path (board pulses, board reads, mock
    # chip) and the simulator (another seed) measure the same mean curve: at every pulse
    # index the means differ by less than 4 standard errors of their difference (from the
    # measured cell-to-cell spread) plus 1 % for the read gain.
    cells_hw = torch.ones(board.shape, dtype=torch.bool)
    hw = measure_pulse_response(board, cells_hw, 2.0, 80e-9, 15, prepare=(-2.0, 80e-9, 40))
    sim = SimBackend(
        {"rows": 8, "cols": 8, "seed": 99, "device": "neurosim", "read": {"read_noise_rel": 0.01}}
    )
    ref = measure_pulse_response(
        sim, torch.ones(sim.shape, dtype=torch.bool), 2.0, 80e-9, 15, prepare=(-2.0, 80e-9, 40)
    )
    se = torch.sqrt(hw.spread_s**2 / 64 + ref.spread_s**2 / 64)
    assert ((hw.g_curve_s - ref.g_curve_s).abs() <= 4 * se + 0.01 * ref.g_curve_s).all()
    assert hw.g_curve_s[-1] > 10 * hw.g_curve_s[0]  # the curve was really traversed


def test_cell_strategy_reads_without_sneak_paths(matrix):
    # the mock chip has sneak paths on; grounding every unselected line removes them
    g = matrix.read_conductance()
    true = matrix.lab.chip.sim.true_conductance()
    assert ((g - true).abs() <= 0.05 * true).all()


def test_config_selects_the_backend(tmp_path):
    sim = open_backend("sim")
    assert isinstance(sim, SimBackend)
    assert isinstance(open_backend({"backend": {"sim": {"rows": 4, "cols": 4}}}), SimBackend)
    exp = tmp_path / "experiment.yaml"
    exp.write_text("backend: {sim: {rows: 2, cols: 3}}\n")
    assert open_backend(exp).shape == (1, 2, 3)
    with pytest.raises(ConfigError, match="exactly one"):
        open_backend({"sim": {}, "station": "x.yaml"})
    with pytest.raises(ConfigError, match="backend"):
        open_backend(42)


def test_a_failed_pulse_is_not_retried_and_leaves_the_station_safe(matrix):
    lab = matrix.lab
    lab.faults("smu").drop_next()  # the connection dies on the next SMU command
    with pytest.raises(HardwareError, match="not retried"):
        matrix.pulse([(0, 0, 0)], 2.0, 1e-4, 3)
    assert lab.sources_off()
    assert lab.emulators["matrix"].closed == set()


@pytest.mark.parametrize("fault", ["drop", "timeout"])
def test_a_read_survives_a_fault_in_its_middle(fault):
    # The SMU connection drops (or one reply never comes) after 20 commands, i.e. a few
    # cells into a full cell-wise read: the backend resyncs the instruments (reconnecting
    # the dropped session), keeps the cells already measured, finishes the read, and the
    # values are right; afterwards commands work and the outputs are off.
    station = _mock_station("cell", 4, 6)
    station["instruments"]["smu"]["options"] = {"timeout": 1.0}  # a short VISA timeout
    b = open_backend({"mock_lab": station, "strategy": "cell"})
    try:
        lab = b.lab
        arm = lab.faults("smu").drop_next if fault == "drop" else lab.faults("smu").timeout_next
        arm(after=20)
        g = b.read_conductance()
        true = lab.chip.sim.true_conductance()
        assert ((g - true).abs() <= 0.05 * true).all()
        assert lab.sources_off()
        g2 = b.read_conductance([(0, 1, 1)])  # the next operation works normally
        assert abs(float(g2[0]) - float(true[0, 1, 1])) <= 0.05 * float(true[0, 1, 1])
    finally:
        b.close()


def test_a_read_that_keeps_failing_ends_in_a_clean_failure():
    b = open_backend({"mock_lab": _mock_station("parallel", 4, 4), "strategy": "parallel"})
    try:
        lab = b.lab
        lab.faults("board").garble_next(10)  # every retry, the resync and ZERO get garbage
        with pytest.raises(HardwareError, match="array-board read") as info:
            b.read_conductance()
        assert not info.value.safe_state.confirmed  # ZERO was never acknowledged
        lab.faults("board").clear()
        assert lab.sources_off()
        with pytest.raises(FaultLatchedError):  # nothing is sent until a recovery
            b.read_conductance()
        assert b.recover().confirmed
        b.read_conductance()  # once the line is clean again, reads work
    finally:
        b.close()


@pytest.mark.parametrize(
    "device, bipolar", [("neurosim", True), ("pcm", False), ({"model": "rram_forming"}, False)]
)
def test_bipolarity_comes_from_the_chips_device_model(device, bipolar):
    import copy

    st = copy.deepcopy(_mock_station("parallel", 2, 2))
    st["chip"]["device"] = device
    st["instruments"]["board"]["address"] = "memhilboard://bipolarity"
    with open_backend({"mock_lab": st}) as b:
        assert b.capabilities.bipolar is bipolar


def test_the_mock_lab_backend_describes_its_station_and_emulated_device_and_closes_once(board):
    desc = board.describe()
    assert desc["station"]["instruments"] and desc["station_config"]["chip"]["rows"] == 8
    assert desc["mock_device"] == {"model": "neurosim"}
    assert desc["calibration_files"] == {}
    lab = board.lab
    board.close()
    assert lab.sources_off()
    board.close()  # closed for good: nothing more is sent, nothing raises
