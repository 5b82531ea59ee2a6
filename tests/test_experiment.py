"""Protocol files into the run store (``memhil.runs.protocol_run``, ``memhil run`` / ``memhil fit``):
examples pass pre-flight and run on the mock lab, bad input fails before any instrument
command, a wafer campaign killed by a mock fault mid-die resumes to exactly the reference
point set, and a fit of a stored pulse train recovers the mock chip's NeuroSim parameters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import memhil.runs.run_session as run_session
from memhil.cli.app import main as cli_main
from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError
from memhil.protocols import ProtocolLimitError, Runner
from memhil.runs.backend_config import open_backend
from memhil.runs.protocol_file import load_protocol_file
from memhil.runs.protocol_run import run_protocol_file
from memhil.store import RunStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROTOCOLS = sorted((EXAMPLES / "protocols").glob("*.yaml"))
WAFER_STATION = EXAMPLES / "mock_wafer_station.yaml"

# points per example run: cells x reads
EXPECTED_POINTS = {
    "conductance_map": 64,  # 8 x 8, one read
    "iv_sweep": 2 * 14,  # 2 cells, 0.25 V steps to +-1 V: 14 levels
    "retention": 2 * 11,  # 2 cells, t = 0, 100, ..., 1000 s
    "pulse_train": 4 * (1 + 2 * 40),  # 4 cells, start + 40 LTP + 40 LTD
    "wafer_campaign": 3 * 4 * (1 + 2 * 5),  # 3 dies x 4 cells x (start + 5 + 5)
}


def test_every_example_is_listed_and_passes_preflight():
    names = {p.stem for p in PROTOCOLS}
    assert names >= {
        "iv_sweep",
        "forming",
        "pulse_train",
        "retention",
        "conductance_map",
        "wafer_campaign",
    }
    by_backend: dict[str, list] = {}
    for path in PROTOCOLS:
        pf = load_protocol_file(path)
        by_backend.setdefault(json.dumps(pf.backend, sort_keys=True), []).append(pf)
    for pfs in by_backend.values():  # one lab at a time (board ids and names are global)
        backend = open_backend(pfs[0].backend)
        try:
            for pf in pfs:
                summary = Runner(backend, progress=False).preflight(pf.plan)
                assert summary.ops > 0 and summary.records > 0, pf.path.name
        finally:
            backend.close()


@pytest.mark.parametrize("name", sorted(EXPECTED_POINTS) + ["forming"])
def test_example_runs_on_mock_lab(name, tmp_path):
    db = tmp_path / "runs.db"
    rid = run_protocol_file(EXAMPLES / "protocols" / f"{name}.yaml", db=db, progress=False)
    with RunStore(db) as store:
        df = store.load(rid)
        info = {r.run_id: r for r in store.runs()}[rid]
        md = store.metadata(rid)
    assert info.status == "completed"
    if name == "forming":
        assert len(df) > 0 and df["formed"].max() == 1.0
    else:
        assert len(df) == EXPECTED_POINTS[name]
    assert md["protocol_config"]["protocol"] == name
    assert md["calibration_versions"] == {}
    assert md["station"]["instruments"] and md["capabilities"]["rows"] == 8
    assert md["device_model"] in ("vteam", "neurosim")
    with RunStore(db) as store:
        units = store.units(rid)
    assert len(units) > 0 and units["done"].all() and (units["attempts"] == 1).all()


# -- bad input: nothing reaches an instrument ---------------------------------------------


def _write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def spy(monkeypatch):
    """Opens backends through the real loader, counting every instrument-level call."""
    calls: list[str] = []
    backends: list = []

    def opening(config, *, source=None):
        b = open_backend(config, source=source)
        backends.append(b)
        assert b.lab.sources_off()
        for meth in ("pulse", "read_conductance", "mvm", "wait"):
            real = getattr(b, meth)
            monkeypatch.setattr(
                b, meth, lambda *a, _m=meth, _r=real, **k: (calls.append(_m), _r(*a, **k))[1]
            )
        for name, emu in b.lab.emulators.items():
            real = emu.handle
            monkeypatch.setattr(
                emu,
                "handle",
                lambda line, _n=name, _r=real: (calls.append(f"{_n}:{line}"), _r(line))[1],
            )
        return b

    monkeypatch.setattr(run_session, "open_backend", opening)
    return calls, backends


BACKEND_LINE = f"backend: {{mock_lab: {WAFER_STATION}}}\n"


@pytest.mark.parametrize(
    "text, match",
    [
        ("protocol: pulse_train\nparams: {n_pulses: [\n", r"p\.yaml: <file>: invalid YAML"),
        (
            "protocol: pulse_trian\n" + BACKEND_LINE,
            r"p\.yaml: protocol: unknown protocol 'pulse_trian'",
        ),
        (
            "protocol: pulse_train\nparams: {n_pulse: 3}\n" + BACKEND_LINE,
            r"p\.yaml: params\.n_pulse",
        ),
        ("protocol: pulse_train\nparams: {v_ltd: 1.0}\n" + BACKEND_LINE, r"p\.yaml: params\.v_ltd"),
        ("protocol: pulse_train\nparmas: {}\n" + BACKEND_LINE, r"p\.yaml: parmas: unknown key"),
        ("params: {}\n" + BACKEND_LINE, r"p\.yaml: protocol: missing"),
        (
            "protocol: wafer_campaign\nparams: {inner: pulse_train, inner_params: {n_pulses: 0}}\n"
            + BACKEND_LINE,
            r"p\.yaml: .*n_pulses",
        ),
    ],
)
def test_config_errors_name_file_and_key(text, match, tmp_path, spy):
    calls, backends = spy
    with pytest.raises(ConfigError, match=match):
        run_protocol_file(_write(tmp_path, text), db=tmp_path / "x.db", progress=False)
    assert backends == [] and calls == []  # failed before a backend was even opened


@pytest.mark.parametrize(
    "params, match",
    [
        ("{n_pulses: 3, v_ltp: 5.0, width_s: 8.0e-8}", r"p\.yaml: params\.v_ltp"),
        ("{n_pulses: 3, v_read: 2.0, width_s: 8.0e-8}", r"p\.yaml: params\.v_read"),
        ("{n_pulses: 3, width_s: 8.0e-8, compliance_a: 1.0}", r"p\.yaml: .*params\.compliance_a"),
    ],
)
def test_out_of_limit_refused_before_any_command(params, match, tmp_path, spy):
    calls, backends = spy
    db = tmp_path / "x.db"
    path = _write(tmp_path, f"protocol: pulse_train\nparams: {params}\n" + BACKEND_LINE)
    with pytest.raises(ProtocolLimitError, match=match):
        run_protocol_file(path, db=db, progress=False)
    # refused from the files alone: no backend opened, no command, no database created
    assert backends == [] and calls == []
    assert not db.exists()


def test_wafer_campaign_needs_prober(tmp_path):
    from memhil.protocols import ProtocolError

    path = _write(tmp_path, "protocol: wafer_campaign\nparams: {dies: [[0, 0]]}\nbackend: sim\n")
    with pytest.raises(ProtocolError, match="prober"):
        run_protocol_file(path, db=tmp_path / "x.db", progress=False)


# -- kill test ----------------------------------------------------------------------------

KILL = """protocol: wafer_campaign
name: kill
params:
  dies: [[0, 0], [1, 0], [2, 0]]
  inner: pulse_train
  inner_params: {n_pulses: 4, width_s: 8.0e-8, cells: [[0, 0, 0], [0, 1, 1], [0, 2, 2]]}
backend: {mock_lab: WAFER}
""".replace("WAFER", str(WAFER_STATION))

KEYS = ["die_x", "die_y", "subsite", "phase", "pulse", "tile", "row", "col"]


def _keyset(df):
    rows = [tuple(r) for r in df[KEYS].itertuples(index=False)]
    return rows


def test_kill_mid_die_then_resume(tmp_path, monkeypatch):
    proto = _write(tmp_path, KILL, "kill.yaml")
    ref_db = tmp_path / "ref.db"
    ref_id = run_protocol_file(proto, db=ref_db, progress=False)
    with RunStore(ref_db) as store:
        ref = _keyset(store.load(ref_id))
    assert len(ref) == len(set(ref)) == 3 * 3 * (1 + 2 * 4)

    # a persistent garble on the array board, armed a number of board commands into die 1
    labs: list = []
    n_board = {"n": 0}

    def opening(config, *, source=None):
        b = open_backend(config, source=source)
        labs.append(b.lab)
        board = b.lab.emulators["board"]
        real = board.handle

        def counting(line):
            n_board["n"] += 1
            return real(line)

        monkeypatch.setattr(board, "handle", counting)
        return b

    monkeypatch.setattr(run_session, "open_backend", opening)
    run_protocol_file(proto, db=tmp_path / "count.db", progress=False)
    per_run = n_board["n"]
    labs.clear()

    def faulty(config, *, source=None):
        b = opening(config, source=source)
        b.lab.faults("board").garble_next(10**6, after=int(per_run * 0.5))
        return b

    monkeypatch.setattr(run_session, "open_backend", faulty)
    db = tmp_path / "kill.db"
    with pytest.raises(Exception) as info:
        run_protocol_file(proto, db=db, progress=False)
    assert not isinstance(info.value, (ConfigError, ProtocolLimitError))
    lab = labs[-1]
    assert lab.sources_off()
    assert not lab.emulators["prober"].in_contact  # separated by the safe state

    with RunStore(db) as store:
        (run,) = store.runs()
        assert run.status == "failed"
        got = _keyset(store.load(run.run_id))
        units = store.units(run.run_id)
    journal = [tuple(k) for k in units[units["done"]]["unit"]]
    assert len(units[~units["done"]]) == 1  # the unit in flight at the fault
    # the database holds exactly the points of the journaled units
    phases_done = {(k[1], k[2], k[5]) for k in journal if len(k) == 6}  # (x, y, phase)
    sites_done = {(k[1], k[2]) for k in journal if len(k) == 4}
    assert 1 <= len(sites_done) < 3  # interrupted mid-campaign ...
    assert phases_done - {(x, y, p) for (x, y) in sites_done for p in ("start", "ltp", "ltd")}, (
        "interrupted mid-die: some phases of the interrupted die are journaled"
    )
    expected_partial = [k for k in ref if (k[0], k[1], k[3]) in phases_done]
    assert sorted(got) == sorted(expected_partial) and len(got) == len(set(got))

    monkeypatch.setattr(run_session, "open_backend", opening)  # the fault cleared
    rid = run_protocol_file(proto, db=db, resume=True, progress=False)
    with RunStore(db) as store:
        final = _keyset(store.load(rid))
        status = {r.run_id: r.status for r in store.runs()}
        units = store.units(rid)
        reapplied = store.metadata(store.chain(rid)[0])["memhil_reapplied_units"]
    assert len(final) == len(set(final))  # no duplicate
    assert set(final) == set(ref)  # no missing
    assert status[rid] == "completed"
    assert labs[-1].sources_off()
    assert units["done"].all()
    # the unit in flight at the fault is redone and recorded as applied twice
    assert [tuple(u["unit"]) for u in reapplied] == [
        tuple(k) for k in units[units["attempts"] > 1]["unit"]
    ]
    assert [u["attempts"] for u in reapplied] == [2]


def test_resume_without_unfinished_run_is_an_error(tmp_path):
    path = EXAMPLES / "protocols" / "conductance_map.yaml"
    with pytest.raises(ConfigError, match="no unfinished run"):
        run_protocol_file(path, db=tmp_path / "x.db", resume=True, progress=False)


# -- fit ----------------------------------------------------------------------------------


def test_cli_run_and_fit_recover_mock_neurosim(tmp_path, capsys):
    true = load_yaml(WAFER_STATION)["mock"]["device"]
    proto = _write(
        tmp_path,
        "protocol: pulse_train\nname: fit_me\n"
        "params: {n_pulses: 40, v_ltp: 2.0, v_ltd: -2.0, width_s: 8.0e-8,\n"
        "         cells: [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1],\n"
        "                 [0, 2, 2], [0, 3, 3], [0, 4, 4], [0, 5, 5]]}\n",
    )
    db = tmp_path / "fit.db"
    assert (
        cli_main(
            ["run", str(proto), "--mock-lab", str(WAFER_STATION), "--db", str(db), "--no-progress"]
        )
        == 0
    )
    out = tmp_path / "fitted.yaml"
    assert (
        cli_main(
            ["fit", "1", "--db", str(db), "--out", str(out), "--fix", f"c2c_std={true['c2c_std']}"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "g_min_s" in printed and "+/-" in printed
    from memhil.calibration.fit.neurosim import FitResult

    fit = FitResult.load(out)
    span = true["g_max_s"] - true["g_min_s"]
    # the allowance of tests/calibration/test_fit.py (C2C clipping at the curve ends)
    allowance = {
        "g_min_s": 0.6 * true["c2c_std"] * span,
        "g_max_s": 0.6 * true["c2c_std"] * span,
        "a_ltp": 0.03 * true["a_ltp"],
        "a_ltd": 0.03 * true["a_ltd"],
    }
    for name, allow in allowance.items():
        err = abs(fit.params[name] - true[name])
        assert fit.stderr[name] > 0 and math.isfinite(fit.stderr[name])
        assert err <= 3 * fit.stderr[name] + allow, (name, fit.params[name], true[name])
    assert fit.n_points == 2 * 41 and "@" in fit.version


def test_cli_run_sim_backend_and_resume_flag(tmp_path):
    proto = _write(tmp_path, "protocol: conductance_map\n")
    db = tmp_path / "s.db"
    assert cli_main(["run", str(proto), "--sim", "--db", str(db), "--no-progress"]) == 0
    with RunStore(db) as store:
        (run,) = store.runs()
        assert run.status == "completed" and run.n_points > 0
        assert store.metadata(run.run_id)["device_model"] is not None
    with pytest.raises(ConfigError, match="no backend"):
        run_protocol_file(proto, db=db, progress=False)


# -- Ctrl-C at file level, and resume refusing a changed protocol or station -------------

CTRL_C_TRAIN = {"n_pulses": 6, "v_ltp": 2.0, "v_ltd": -2.0, "width_s": 8.0e-8}
N_CELLS = 16  # 4 x 4 board


@pytest.fixture
def live_bench(tmp_path, monkeypatch):
    """A mock lab served in-process, its live station file (``--station``: the backend
    connects to the addresses in it, as to a real bench), and a log of every board command;
    ``arm(n)`` makes the board raise KeyboardInterrupt on its n-th PULSE (the board is
    reached through the in-process pyserial URL, so the interrupt arrives in the caller's
    thread, as Ctrl-C would)."""
    import copy

    import yaml

    from memhil.mock_hw.lab import MockLab
    from tests.backends import _mock_station

    st = copy.deepcopy(_mock_station("parallel", 4, 4))
    st["name"] = "ctrl-c-bench"
    st["instruments"]["board"]["address"] = "memhilboard://ctrlc"
    lab = MockLab(st).start()
    station = tmp_path / "bench.yaml"
    station.write_text(yaml.safe_dump(lab.station_config().to_dict(), sort_keys=False))
    board = lab.emulators["board"]
    log: list[str] = []
    state = {"pulses": 0, "interrupt_at": None}
    real = board.handle

    def handle(line):
        log.append(line.split(" ")[0].upper())
        if log[-1] == "PULSE":
            state["pulses"] += 1
            if state["pulses"] == state["interrupt_at"]:
                log.append("<Ctrl-C>")
                raise KeyboardInterrupt
        return real(line)

    monkeypatch.setattr(board, "handle", handle)

    def arm(n):
        state["pulses"], state["interrupt_at"] = 0, n

    yield station, log, arm
    lab.stop()


def _protocol(tmp_path, params, name="train.yaml"):
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump({"protocol": "pulse_train", "name": "ctrl_c", "params": params}))
    return path


def _points(db):
    with RunStore(db) as store:
        runs = store.runs()
        df = store.load(runs[0].run_id)
    return runs, [tuple(r) for r in df[["phase", "pulse", "row", "col"]].itertuples(index=False)]


def test_ctrl_c_in_memhil_run_then_resume(tmp_path, live_bench, capsys):
    station, log, arm = live_bench
    proto = _protocol(tmp_path, CTRL_C_TRAIN)
    db = tmp_path / "runs.db"
    argv = ["run", str(proto), "--station", str(station), "--db", str(db), "--no-progress"]
    arm(9)  # the 3rd pulse of the LTD phase: 'start' and 'ltp' are complete units
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted" in err and "--resume 1" in err and str(proto) in err
    # safe state confirmed on the instrument: after the interrupt the board got ZERO (all
    # lines to 0 V) and no further pulse
    after = log[log.index("<Ctrl-C>") + 1 :]
    assert "ZERO" in after and "PULSE" not in after
    runs, got = _points(db)
    assert runs[0].status == "interrupted"
    completed = {("start", 0)} | {("ltp", k) for k in range(1, 7)}
    assert sorted({(p, k) for p, k, _, _ in got}) == sorted(completed)
    assert len(got) == len(set(got)) == N_CELLS * len(completed)  # every completed point

    arm(None)
    n_before = len(log)
    assert cli_main([*argv, "--resume"]) == 0
    assert log[n_before:].count("PULSE") == 6  # only the unfinished LTD phase is redone
    runs, got = _points(db)
    assert len(got) == len(set(got)) == N_CELLS * 13  # no duplicate, none missing
    assert {(p, k) for p, k, _, _ in got} == completed | {("ltd", k) for k in range(1, 7)}
    assert runs[-1].status == "completed"


@pytest.mark.parametrize(
    "edit, file, key",
    [
        (
            lambda proto, st: proto.write_text(
                proto.read_text().replace("n_pulses: 6", "n_pulses: 7")
            ),
            "train.yaml",
            "params.n_pulses",
        ),
        (
            lambda proto, st: proto.write_text("protocol: read_noise\nname: ctrl_c\n"),
            "train.yaml",
            "protocol",
        ),
        (
            lambda proto, st: st.write_text(
                st.read_text().replace("v_read_max_v: 0.5", "v_read_max_v: 0.4")
            ),
            "bench.yaml",
            "limits.v_read_max_v",
        ),
    ],
)
def test_resume_refuses_changed_protocol_or_station(edit, file, key, tmp_path, live_bench, capsys):
    station, log, arm = live_bench
    proto = _protocol(tmp_path, CTRL_C_TRAIN)
    db = tmp_path / "runs.db"
    argv = ["run", str(proto), "--station", str(station), "--db", str(db), "--no-progress"]
    arm(9)
    assert cli_main(argv) == 130
    capsys.readouterr()
    edit(proto, station)
    n_before = len(log)
    assert cli_main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{file}: {key}: " in err and "cannot resume" in err, err
    assert log[n_before:] == []  # refused before any instrument command


def test_resume_mismatch_names_protocol_and_defaults_are_no_change(tmp_path):
    """Function level: another protocol name is refused naming ``protocol``; spelling out a
    parameter at its default value is not a change."""
    from memhil.runs.protocol_run import check_resume_matches, first_difference

    pf = load_protocol_file(_protocol(tmp_path, CTRL_C_TRAIN))
    md = {"protocol_config": {**pf.config(), "protocol": "iv_sweep"}}
    with pytest.raises(ConfigError, match=r"train\.yaml: protocol: differs"):
        check_resume_matches(md, pf, {}, None, 1)
    md = {
        "protocol_config": {**pf.config(), "params": {**CTRL_C_TRAIN, "v_read": 0.2}},
        "station_identity": {"kind": "sim", "sim": {}},
    }
    check_resume_matches(md, pf, {"kind": "sim", "sim": {}}, "sim", 1)  # same: no error
    with pytest.raises(ConfigError, match=r"train\.yaml: backend\.sim\.rows: the station differs"):
        check_resume_matches(md, pf, {"kind": "sim", "sim": {"rows": 8}}, "sim", 1)
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "a[1].b"
    assert first_difference({"a": 1}, {"a": 1, "c": 2}) == "c"
