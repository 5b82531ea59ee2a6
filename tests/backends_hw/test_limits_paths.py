"""Limits hold through every path of the hardware backend: the energy of a whole pulse
request per cell (selected and half-selected), a guard refusal is a LimitError and never a
communication fault, and the station's limits fit its instruments' ranges at load."""

from __future__ import annotations

import pytest
import torch

from memhil.backends.hardware import HardwareBackend
from memhil.core.errors import ConfigError, LimitError
from memhil.core.limits import exceeds
from memhil.instruments.station import Station, load_station_config
from memhil.mock_hw.lab import MockLab
from tests.backends import _mock_station

ROWS = COLS = 4


def _board_station(energy_max_j: float | None) -> dict:
    cfg = _mock_station("parallel", ROWS, COLS)
    cfg["limits"] = {**cfg["limits"], "energy_max_j": energy_max_j}
    return cfg


def _per_cell_energy(chip) -> torch.Tensor:
    """Worst-case energy (J) each cell received, from the drives the chip recorded."""
    e = torch.zeros(ROWS, COLS, dtype=torch.float64)
    for a in chip.applied:
        if a.kind == "hold":
            e += a.v_cell.abs() * a.compliance_a * a.duration_s * a.count
    return e


def _distinct_amplitudes() -> torch.Tensor:
    # every cell its own amplitude: the board needs one pulse per cell, and each of them
    # half-selects the other cells of its row and column
    return (1.5 + 0.01 * torch.arange(ROWS * COLS, dtype=torch.float64)).reshape(1, ROWS, COLS)


@pytest.mark.parametrize("served", [False, True])
def test_a_request_split_into_several_board_pulses_is_bounded_per_cell(served):
    # one pulse of every cell: 1.65 V * 1e-3 A * 1e-6 s * 4 ~ 6.6e-9 J < the limit 1e-8 J;
    # with its row and column half-selected 6 more times a cell gets ~4x that
    width, count, limit = 1e-6, 4, 1e-8
    lab = MockLab(_board_station(limit), serve_array_board_tcp=served).start()
    st = Station.from_config(lab.station_config())
    try:
        backend = HardwareBackend(st, clock=lab.clock, strategy="parallel")
        board = lab.emulators["board"]
        lab.chip.applied = []
        wire = board.transactions
        with pytest.raises(LimitError, match="whole pulse request"):
            backend.pulse(None, _distinct_amplitudes(), width, count)
        assert board.transactions == wire and lab.chip.applied == []  # nothing sent
        # a request that fits: every cell within the limit, half-selects counted
        backend.pulse(None, _distinct_amplitudes(), width, 1)
        assert len([a for a in lab.chip.applied if a.kind == "hold"]) == ROWS * COLS
        assert not exceeds(float(_per_cell_energy(lab.chip).max()), limit)
    finally:
        st.close()
        lab.stop()


def test_the_guard_bounds_a_non_product_mask_over_its_blocks():
    # a diagonal mask is sent as one board pulse per cell; the guard charges each cell
    # every block it is half-selected by, as the backend does
    import numpy as np

    lab = MockLab(_board_station(2.5e-9)).start()
    st = Station.from_config(lab.station_config())
    try:
        board = lab.emulators["board"]
        wire = board.transactions
        mask = np.eye(ROWS, COLS, dtype=bool)
        # one pulse: 2 V * 1e-3 A * 1e-6 s = 2e-9 J; cell (0, 1) is half-selected twice
        st.array.pulse_cells(mask, 2.0, 1e-6, 1, compliance_a=1e-3)
        with pytest.raises(LimitError, match="V/2"):
            st.array.pulse_cells(
                mask | np.eye(ROWS, COLS, 1, dtype=bool), 2.0, 1e-6, 1, compliance_a=1e-3
            )
        assert board.transactions == wire + 1 + ROWS  # COMP and 4 PULSEs of the first call
    finally:
        st.close()
        lab.stop()


def test_a_guard_refusal_inside_a_read_is_a_limit_error_with_no_resync():
    backend = MockLab.open_backend(_board_station(None), strategy="parallel")
    try:
        board = backend.lab.emulators["board"]
        wire = board.transactions
        with pytest.raises(LimitError, match="read voltage"):
            backend._read_op(
                "array-board read", lambda: backend.station.array.read_columns([1.0] * ROWS)
            )
        assert board.transactions == wire  # no resync, no retry, no safe state
    finally:
        backend.close()


def test_an_mvm_at_exactly_the_read_limit_passes_the_backend_and_the_guard():
    cfg = _board_station(None)
    cfg["limits"]["v_read_max_v"] = 0.3  # 0.3 rounds up in float32
    backend = MockLab.open_backend(cfg, strategy="parallel")
    try:
        assert float(torch.tensor(0.3, dtype=torch.float32)) > 0.3
        out = backend.mvm(torch.full((2, ROWS), 0.3))
        assert out.shape == (1, 2, COLS)
        assert backend.mvm_t(torch.full((1, COLS), -0.3)).shape == (1, 1, ROWS)
    finally:
        backend.close()


@pytest.mark.parametrize(
    "key,value,instrument",
    [
        ("compliance_max_a", 50.0, "board"),
        ("v_pulse_max_v", 1000.0, "board"),
        ("v_read_max_v", 6.0, "board"),
        ("width_max_s", 2.0, "board"),
        ("count_max", 10**7, "board"),
    ],
)
def test_limits_beyond_an_instruments_range_fail_at_load(tmp_path, key, value, instrument):
    import yaml

    cfg = _board_station(None)
    cfg["limits"][key] = value
    if key == "compliance_max_a":
        cfg["limits"]["compliance_default_a"] = 1e-3
    if key == "v_read_max_v":
        cfg["limits"]["v_pulse_max_v"] = 6.0
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_station_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: limits.{key if key != 'v_read_max_v' else 'v_pulse_max_v'}")
    assert f"instruments.{instrument} (memhil_array_board)" in msg and "at most" in msg


def test_smu_station_limits_beyond_an_smus_range_fail_at_load(tmp_path):
    import yaml

    cfg = _mock_station("cell", ROWS, COLS)
    cfg["limits"]["compliance_max_a"] = 50.0
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # the tightest range names itself: the 2450 (1 A; the 2636B reaches 1.5 A)
    with pytest.raises(
        ConfigError,
        match=r"limits\.compliance_max_a: 50 A is beyond the range "
        r"of instruments\.bias \(keithley2450\): at most 1 A",
    ):
        load_station_config(path)
    cfg["limits"]["compliance_max_a"] = 1e-3
    cfg["limits"]["v_pulse_max_v"] = 1000.0
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"limits\.v_pulse_max_v: 1000 V .* at most 200 V"):
        load_station_config(path)
