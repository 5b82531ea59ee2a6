"""Station files cannot run native code: instrument options are an allow-list per type,
and a VISA library is selected from a file only by name ('@py', '@sim'); a library path
comes from the command line (``memhil run --visa-library``) and reaches the factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memhil.cli.app import main as cli_main
from memhil.core.errors import ConfigError
from memhil.instruments.registry import register_instrument, unregister_instrument
from memhil.instruments.station import Station, load_station_config
from tests.instruments.fakes import FakeSMU

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEN: list[dict] = []


def make_visa_smu(address, name, **options):
    SEEN.append(options)
    return FakeSMU(name)


@pytest.fixture
def visa_type():
    register_instrument(
        "fake_visa_smu", "smu", make_visa_smu, options=("visalib", "timeout"), visa_option="visalib"
    )
    SEEN.clear()
    yield
    unregister_instrument("fake_visa_smu")


def _station(smu_type: str, options: dict) -> dict:
    return {
        "chip": {"rows": 2, "cols": 2, "device": "vteam"},
        "limits": {},
        "instruments": {
            "smu": {"type": smu_type, "address": "GPIB0::26::INSTR", "options": options}
        },
    }


def _write(tmp_path, data) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "smu_type, option",
    [("keithley2636b", "visalib"), ("keithley2450", "visalib"), ("fake_visa_smu", "visalib")],
)
def test_a_visa_library_path_in_a_station_file_is_refused(smu_type, option, visa_type, tmp_path):
    path = _write(tmp_path, _station(smu_type, {option: "/tmp/evil/libvisa.so"}))
    with pytest.raises(
        ConfigError,
        match=rf"bench\.yaml: instruments\.smu\.options\.{option}: "
        r"'/tmp/evil/libvisa\.so'.*--visa-library",
    ):
        load_station_config(path)
    assert SEEN == []


def test_options_are_an_allow_list_per_type(tmp_path):
    path = _write(tmp_path, _station("keithley2636b", {"timeout": 2, "pyvisa_backend": "x"}))
    with pytest.raises(
        ConfigError,
        match=r"instruments\.smu\.options\.pyvisa_backend: not an "
        r"option of type 'keithley2636b'",
    ):
        load_station_config(path)


@pytest.mark.parametrize("name", ["@py", "@sim"])
def test_visa_libraries_by_name_load_from_a_file(name, visa_type, tmp_path):
    cfg = load_station_config(_write(tmp_path, _station("fake_visa_smu", {"visalib": name})))
    Station.from_config(cfg, safe_start=False).close()
    assert SEEN == [{"visalib": name}]


def test_a_visa_library_path_comes_from_the_command_line(visa_type, tmp_path):
    cfg = load_station_config(_write(tmp_path, _station("fake_visa_smu", {"timeout": 3})))
    Station.from_config(cfg, safe_start=False, visa_library="/opt/visa/libvisa.so").close()
    assert SEEN == [{"timeout": 3, "visalib": "/opt/visa/libvisa.so"}]


def test_memhil_run_refuses_a_station_file_with_a_library_path(tmp_path, capsys):
    data = yaml.safe_load((EXAMPLES / "mock_station.yaml").read_text())
    data["instruments"]["smu"]["options"] = {"visalib": str(tmp_path / "lib.so")}
    station = _write(tmp_path, data)
    proto = tmp_path / "p.yaml"
    proto.write_text("protocol: conductance_map\n")
    code = cli_main(
        [
            "run",
            str(proto),
            "--station",
            str(station),
            "--db",
            str(tmp_path / "x.db"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "instruments.smu.options.visalib" in err and "--visa-library" in err
