"""Never report a safe state that was not confirmed: faults injected on a SERVED mock lab
(every instrument behind a real loopback socket, the backend opened over the lab's live
addresses as over a bench). Outputs end confirmed off by a query, or the failure names the
instrument whose state is unknown; the backend then latches the fault until ``recover``.
"""

from __future__ import annotations

import time

import pytest
import yaml
from qcodes.instrument import Instrument

from memhil.backends.hardware import FaultLatchedError, HardwareBackend, HardwareError
from memhil.cli.app import EXIT_UNSAFE
from memhil.cli.app import main as cli_main
from memhil.instruments.adapters.velox import GarbledReplyError, StrictVelox
from memhil.instruments.guard import SafeStateError
from memhil.instruments.station import Station
from memhil.mock_hw.lab import MockLab

ROWS = COLS = 4
TIMEOUT_S = 1.0  # VISA timeouts of the served instruments: a silence costs this


def _station(board: bool = True) -> dict:
    """A 2636B (drive + sense), a B2201 with a ground port, a Velox prober and (``board``)
    an array board served over TCP, on a 4 x 4 NeuroSim chip; short timeouts."""
    visa = "TCPIP0::127.0.0.1::0::SOCKET"
    cfg = {
        "name": "faults",
        "chip": {"rows": ROWS, "cols": COLS, "device": "neurosim"}
        | ({} if board else {"set_pulse": [2.0, 1e-4], "reset_pulse": [-2.0, 1e-4]}),
        "limits": {
            "v_pulse_max_v": 3.0,
            "v_read_max_v": 0.5,
            "width_min_s": 1e-9 if board else 1e-4,  # without a board the 2636B pulses
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-3,
        },
        "instruments": {
            "smu": {"type": "keithley2636b", "address": visa, "options": {"timeout": TIMEOUT_S}},
            "matrix": {
                "type": "keysight_b2201",
                "address": visa,
                "options": {"timeout": TIMEOUT_S},
            },
            "prober": {
                "type": "formfactor_velox",
                "address": visa,
                "options": {"timeout": int(TIMEOUT_S * 1000)},
            },
            "board": {
                "type": "memhil_array_board",
                "address": "socket://127.0.0.1:0",
                "options": {"timeout": TIMEOUT_S},
            },
        },
        "wiring": {
            "smu_ports": {"smu.smua": 1, "smu.smub": 2},
            "rows": [1, 2, 3, 4],
            "cols": [5, 6, 7, 8],
            "ground_ports": [12],
        },
        "mock": {
            "device": {"model": "neurosim"},
            "read": {"read_noise_rel": 0.01},
            "seed": 5,
            "wafer": {"dies": [[0, 0], [1, 0]]},
        },
    }
    if not board:  # a bench the backend reaches cell-wise (strategy "auto" picks "cell")
        del cfg["instruments"]["board"]
    return cfg


@pytest.fixture
def served():
    """A served lab and a backend factory over its live station (cell or parallel)."""
    lab = MockLab(_station(), serve_array_board_tcp=True).start()
    opened: list[HardwareBackend] = []

    def open_backend(strategy: str = "cell") -> HardwareBackend:
        st = Station.from_config(lab.station_config())
        st.prober.load_map(list(lab.chip.wafer.dies))
        st.prober.step_to((0, 0))
        st.prober.contact()
        be = HardwareBackend(st, clock=lab.clock, strategy=strategy)
        opened.append(be)
        return be

    yield lab, open_backend
    for be in opened:
        try:
            be.station.close()
        except Exception:  # noqa: BLE001 - a test may leave an instrument unreachable
            pass
    lab.stop()
    Instrument.close_all()


def _truth(lab) -> dict[str, bool]:
    """What the emulators say, per safe-state component kind."""
    return {
        "smu": lab.sources_off(),
        "matrix": lab.emulators["matrix"].closed == set(),
        "prober": not lab.emulators["prober"].in_contact,
        "array": True,
    }


def _assert_report_is_true(report, lab) -> None:
    truth = _truth(lab)
    for entry in report.entries:
        if entry.confirmed:
            assert truth[entry.component.split(" ")[0]], entry.line()


def _script_offset(lab, be) -> int:
    """Commands the SMU receives from the start of a cell pulse to its pulse script's
    first line (measured on a fault-free pulse: deterministic)."""
    emu = lab.emulators["smu"]
    n0 = len(emu.transcript)
    be.pulse([(0, 1, 1)], 1.0, 1e-4, 2)
    lines = list(emu.transcript)[n0:]  # a bounded deque: no slicing
    return next(k for k, line in enumerate(lines) if line.startswith("loadandrunscript"))


# -- item: a dropped connection inside the 2600's pulse script ---------------------------------


def test_a_connection_dropped_inside_a_pulse_script_ends_with_outputs_confirmed_off(served):
    lab, open_backend = served
    be = open_backend("cell")
    k = _script_offset(lab, be)
    lab.faults("smu").drop_next(after=k + 3)  # inside loadandrunscript ... endscript
    with pytest.raises(HardwareError, match="SMU pulse") as info:
        be.pulse([(0, 2, 2)], 1.0, 1e-4, 2)
    report = info.value.safe_state
    assert report.confirmed, report
    assert any(e.component == "smu smu.smua" and e.state == "output off" for e in report.entries)
    assert lab.sources_off() and not lab.emulators["smu"].loading_script
    assert be.fault is None
    be.pulse([(0, 2, 2)], 1.0, 1e-4, 2)  # the SMU works normally afterwards
    assert lab.sources_off()


def test_a_half_loaded_script_on_the_same_connection_is_abandoned_not_run(served):
    # the instrument is left in script mode on the live connection (a script write cut
    # short on the host): resync leaves it without running the half script
    lab, open_backend = served
    be = open_backend("cell")
    smu = be.station.smus["smu.smua"]
    instr = smu._smu.instrument
    instr.visa_handle.write("loadandrunscript\r\nsmua.source.levelv = 1\r\nsmua.source.output = 1")
    smu.resync()
    assert not lab.emulators["smu"].loading_script
    assert not smu.output_is_on() and lab.sources_off()  # the half script never ran


def test_emulator_discards_a_script_whose_connection_closed(served):
    lab, _ = served
    emu = lab.emulators["smu"]
    import socket

    with socket.create_connection(("127.0.0.1", lab.servers["smu"].port)) as s:
        s.sendall(b"loadandrunscript\nsmua.source.output = 1\n")
        deadline = time.monotonic() + 5
        while not emu.loading_script and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emu.loading_script
    deadline = time.monotonic() + 5
    while emu.loading_script and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not emu.loading_script and lab.sources_off()


# -- items: the fault latch and recover() ---------------------------------------------------------


def test_an_unconfirmed_safe_state_latches_until_recover_with_nothing_on_the_wire(served):
    lab, open_backend = served
    be = open_backend("cell")
    lab.faults("prober").drop_next(10_000)  # the prober's connection dies for good
    lab.faults("smu").drop_next()  # the next SMU command fails
    with pytest.raises(HardwareError) as info:
        be.pulse([(0, 0, 0)], 1.0, 1e-4, 1)
    report = info.value.safe_state
    assert [e.component for e in report.unconfirmed] == ["prober"]
    assert "needles may be down" in str(info.value)
    _assert_report_is_true(report, lab)
    assert be.fault is not None
    sent = {name: s.transactions for name, s in lab.servers.items()}
    with pytest.raises(FaultLatchedError):
        be.pulse([(0, 0, 0)], 1.0, 1e-4, 1)
    with pytest.raises(FaultLatchedError):
        be.read_conductance([(0, 0, 0)])
    assert {name: s.transactions for name, s in lab.servers.items()} == sent  # nothing sent
    with pytest.raises(Exception):  # noqa: B017 - any failure; the point is the latch below
        be.recover()  # the prober is still unreachable: the fault stays latched
    assert be.fault is not None
    lab.faults("prober").clear()
    assert be.recover().confirmed and be.fault is None
    be.read_conductance([(0, 0, 0)])


# -- item: the prober is resynced, retried, verified and strict -------------------------------------


def test_a_dropped_prober_connection_is_reconnected_and_separate_is_verified(served):
    lab, open_backend = served
    be = open_backend("cell")
    prober = be.station.prober
    lab.faults("prober").drop_next()
    t0 = time.monotonic()
    prober.separate()  # retried after a reconnect, then confirmed by a height query
    assert time.monotonic() - t0 < 5 * TIMEOUT_S
    assert not lab.emulators["prober"].in_contact and not prober.in_contact()


def test_a_garbled_prober_reply_is_rejected_not_taken_as_success(served):
    lab, _ = served
    velox = StrictVelox(
        lab.address("prober"),
        visa_library="@py",
        read_termination="\n",
        write_termination="\n",
        timeout=int(TIMEOUT_S * 1000),
    )
    try:
        velox.chuck.move_contact()
        lab.faults("prober").garble_next()  # "0:" arrives as garbage without its ':'
        with pytest.raises(GarbledReplyError):
            velox.chuck.move_separation()
    finally:
        velox.adapter.close()


# -- memhil run: the console tells the confirmed state, or names what is not -------------------------


def _live(tmp_path, lab):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(lab.station_config().to_dict(), sort_keys=False))
    proto = tmp_path / "train.yaml"
    proto.write_text(
        yaml.safe_dump(
            {
                "protocol": "pulse_train",
                "name": "faults",
                "params": {
                    "cells": [[0, 0, 0]],
                    "n_pulses": 3,
                    "v_ltp": 1.0,
                    "v_ltd": -1.0,
                    "width_s": 1e-4,
                },
            }
        )
    )
    return path, proto


class _SmuSpy:
    """Stands in for the 2600 emulator on its server: calls ``on_line(lab, line)`` before
    the emulator handles each line (in the server's thread, so in order with the wire)."""

    def __init__(self, lab, on_line):
        self.lab, self.emu, self.on_line = lab, lab.emulators["smu"], on_line

    def handle(self, line):
        self.on_line(self.lab, line)
        return self.emu.handle(line)

    def session_closed(self, session):
        self.emu.session_closed(session)


def _run_cli(tmp_path, db, arm=lambda lab: None, on_smu_line=None):
    """``memhil run`` of a pulse train on a served lab over its live station file; returns
    (exit code, seconds, the SMU emulator's transcript)."""
    lab = MockLab(_station(board=False))
    if on_smu_line is not None:
        lab.emulators["smu"] = _SmuSpy(lab, on_smu_line)
    lab.start()
    if on_smu_line is not None:
        lab.emulators["smu"] = lab.emulators["smu"].emu
    try:
        live, proto = _live(tmp_path, lab)
        arm(lab)
        t0 = time.monotonic()
        code = cli_main(
            ["run", str(proto), "--station", str(live), "--db", str(db), "--no-progress"]
        )
        return code, time.monotonic() - t0, list(lab.emulators["smu"].transcript)
    finally:
        lab.stop()
        Instrument.close_all()


@pytest.mark.parametrize("unsafe", [False, True])
def test_memhil_run_reports_each_instruments_safe_state_from_its_query(tmp_path, capsys, unsafe):
    # where the first pulse script starts on the SMU's wire (a fault-free run: deterministic)
    code, _, transcript = _run_cli(tmp_path, tmp_path / "clean.db")
    assert code == 0
    k = next(i for i, line in enumerate(transcript) if line.startswith("loadandrunscript"))
    capsys.readouterr()

    def arm(lab):
        lab.faults("smu").drop_next(after=k + 2)  # the SMU connection drops mid-pulse

    def kill_prober(lab, line):  # from the first pulse on, the prober's connection is dead
        if unsafe and line.startswith("loadandrunscript"):
            lab.faults("prober").drop_next(10_000)

    db = tmp_path / "runs.db"
    code, elapsed_s, _ = _run_cli(tmp_path, db, arm, kill_prober)
    err = capsys.readouterr().err
    log = tmp_path / "runs.log"
    assert f"full trace in {log}" in err and "Traceback" in log.read_text()
    assert "Traceback" not in err and len(err.splitlines()) <= 14, err
    assert "outputs are off" not in err
    assert elapsed_s < 30
    if unsafe:
        assert code == EXIT_UNSAFE
        assert "NOT CONFIRMED for prober" in err and "needles may be down" in err
    else:
        assert code == 1
        assert "Safe state confirmed by the instruments" in err
        for line in (
            "smu smu.smua: output off (confirmed)",
            "smu smu.smub: output off",
            "matrix: all relays open",
            "prober: separated",
        ):
            assert line in err
    assert "--resume 1" in err


# -- the fault matrix ----------------------------------------------------------------------------

FAULTS = ("drop", "silence", "garble")
POINTS = (0, 7)


@pytest.mark.slow
@pytest.mark.parametrize("instrument", ["smu", "matrix", "board", "prober"])
def test_fault_matrix_outputs_end_confirmed_off_or_the_failure_names_the_instrument(
    served, instrument
):
    lab, open_backend = served
    be = open_backend("parallel" if instrument == "board" else "cell")
    arm = {
        "drop": lab.faults(instrument).drop_next,
        "silence": lab.faults(instrument).timeout_next,
        "garble": lab.faults(instrument).garble_next,
    }
    cells = [(0, 1, 2), (0, 3, 0)]
    t0 = time.monotonic()
    for fault in FAULTS:
        for after in POINTS:
            arm[fault](after=after)
            try:
                be.pulse(cells, 1.0, 1e-4, 2)
                be.read_conductance(cells)
                report = be.close()  # the prober is reached here, if not before
            except HardwareError as exc:
                report = exc.safe_state
                assert report is not None, exc
                if not report.confirmed:  # the failure names what is not confirmed
                    for entry in report.unconfirmed:
                        assert entry.component in str(exc)
            except SafeStateError as exc:
                report = exc.report
            _assert_report_is_true(report, lab)
            if report.confirmed:
                assert lab.sources_off()
            lab.faults(instrument).clear()
            be.recover()  # whatever happened, the bench comes back confirmed safe
            assert be.fault is None and lab.sources_off()
            be.station.prober.contact()
    assert time.monotonic() - t0 < 120
