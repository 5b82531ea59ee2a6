"""A whole station over the mock lab: Station YAML -> guarded adapters -> unmodified drivers
-> pyvisa-py / pyserial -> emulators -> one chip. Routing, safe state, faults, and the
property that no guarded request sources beyond the station's limits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcodes.instrument import Instrument

from memhil.core.errors import LimitError
from memhil.instruments.guard import safe_session
from memhil.instruments.station import Station
from memhil.mock_hw.lab import MockLab

ROWS, COLS = 4, 4


def station_yaml(tmp_path, **mock):
    mock_cfg = {
        "device": {"model": "neurosim", "c2c_std": 0.0},
        "seed": 3,
        "sneak_paths": False,
        "ground_ports": [12],
        "wafer": {"dies": [[0, 0], [1, 0], [2, 0]]},
        **mock,
    }
    import yaml

    cfg = {
        "name": "mock_bench",
        "chip": {"rows": ROWS, "cols": COLS},
        "limits": {
            "v_pulse_max_v": 2.5,
            "v_read_max_v": 0.3,
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-4,
            "width_min_s": 1e-6,
            "width_max_s": 1.0,
            "energy_max_j": 1e-5,
        },
        "instruments": {
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "prober": {"type": "formfactor_velox", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "board": {"type": "memhil_array_board", "address": "memhilboard://board"},
        },
        "wiring": {
            "smu_ports": {"smu.smua": 1, "smu.smub": 2},
            "rows": [1, 2, 3, 4],
            "cols": [5, 6, 7, 8],
            "forbidden": [[2, 5]],
        },
        "mock": mock_cfg,
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def lab_station(tmp_path):
    lab = MockLab(station_yaml(tmp_path)).start()
    station = Station.from_config(lab.station_config())
    station.prober.load_map(list(lab.chip.wafer.dies))
    station.prober.step_to((0, 0))
    station.prober.contact()
    yield lab, station
    station.close()
    lab.stop()
    Instrument.close_all()


def test_routed_cell_reads_its_conductance(lab_station):
    lab, station = lab_station
    smu = station.smus["smu.smua"]
    station.matrix.connect_many(
        [(1, 2), (12, 7)]
    )  # smua -> row 1 (line 2), col 2 (line 7) -> ground
    smu.set_source_mode("voltage")
    smu.set_compliance(1e-4)
    smu.set_level(0.2)
    smu.output(True)
    m = smu.measure()
    g = float(lab.chip.sim.true_conductance()[0, 1, 2])
    assert m.current_a == pytest.approx(0.2 * g, rel=1e-3)  # no read noise configured
    assert not m.in_compliance


def test_safe_session_leaves_every_emulator_safe_after_an_error(lab_station):
    lab, station = lab_station
    smu = station.smus["smu.smua"]
    with pytest.raises(RuntimeError, match="boom"):
        with safe_session(station):
            station.matrix.connect_many([(1, 2), (12, 7)])
            smu.set_source_mode("voltage")
            smu.set_compliance(1e-4)
            smu.set_level(0.1)
            smu.output(True)
            assert smu.output_is_on()  # a query: the emulator has processed the writes
            assert not lab.sources_off()
            raise RuntimeError("boom")
    assert lab.sources_off()
    assert lab.emulators["matrix"].closed == set()
    assert not lab.emulators["prober"].in_contact


def test_guard_refusals_never_reach_the_emulators(lab_station):
    lab, station = lab_station
    smu = station.smus["smu.smua"]
    smu.set_source_mode("voltage")
    with pytest.raises(LimitError):
        smu.output(True)  # no compliance yet
    smu.set_compliance(1e-4)
    with pytest.raises(LimitError, match="2.5"):
        smu.set_level(3.0)
    with pytest.raises(LimitError):
        station.matrix.connect(2, 5)  # forbidden route
    assert lab.sources_off() and lab.emulators["matrix"].closed == set()
    assert lab.bench.terminal("smu.smua").voltage_v == 0.0


def test_a_timeout_surfaces_and_the_session_still_ends_safe(lab_station):
    from pyvisa.errors import VisaIOError

    lab, station = lab_station
    smu = station.smus["smu.smua"]
    smu.set_source_mode("voltage")
    smu.set_compliance(1e-4)
    station.smus["smu.smua"]  # the QCoDeS driver's VISA timeout is shortened below
    Instrument.find_instrument("smu").timeout(0.5)
    with pytest.raises(VisaIOError):
        with safe_session(station):
            smu.set_level(0.1)
            smu.output(True)
            assert smu.output_is_on()  # sync: TSP writes have no reply, so arm the fault
            lab.faults("smu").timeout_next()  # only once they are processed; the measurement
            smu.measure()  # query then gets no reply
    assert lab.sources_off()  # and the commands after the timeout reached the emulator


def test_the_array_board_reads_the_whole_array_in_one_transaction(lab_station):
    lab, station = lab_station
    board = station.array
    g = lab.chip.sim.true_conductance()[0].double()
    before = lab.emulators["board"].transactions
    i = board.read_columns([0.1] * ROWS)
    assert lab.emulators["board"].transactions - before == 1
    assert torch.allclose(
        torch.as_tensor(i, dtype=torch.float64),
        torch.full((ROWS,), 0.1, dtype=torch.float64) @ g,
        rtol=1e-6,
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=st.lists(
        st.tuples(
            st.sampled_from(["mode", "compliance", "level", "output", "pulse"]),
            st.floats(-5.0, 5.0),
            st.floats(1e-7, 3e-3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_no_guarded_request_sequence_sources_beyond_the_limits(lab_station, requests):
    lab, station = lab_station
    smu = station.smus["smu.smua"]
    limits = station.limits
    seen_v, seen_i = [0.0], [0.0]
    term = lab.bench.terminal("smu.smua")
    for kind, value, extra in requests:
        try:
            if kind == "mode":
                smu.set_source_mode("voltage")
            elif kind == "compliance":
                smu.set_compliance(extra)
            elif kind == "level":
                smu.set_level(value)
            elif kind == "output":
                smu.output(value > 0)
            elif kind == "pulse":
                smu.pulse(value, 1e-4, 1)
        except LimitError:
            pass
        smu.output_is_on()  # a query: every write before it has reached the emulator
        seen_v.append(abs(term.voltage_v))
        if term.output_on:
            seen_i.append(abs(lab.bench.current("smu.smua")))
    smu.safe_state()
    assert max(seen_v) <= limits.v_pulse_max_v
    assert max(seen_i) <= limits.compliance_max_a * (1 + 1e-6)
