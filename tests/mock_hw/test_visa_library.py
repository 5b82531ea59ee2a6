"""The ``@memhil`` pyvisa backend: a bench station file's GPIB / VXI-11 / socket addresses
reach the mock lab's emulators when only the VISA library is changed (raw pyvisa, QCoDeS
``visalib=``, PyMeasure ``visa_library=``, ``memhil run --visa-library``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvisa
from qcodes.instrument import Instrument

from memhil.core.errors import ConfigError
from memhil.mock_hw import visa as mock_visa

BENCH = Path(__file__).resolve().parents[2] / "examples" / "bench_station.yaml"
LIB = f"{BENCH}@memhil"


@pytest.fixture(autouse=True)
def _close_drivers():
    yield
    Instrument.close_all()


@pytest.fixture(autouse=True, scope="module")
def _stop_labs():
    """One lab of the bench station serves this module's tests (as one process would)."""
    yield
    mock_visa.stop_in_process_labs()


def test_bench_addresses_open_the_emulators_in_any_spelling():
    rm = pyvisa.ResourceManager(LIB)
    assert {"GPIB0::22::INSTR", "TCPIP0::10.0.0.5::inst0::INSTR"} <= set(rm.list_resources())
    matrix = rm.open_resource("GPIB::22", read_termination="\n", write_termination="\n")
    assert isinstance(matrix, pyvisa.resources.GPIBInstrument)  # the class a bench gets
    assert "B2201A" in matrix.query("*IDN?")
    for name in ("tcpip0::10.0.0.5::INST0::INSTR", "TCPIP0::10.0.0.5::5025::SOCKET"):
        smu = rm.open_resource(name, read_termination="\n", write_termination="\n")
        assert smu.query("print(localnode.model)") == "2636B"
    with pytest.raises(pyvisa.VisaIOError) as exc:
        rm.open_resource("GPIB0::9::INSTR")
    assert exc.value.error_code == pyvisa.constants.StatusCode.error_resource_not_found
    rm.close()


def test_bare_at_memhil_takes_the_station_from_the_environment(monkeypatch):
    monkeypatch.setenv(mock_visa.ENV_STATION, str(BENCH))
    pyvisa.highlevel.VisaLibraryBase._registry.pop(
        (mock_visa.MockLabVisaLibrary, pyvisa.util.LibraryPath("memhil")), None
    )  # a library object of an earlier test remembers its station
    rm = pyvisa.ResourceManager("@memhil")
    assert "GPIB0::22::INSTR" in rm.list_resources()
    rm.close()


def test_one_chip_for_every_client_qcodes_and_pymeasure_drivers():
    """A QCoDeS B2201 closes relays, a PyMeasure Keithley2600 sources through them: the
    current flows only once the route is closed (both drivers reach one lab)."""
    from pymeasure.instruments.formfactor import Velox
    from pymeasure.instruments.keithley import Keithley2600
    from qcodes.instrument_drivers.Keysight import KeysightB2201

    matrix = KeysightB2201("m", "GPIB0::22::INSTR", visalib=LIB)
    smu = Keithley2600("TCPIP0::10.0.0.5::inst0::INSTR", visa_library=LIB)
    prober = Velox("GPIB0::28::INSTR", visa_library=LIB)
    prober.chuck.move_contact()  # the needles on the die: the chip is wired from here
    matrix.reset()  # all relays open, whatever an earlier test of this lab left
    smu.ChA.compliance_current = 1e-3
    smu.ChA.source_voltage = 0.05
    smu.ChA.source_output = "ON"
    assert smu.ChA.current == 0.0 or abs(smu.ChA.current) < 1e-9  # no route: open circuit
    matrix.connect_paths([(1, 1), (12, 9)])  # smua HI -> row 0, ground -> col 0
    assert smu.ChA.current > 1e-8  # a cell conducts (>= 1 uS each, sneak paths add more)
    smu.ChA.source_output = "OFF"
    assert matrix.get_error() == '+0,"No error"'
    prober.chuck.move_separation()
    smu.adapter.close()
    prober.adapter.close()


def test_address_map_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"mock\.visa\.GPIB0::5::INSTR.*no instrument 'x'"):
        mock_visa.address_map({}, {"GPIB0::5::INSTR": "x"})


def test_a_protocol_file_runs_on_the_bench_station_with_only_the_visa_library_changed(tmp_path):
    import yaml

    from memhil.runs.protocol_run import run_protocol_file

    example = Path(__file__).resolve().parents[2] / "examples" / "protocols" / "iv_sweep.yaml"
    data = yaml.safe_load(example.read_text())
    data["params"].update(v_step=0.5, cells=[[0, 1, 1]])  # the example, fewer points (time)
    proto = tmp_path / "iv_sweep.yaml"
    proto.write_text(yaml.safe_dump(data))
    from memhil.store import RunStore

    run_id = run_protocol_file(
        proto,
        db=tmp_path / "r.db",
        backend={"station": str(BENCH)},
        visa_library=LIB,
        progress=False,
    )
    (info,) = [r for r in RunStore(tmp_path / "r.db").runs() if r.run_id == run_id]
    assert info.status == "completed" and info.n_points > 0


def test_a_run_chooses_the_smu_and_matrix_path_on_a_station_with_a_board(tmp_path):
    """``backend: {station: ..., strategy: cell}``: the run's reads and pulses go through
    the 2636B routed by the B2201 (its bench addresses), not the array board, which the
    station's default (parallel) would use (docs/mock-lab.md, "Which instrument reads")."""
    import yaml

    from memhil.runs.protocol_run import run_protocol_file
    from memhil.store import RunStore

    example = Path(__file__).resolve().parents[2] / "examples" / "protocols" / "iv_sweep.yaml"
    data = yaml.safe_load(example.read_text())
    # fewer points (time); 1 ms steps: an SMU pulse, not the board's nanoseconds
    data["params"].update(v_step=0.5, step_width_s=1e-3, cells=[[0, 1, 1]])
    data["backend"] = {"station": str(BENCH), "strategy": "cell"}
    proto = tmp_path / "iv_sweep.yaml"
    proto.write_text(yaml.safe_dump(data))
    lab = mock_visa.in_process_lab(BENCH)
    smu, board = lab.emulators["smu"], lab.emulators["board"]
    smu.transcript.clear()
    board_lines = len(board.transcript)
    run_id = run_protocol_file(proto, db=tmp_path / "r.db", visa_library=LIB, progress=False)
    (info,) = [r for r in RunStore(tmp_path / "r.db").runs() if r.run_id == run_id]
    assert info.status == "completed" and info.n_points > 0
    assert any(".measure." in line for line in smu.transcript)  # the SMU read the cells
    board_commands = {line.split()[0].upper() for line in list(board.transcript)[board_lines:]}
    assert not board_commands & {"READC", "READR", "PULSE"}  # the board neither read nor pulsed
