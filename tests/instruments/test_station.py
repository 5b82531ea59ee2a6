"""Station YAML loading (errors name file, key and reason), the instrument registry, and
the live Station built from fakes behind the guard."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from memhil.core.errors import ConfigError, LimitError
from memhil.instruments import registry
from memhil.instruments.guard import (
    GuardedArrayIO,
    GuardedProber,
    GuardedSourceMeter,
    GuardedSwitchMatrix,
    safe_session,
)
from memhil.instruments.registry import (
    get_instrument_type,
    instrument_types,
    load_builtin_instruments,
    register_instrument,
    unregister_instrument,
)
from memhil.instruments.station import Station, StationConfig, load_station_config
from tests.instruments.fakes import FakeArray, FakeMatrix, FakeProber, FakeSMU

STATION_YAML = """\
chip: {rows: 8, cols: 8, device: vteam}
limits: {v_pulse_max_v: 2.0, v_read_max_v: 0.3, compliance_max_a: 1.0e-3,
         compliance_default_a: 1.0e-4, width_min_s: 1.0e-6, width_max_s: 1.0,
         energy_max_j: 1.0e-6}
instruments:
  smu:    {type: fake_2ch_smu, address: "TCPIP0::127.0.0.1::5025::SOCKET", options: {}}
  matrix: {type: fake_matrix, address: "TCPIP0::127.0.0.1::5026::SOCKET"}
wiring:
  smu_ports: {smu.smua: 1, smu.smub: 2}
  rows: [1, 2, 3, 4, 5, 6, 7, 8]
  cols: [9, 10, 11, 12, 13, 14, 15, 16]
  forbidden: [[1, 9]]
mock: {}
"""

BUILT: list = []  # every fake the factories made, newest last


def _record(obj):
    BUILT.append(obj)
    return obj


def make_2ch(address, name, **options):
    return {
        "smua": _record(FakeSMU("smua", idn=f"FAKE,2CH,{address}")),
        "smub": _record(FakeSMU("smub")),
    }


def make_1ch(address, name, **options):
    return _record(FakeSMU(name))


def make_matrix(address, name, **options):
    return _record(FakeMatrix(name))


def make_prober(address, name, **options):
    return _record(FakeProber(name))


def make_array(address, name, rows=8, cols=8, **options):
    return _record(FakeArray(name, rows=rows, cols=cols))


def make_not_an_smu(address, name, **options):
    return object()


def make_failing(address, name, **options):
    raise ConnectionRefusedError(f"nothing listens at {address}")


FAKE_TYPES = {
    "fake_2ch_smu": ("smu", make_2ch),
    "fake_1ch_smu": ("smu", make_1ch),
    "fake_matrix": ("matrix", make_matrix),
    "fake_prober": ("prober", make_prober),
    "fake_array": ("array", make_array),
    "fake_not_an_smu": ("smu", make_not_an_smu),
    "fake_failing": ("matrix", make_failing),
}


@pytest.fixture(autouse=True)
def fake_types():
    for name, (role, factory) in FAKE_TYPES.items():
        register_instrument(name, role, factory)
    BUILT.clear()
    yield
    for name in FAKE_TYPES:
        unregister_instrument(name)


@pytest.fixture
def station_file(tmp_path):
    def write(text: str = STATION_YAML, name: str = "station.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def error_for(station_file, text) -> ConfigError:
    path = station_file(text)
    with pytest.raises(ConfigError) as info:
        load_station_config(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    return info.value


# -- loading ---------------------------------------------------------------------------


def test_load_the_documented_example(station_file):
    cfg = load_station_config(station_file())
    assert isinstance(cfg, StationConfig)
    assert (cfg.chip.rows, cfg.chip.cols, cfg.chip.device) == (8, 8, "vteam")
    assert cfg.limits.v_pulse_max_v == 2.0 and cfg.limits.energy_max_j == 1e-6
    assert cfg.instruments["smu"].type == "fake_2ch_smu"
    assert cfg.instruments["matrix"].options == {}
    assert cfg.wiring.smu_ports == {"smu.smua": 1, "smu.smub": 2}
    assert cfg.wiring.rows == tuple(range(1, 9)) and cfg.wiring.forbidden == ((1, 9),)
    assert load_station_config(cfg.to_dict()) == cfg  # round trip through plain data


def test_yaml_floats_without_a_dot_are_numbers(station_file):
    text = edit(STATION_YAML, "width_min_s: 1.0e-6", "width_min_s: 1e-6")
    assert load_station_config(station_file(text)).limits.width_min_s == 1e-6


@pytest.mark.parametrize(
    "old,new,key,reason",
    [
        ("mock: {}", "mocks: {}", "mocks", "unknown key"),
        ("device: vteam", "device: vteam, tiles: 2", "chip.tiles", "unknown key"),
        ("energy_max_j: 1.0e-6", "energy_max_j: 1.0e-6, v_max: 3", "limits.v_max", "unknown key"),
        ("options: {}", "options: {}, adress: x", "instruments.smu.adress", "unknown key"),
        (
            "  forbidden: [[1, 9]]",
            "  forbidden: [[1, 9]]\n  ground: 3",
            "wiring.ground",
            "unknown key",
        ),
        ("rows: 8,", "rows: eight,", "chip.rows", "expected an integer"),
        ("v_pulse_max_v: 2.0", "v_pulse_max_v: high", "limits.v_pulse_max_v", "expected a number"),
        ("options: {}", "options: [1]", "instruments.smu.options", "expected a mapping"),
        (
            "rows: [1, 2, 3, 4, 5, 6, 7, 8]",
            "rows: [1, 2, 3, x, 5, 6, 7, 8]",
            "wiring.rows[3]",
            "expected an integer",
        ),
        ("rows: 8,", "rows: 0,", "chip.rows", "must be >= 1"),
        (
            "rows: [1, 2, 3, 4, 5, 6, 7, 8]",
            "rows: [1, 2, 3, 4, 5, 6, 7]",
            "wiring.rows",
            "has 7 lines but chip.rows is 8",
        ),
        (
            "cols: [9, 10, 11, 12, 13, 14, 15, 16]",
            "cols: [9, 10, 11, 12, 13, 14, 15, 16, 17]",
            "wiring.cols",
            "has 9 lines but chip.cols is 8",
        ),
        (
            "cols: [9, 10, 11, 12, 13, 14, 15, 16]",
            "cols: [9, 10, 11, 12, 13, 14, 15, 3]",
            "wiring.cols[7]",
            "line 3 is used twice",
        ),
        (
            "rows: [1, 2, 3, 4, 5, 6, 7, 8]",
            "rows: [1, 2, 3, 4, 5, 6, 7, 7]",
            "wiring.rows[7]",
            "used twice",
        ),
        ("smu.smub: 2", "smu.smub: 1", "wiring.smu_ports[smu.smub]", "port 1 is already used"),
        ("smu.smub: 2", "k2450: 2", "wiring.smu_ports[k2450]", "not a declared SMU"),
        ("forbidden: [[1, 9]]", "forbidden: [[1, 9, 3]]", "wiring.forbidden[0]", "pair"),
        (
            "type: fake_matrix",
            "type: keysight_b9999",
            "instruments.matrix.type",
            "unknown instrument type 'keysight_b9999'",
        ),
        ("type: fake_matrix, ", "", "instruments.matrix.type", "required key is missing"),
        (
            "compliance_default_a: 1.0e-4",
            "compliance_default_a: 1.0e-2",
            "limits.compliance_default_a",
            "compliance_max_a",
        ),
    ],
)
def test_errors_name_file_key_and_reason(station_file, old, new, key, reason):
    err = error_for(station_file, edit(STATION_YAML, old, new))
    assert err.key == key, str(err)
    assert reason in err.reason, str(err)


def test_unknown_type_lists_the_known_types(station_file):
    err = error_for(station_file, edit(STATION_YAML, "type: fake_matrix", "type: nope"))
    for known in ("fake_2ch_smu", "fake_matrix", "fake_prober"):
        assert known in err.reason


def test_missing_sections_and_bad_files(station_file, tmp_path):
    for section in ("chip", "limits", "instruments"):
        data = load_station_config(station_file()).to_dict()
        del data[section]
        with pytest.raises(ConfigError, match=f"{section}: required section is missing"):
            load_station_config(data)
    err = error_for(station_file, "chip: {rows: 8\n")
    assert err.key == "<file>" and "invalid YAML" in err.reason
    err = error_for(station_file, "- 1\n- 2\n")
    assert err.key == "<root>"
    with pytest.raises(ConfigError, match="cannot read"):
        load_station_config(tmp_path / "missing.yaml")


def test_duplicate_yaml_keys_are_refused(station_file):
    err = error_for(station_file, STATION_YAML + "limits: {v_pulse_max_v: 10.0}\n")
    assert "duplicate key 'limits'" in err.reason


def test_yaml_is_loaded_safely(station_file):
    text = "!!python/object/apply:os.system ['echo pwned']\n"
    err = error_for(station_file, text)
    assert "invalid YAML" in err.reason


def test_roles_and_wiring_consistency(station_file):
    text = edit(
        STATION_YAML, "instruments:\n", "instruments:\n  matrix2: {type: fake_matrix, address: x}\n"
    )
    err = error_for(station_file, text)
    assert err.key == "instruments.matrix.type" and "at most one" in err.reason

    no_matrix = edit(
        STATION_YAML,
        '  matrix: {type: fake_matrix, address: "TCPIP0::127.0.0.1::5026::SOCKET"}\n',
        "",
    )
    err = error_for(station_file, no_matrix)
    assert err.key == "wiring.smu_ports" and "matrix" in err.reason

    no_ports = edit(STATION_YAML, "  smu_ports: {smu.smua: 1, smu.smub: 2}\n", "")
    err = error_for(station_file, no_ports)
    assert err.key == "wiring.smu_ports" and "required" in err.reason

    no_rows = edit(STATION_YAML, "  rows: [1, 2, 3, 4, 5, 6, 7, 8]\n", "")
    err = error_for(station_file, no_rows)
    assert err.key == "wiring.rows" and "required" in err.reason

    err = error_for(station_file, edit(STATION_YAML, "  smu:", "  smu.x:"))
    assert err.key == "instruments.smu.x"


def test_array_board_station_needs_no_wiring():
    cfg = load_station_config(
        {
            "chip": {"rows": 4, "cols": 3},
            "limits": {"v_pulse_max_v": 2.0},
            "instruments": {
                "board": {
                    "type": "fake_array",
                    "address": "loop://",
                    "options": {"rows": 4, "cols": 3},
                }
            },
        }
    )
    st = Station.from_config(cfg)
    assert isinstance(st.array, GuardedArrayIO) and st.matrix is None and st.smus == {}
    with pytest.raises(LimitError):
        st.array.read_columns([0.6, 0, 0, 0])  # v_read_max_v defaults to 0.5


# -- registry ------------------------------------------------------------------------


def test_registry_rejects_unknown_names():
    with pytest.raises(ConfigError) as info:
        get_instrument_type("keithley9999")
    assert "keithley9999" in str(info.value) and "fake_matrix" in str(info.value)
    assert instrument_types()["fake_2ch_smu"] == "smu"


def test_registry_registration_rules():
    register_instrument("fake_matrix", "matrix", make_matrix)  # same factory again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_instrument("fake_matrix", "matrix", make_prober)
    with pytest.raises(ValueError, match="role"):
        register_instrument("fake_x", "oscilloscope", make_matrix)
    with pytest.raises(TypeError):
        register_instrument("fake_x", "smu", "memhil.instruments.keithley.make")
    register_instrument("fake_matrix", "prober", make_prober, replace=True)
    assert get_instrument_type("fake_matrix").role == "prober"


def test_builtin_loading_tolerates_only_missing_modules(tmp_path, monkeypatch, caplog):
    pkg = tmp_path / "memhil_fake_adapters"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(
        "from memhil.instruments.registry import register_instrument\n"
        "register_instrument('fake_builtin', 'prober', lambda a, n, **o: None)\n"
    )
    (pkg / "broken.py").write_text("raise RuntimeError('adapter bug')\n")
    (pkg / "needs_dep.py").write_text("import memhil_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "memhil_fake_adapters", raising=False)
    try:
        monkeypatch.setattr(
            registry,
            "BUILTIN_MODULES",
            ("memhil_fake_adapters.good", "memhil_fake_adapters.not_yet"),
        )
        with caplog.at_level("DEBUG", logger="memhil.instruments.registry"):
            types = load_builtin_instruments()
        assert types["fake_builtin"] == "prober"
        assert "memhil_fake_adapters.not_yet" in caplog.text
        assert "memhil_fake_adapters.not_yet" in registry.missing_builtin_modules()
        with pytest.raises(ConfigError, match="not_yet"):
            get_instrument_type("keysight_b9999")  # the error says which modules are missing

        monkeypatch.setattr(registry, "BUILTIN_MODULES", ("memhil_fake_adapters.broken",))
        with pytest.raises(RuntimeError, match="adapter bug"):
            load_builtin_instruments()
        monkeypatch.setattr(registry, "BUILTIN_MODULES", ("memhil_fake_adapters.needs_dep",))
        with pytest.raises(ModuleNotFoundError, match="memhil_no_such_dependency"):
            load_builtin_instruments()
    finally:
        unregister_instrument("fake_builtin")
        for mod in [m for m in sys.modules if m.startswith("memhil_fake_adapters")]:
            del sys.modules[mod]
        registry._missing_builtins.pop("memhil_fake_adapters.not_yet", None)


def test_real_builtin_list_loads():
    load_builtin_instruments()  # whatever adapters exist import cleanly


# -- the live station ------------------------------------------------------------------


def test_station_builds_guarded_instruments(station_file):
    st = Station.from_config(load_station_config(station_file()))
    assert sorted(st.smus) == ["smu.smua", "smu.smub"]
    assert all(isinstance(s, GuardedSourceMeter) for s in st.smus.values())
    assert isinstance(st.matrix, GuardedSwitchMatrix) and st.prober is None and st.array is None
    assert st.limits.v_pulse_max_v == 2.0
    assert st.smu_port("smu.smub") == 2
    smua, smub, matrix = BUILT
    # safe start: every instrument was put in its safe state once built
    assert smua.calls == [("safe_state",), ("output_is_on",)]
    assert matrix.calls == [("safe_state",), ("connections",)]  # confirmed by a query
    assert repr(st) == "Station('station', smus=['smu.smua', 'smu.smub'], matrix='matrix')"

    st.smus["smu.smua"].set_source_mode("voltage")
    with pytest.raises(LimitError):
        st.smus["smu.smua"].set_level(2.5)
    assert ("set_level", 2.5) not in smua.calls
    with pytest.raises(LimitError, match="forbidden"):
        st.matrix.connect(1, 9)
    assert ("connect", 1, 9) not in matrix.calls

    snap = st.snapshot()
    assert snap["config"]["wiring"]["forbidden"] == [[1, 9]]
    assert snap["instruments"]["smu"]["idn"].startswith("FAKE,2CH,TCPIP0")
    assert snap["instruments"]["smu"]["channels"] == ["smua", "smub"]
    assert snap["instruments"]["matrix"]["role"] == "matrix"
    json.dumps(snap)

    st.close()
    st.close()  # idempotent
    assert smua.closed == 1 and matrix.closed == 1
    assert smua.calls[-2:] == [("safe_state",), ("output_is_on",)]


def test_from_config_accepts_a_path_and_single_channel_smus(station_file):
    text = edit(STATION_YAML, "smu_ports: {smu.smua: 1, smu.smub: 2}", "smu_ports: {k2450: 1}")
    text = edit(
        text,
        '  smu:    {type: fake_2ch_smu, address: "TCPIP0::127.0.0.1::5025::SOCKET", options: {}}',
        "  k2450: {type: fake_1ch_smu, address: GPIB0::24::INSTR}",
    )
    text = edit(text, "instruments:\n", "instruments:\n  prober: {type: fake_prober, address: x}\n")
    with Station.from_config(station_file(text)) as st:
        assert list(st.smus) == ["k2450"]
        assert isinstance(st.prober, GuardedProber)
        st.prober.contact()
        with pytest.raises(LimitError):
            st.prober.step_to((1, 1))
    prober = BUILT[0]
    assert isinstance(prober, FakeProber) and not prober.contacted  # separated on close
    assert all(obj.closed == 1 for obj in BUILT)


def test_smu_port_naming_a_missing_channel_fails_at_build(station_file):
    text = edit(STATION_YAML, "smu.smub: 2", "smu.smuc: 2")
    cfg = load_station_config(station_file(text))  # the channel list is known only when built
    with pytest.raises(ConfigError) as info:
        Station.from_config(cfg)
    assert info.value.key == "wiring.smu_ports[smu.smuc]" and "smu.smua" in info.value.reason
    assert info.value.source == cfg.source
    assert all(obj.closed == 1 for obj in BUILT)  # what was built is closed again


def test_factory_failures_close_what_was_built(station_file):
    text = edit(STATION_YAML, "type: fake_matrix", "type: fake_failing")
    with pytest.raises(ConnectionRefusedError):
        Station.from_config(station_file(text))
    assert len(BUILT) == 2 and all(obj.closed == 1 for obj in BUILT)

    text = edit(STATION_YAML, "type: fake_2ch_smu", "type: fake_not_an_smu")
    with pytest.raises(TypeError, match="SourceMeter"):
        Station.from_config(station_file(text))


def test_array_board_size_must_match_the_chip():
    cfg = {
        "chip": {"rows": 4, "cols": 3},
        "limits": {},
        "instruments": {"board": {"type": "fake_array", "address": "loop://"}},
    }
    with pytest.raises(ConfigError, match="8x8"):
        Station.from_config(cfg)


def test_safe_session_over_a_station(station_file):
    text = edit(
        STATION_YAML, "instruments:\n", "instruments:\n  prober: {type: fake_prober, address: x}\n"
    )
    st = Station.from_config(station_file(text))
    prober, smua, smub, matrix = BUILT
    with pytest.raises(KeyboardInterrupt):
        with safe_session(st):
            smu = st.smus["smu.smua"]
            smu.set_source_mode("voltage")
            smu.set_compliance(1e-4)
            smu.set_level(1.0)
            smu.output(True)
            st.matrix.connect_many([(1, 1), (2, 9)])
            st.prober.contact()
            raise KeyboardInterrupt
    assert not smua.on and smua.level == 0.0
    assert matrix.closed_relays == set() and not prober.contacted
