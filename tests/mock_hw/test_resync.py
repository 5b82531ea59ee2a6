"""``resync()`` of the adapters over the mock lab: after an injected timeout, a late
(stale) reply, a dropped connection or a garbled reply, one ``resync()`` brings the
connection back, changes no output or relay state, and queries and measurements return
the right values again. Instruments: Keithley 2636B and Keysight B2201 (QCoDeS over
pyvisa-py sockets), the array board (PyMeasure over pyserial), the Velox (PyMeasure over
pyvisa-py).

TSP/SCPI writes have no reply: a fault meant for a query is armed only after a query has
synchronised the session (every earlier write processed).
"""

from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import serial
import yaml
from pyvisa.errors import VisaIOError
from qcodes.instrument import Instrument

from memhil.instruments import array_board
from memhil.instruments.adapters import b220x, keithley2450, keithley2600, velox
from memhil.instruments.adapters.keithley2600 import LEAVE_SCRIPT_LINES
from memhil.instruments.capabilities import Resyncable
from memhil.instruments.session import ResyncError
from memhil.mock_hw.lab import MockLab

log = logging.getLogger(__name__)

ROWS, COLS = 4, 4
TIMEOUT_S = 0.3  # driver timeouts: short, so injected timeouts cost little
SLOW_S = 10.0  # timeout for a query that must see a reply already on its way
V_READ = 0.2
SMUA_PORT, GND_PORT = 1, 12
ROW_LINE, COL_LINE = 2, 7  # row 1, column 2 (wiring rows 1..4, cols 5..8)
CELL = (1, 2)


def _station_yaml(tmp_path, board: str = "board"):
    cfg = {
        "name": "resync_bench",
        "chip": {"rows": ROWS, "cols": COLS},
        "limits": {
            "v_pulse_max_v": 2.5,
            "v_read_max_v": 0.3,
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-4,
        },
        "instruments": {
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "prober": {"type": "formfactor_velox", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            board: {"type": "memhil_array_board", "address": f"memhilboard://{board}"},
        },
        "wiring": {
            "smu_ports": {"smu.smua": SMUA_PORT, "smu.smub": 3},
            "rows": [1, 2, 3, 4],
            "cols": [5, 6, 7, 8],
        },
        "mock": {
            "device": {"model": "neurosim", "c2c_std": 0.0},
            "seed": 3,
            "sneak_paths": False,
            "ground_ports": [GND_PORT],
            "wafer": {"dies": [[0, 0]]},
        },
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def _rig(lab):
    """The raw (unguarded) adapters over ``lab``: smua routed to cell (1, 2) through the
    matrix, sourcing V_READ with its output on; the prober in contact; every adapter
    warmed up (the chip model's first evaluation is slow in wall time)."""
    opened = []
    try:
        smus = keithley2600.create(lab.address("smu"), "smu", visalib="@py", timeout=TIMEOUT_S)
        opened.append(smus["smua"])
        matrix = b220x.create(lab.address("matrix"), "matrix", visalib="@py", timeout=TIMEOUT_S)
        opened.append(matrix)
        prober = velox.create(
            lab.address("prober"), "prober", visa_library="@py", timeout=int(TIMEOUT_S * 1000)
        )
        opened.append(prober)
        board_name = next(
            n for n, i in lab.config.instruments.items() if i.type == "memhil_array_board"
        )
        board = array_board.create(lab.address(board_name), board_name, timeout=TIMEOUT_S)
        opened.append(board)
        prober.load_map([(0, 0)])
        if not prober.in_contact():
            prober.step_to((0, 0))
            prober.contact()
        smu = smus["smua"]
        matrix.open_all()
        matrix.connect_many([(SMUA_PORT, ROW_LINE), (GND_PORT, COL_LINE)])
        smu.set_source_mode("voltage")
        smu.set_compliance(1e-4)
        smu.set_nplc(0.01)
        smu.set_level(V_READ)
        smu.output(True)
        with smu.instrument.timeout.set_to(10.0):
            smu.measure()
        port = board.adapter.connection
        port.timeout, t = 10.0, port.timeout
        board.read_columns([0.1] * ROWS)
        port.timeout = t
        g = lab.chip.sim.true_conductance()[0].double().numpy()
        yield SimpleNamespace(lab=lab, smu=smu, matrix=matrix, prober=prober, board=board, g=g)
    finally:
        for name in lab.emulators:
            lab.faults(name).clear()
        for obj in opened:
            _attempt(obj.close)  # a test may have broken the connection
        Instrument.close_all()


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory):
    lab = MockLab(_station_yaml(tmp_path_factory.mktemp("resync"))).start()
    yield lab
    lab.stop()


@pytest.fixture
def rig(shared_lab):
    """Adapters over the module's lab (faults cleared after each test)."""
    with _rig(shared_lab) as r:
        yield r


@pytest.fixture
def own_rig(tmp_path):
    """Adapters over a lab of their own, for tests that take an instrument away."""
    lab = MockLab(_station_yaml(tmp_path, board="own_board")).start()
    try:
        with _rig(lab) as r:
            yield r
    finally:
        lab.stop()


def _attempt(fn):
    """Run ``fn``; its result or the exception it raised (a fault's after-effect is shown,
    not asserted: whether it reproduces depends on the transport)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return exc


# -- common ---------------------------------------------------------------------------------


def test_every_adapter_is_resyncable_and_resync_is_idempotent(rig):
    transactions = {n: rig.lab.servers[n].transactions for n in ("smu", "matrix")}
    for inst in (rig.smu, rig.matrix, rig.prober, rig.board):
        assert isinstance(inst, Resyncable)
        inst.resync()
    rig.smu.resync()
    # a healthy session: no reconnect; the 2600 gets its leave-script lines, *CLS and the
    # identity query per resync
    assert rig.lab.servers["smu"].transactions - transactions["smu"] == 2 * (
        len(LEAVE_SCRIPT_LINES) + 2
    )
    assert rig.lab.servers["matrix"].transactions - transactions["matrix"] == 2
    assert rig.smu.output_is_on()
    assert rig.matrix.connections() == {(SMUA_PORT, ROW_LINE), (GND_PORT, COL_LINE)}
    assert rig.prober.in_contact()


# -- Keithley 2636B (QCoDeS over pyvisa-py TCPIP SOCKET) --------------------------------------


def _smu_ok(rig):
    m = rig.smu.measure()
    assert m.current_a == pytest.approx(V_READ * rig.g[CELL], rel=1e-3)
    assert m.voltage_v == pytest.approx(V_READ, rel=1e-6)
    assert not m.in_compliance
    term = rig.lab.bench.terminal("smu.smua")
    assert term.output_on and term.voltage_v == pytest.approx(V_READ)  # resync left it


def test_k2636b_resync_after_a_timeout(rig):
    smu = rig.smu
    rig.lab.faults("smu").timeout_next()
    with pytest.raises(VisaIOError):
        smu.measure()
    log.info("2636B, next query after a timeout without resync: %r", _attempt(smu.measure))
    smu.resync()
    _smu_ok(rig)
    assert smu.instrument.timeout() == pytest.approx(TIMEOUT_S)  # restored


def test_k2636b_a_late_reply_poisons_the_session_until_resync(rig):
    smu, instr = rig.smu, rig.smu.instrument
    rig.lab.faults("smu").late_next()
    with pytest.raises(VisaIOError):
        instr.ask("localnode.linefreq")  # times out; its reply arrives later
    with instr.timeout.set_to(SLOW_S):
        assert float(instr.ask("localnode.model")) == 60.0  # linefreq answers the next query
    smu.resync()
    assert instr.ask("localnode.model") == "2636B"
    _smu_ok(rig)


def test_k2636b_resync_reconnects_after_a_dropped_connection(rig):
    smu = rig.smu
    old = smu.instrument.visa_handle
    rig.lab.faults("smu").drop_next()
    with pytest.raises((VisaIOError, OSError)):
        smu.measure()
    with pytest.raises((VisaIOError, OSError)):  # the session stays broken
        smu.output_is_on()
        smu.output_is_on()
    smu.resync()
    assert smu.instrument.visa_handle is not old  # a fresh session at the same address
    assert smu.instrument.visa_handle.read_termination == old.read_termination
    assert smu.instrument.timeout() == pytest.approx(TIMEOUT_S)
    _smu_ok(rig)
    smu.set_level(0.1)  # writes work again too
    assert smu.measure().current_a == pytest.approx(0.1 * rig.g[CELL], rel=1e-3)


def test_k2636b_resync_after_a_garbled_reply(rig):
    smu = rig.smu
    rig.lab.faults("smu").garble_next()
    with pytest.raises(ValueError):
        smu.measure()
    smu.resync()
    for _ in range(3):
        _smu_ok(rig)


def test_k2636b_resync_raises_when_the_instrument_is_gone(own_rig):
    own_rig.lab.servers["smu"].stop()
    with pytest.raises(ResyncError, match="smu"):
        own_rig.smu.resync()


# -- Keysight B2201 (QCoDeS over pyvisa-py TCPIP SOCKET) --------------------------------------

CLOSED = {(SMUA_PORT, ROW_LINE), (GND_PORT, COL_LINE)}


def _matrix_ok(rig):
    assert rig.matrix.connections() == CLOSED
    assert rig.lab.emulators["matrix"].closed == CLOSED  # resync left the relays


def test_b2201_resync_after_a_timeout(rig):
    rig.lab.faults("matrix").timeout_next()
    with pytest.raises(VisaIOError):
        rig.matrix.connections()
    log.info(
        "B2201, next query after a timeout without resync: %r", _attempt(rig.matrix.connections)
    )
    rig.matrix.resync()
    _matrix_ok(rig)


def test_b2201_a_late_reply_poisons_the_session_until_resync(rig):
    drv = rig.matrix.driver
    rig.lab.faults("matrix").late_next()
    with pytest.raises(VisaIOError):
        rig.matrix.connections()
    with drv.timeout.set_to(SLOW_S):
        stale = drv.ask("*IDN?")
    assert "B2201" not in stale  # the channel list answered the identity query
    rig.matrix.resync()
    assert "B2201" in drv.ask("*IDN?")
    _matrix_ok(rig)


def test_b2201_resync_reconnects_after_a_dropped_connection(rig):
    rig.lab.faults("matrix").drop_next()
    with pytest.raises((VisaIOError, OSError)):
        rig.matrix.connections()
    rig.matrix.resync()
    _matrix_ok(rig)
    rig.matrix.connect(3, 1)  # a checked write (*CLS, :CLOS, *ESR?) works again
    assert rig.matrix.connections() == CLOSED | {(3, 1)}


def test_b2201_resync_after_a_garbled_reply(rig):
    rig.lab.faults("matrix").garble_next()
    got = _attempt(rig.matrix.connections)
    assert got != CLOSED  # a parse error, or a wrong channel list
    rig.matrix.resync()
    for _ in range(3):
        _matrix_ok(rig)


# -- array board (PyMeasure over pyserial) ----------------------------------------------------


def _board_ok(rig):
    i = rig.board.read_columns([0.1] * ROWS)
    np.testing.assert_allclose(i, np.full(ROWS, 0.1) @ rig.g, rtol=1e-6)


def test_array_board_resync_after_a_timeout(rig):
    rig.lab.faults("board").timeout_next()
    with pytest.raises(TimeoutError):
        rig.board.read_columns([0.1] * ROWS)
    log.info(
        "board, next read after a timeout without resync: %r",
        _attempt(lambda: rig.board.read_columns([0.1] * ROWS)),
    )
    rig.board.resync()
    _board_ok(rig)


def test_array_board_a_late_reply_poisons_the_port_until_resync(rig):
    board = rig.board
    rig.lab.faults("board").late_next()
    with pytest.raises(TimeoutError):
        board.size  # noqa: B018 - a query
    port = board.adapter.connection
    port.timeout, t = SLOW_S, port.timeout
    assert board.ask("*IDN?") == f"{ROWS},{COLS}"  # SIZE?'s late reply
    port.timeout = t
    board.resync()
    assert board.ask("*IDN?").startswith("MEMHIL,ARRAYBOARD,")
    _board_ok(rig)


def test_array_board_resync_reconnects_after_the_device_vanished(rig):
    rig.lab.faults("board").drop_next()
    with pytest.raises(serial.SerialException):
        rig.board.read_columns([0.1] * ROWS)
    with pytest.raises(serial.SerialException):
        rig.board.read_columns([0.1] * ROWS)
    rig.board.resync()
    _board_ok(rig)


def test_array_board_resync_after_a_garbled_reply(rig):
    rig.lab.faults("board").garble_next()
    with pytest.raises(ValueError):
        rig.board.read_columns([0.1] * ROWS)
    rig.board.resync()
    for _ in range(3):
        _board_ok(rig)


def test_array_board_resync_raises_when_the_board_is_gone(own_rig):
    own_rig.lab.faults("own_board").drop_next()
    with pytest.raises(serial.SerialException):
        own_rig.board.read_columns([0.1] * ROWS)
    own_rig.lab.emulators["own_board"].stop()  # unplugged for good: the URL no longer opens
    with pytest.raises(ResyncError, match="board"):
        own_rig.board.resync()


def test_array_board_over_visa_asrl_resync_reconnects(rig):
    """The same board through pyvisa-py's ASRL resource (PyMeasure VISAAdapter)."""
    board = array_board.ArrayBoard(
        "ASRLmemhilboard://board::INSTR", "board_visa", visa_library="@py", timeout=TIMEOUT_S
    )
    try:
        _board_ok(SimpleNamespace(board=board, g=rig.g))
        rig.lab.faults("board").drop_next()
        with pytest.raises((serial.SerialException, VisaIOError)):
            board.read_columns([0.1] * ROWS)
        board.resync()
        _board_ok(SimpleNamespace(board=board, g=rig.g))
    finally:
        board.close()


# -- Velox (PyMeasure over pyvisa-py) ---------------------------------------------------------


def test_velox_resync_reconnects_after_a_dropped_connection(rig):
    # the adapter's own retry resyncs (re-opening the connection) and asks again
    rig.lab.faults("prober").drop_next()
    assert rig.prober.position() == ((0, 0), 0)
    rig.prober.resync()
    assert rig.prober.position() == ((0, 0), 0)
    assert rig.prober.in_contact()  # the chuck did not move


# -- Keithley 2450 (QCoDeS over pyvisa-py TCPIP SOCKET) ---------------------------------------


@pytest.fixture
def k2450_rig():
    """A 2450 wired straight to cell (1, 2) (no matrix), sourcing V_READ, output on."""
    lab = MockLab(
        {
            "chip": {"rows": ROWS, "cols": COLS},
            "limits": {"compliance_max_a": 1e-3},
            "instruments": {
                "k2450": {"type": "keithley2450", "address": "TCPIP0::127.0.0.1::0::SOCKET"}
            },
            "mock": {
                "device": {"model": "neurosim", "c2c_std": 0.0},
                "seed": 3,
                "sneak_paths": False,
                "routes": {"k2450": {"hi": [["row", CELL[0]]], "lo": [["col", CELL[1]]]}},
            },
        }
    ).start()
    smu = None
    try:
        smu = keithley2450.create(lab.address("k2450"), "k2450", visalib="@py", timeout=TIMEOUT_S)
        smu.set_source_mode("voltage")
        smu.set_compliance(1e-4)
        smu.set_level(V_READ)
        smu.output(True)
        with smu.instrument.timeout.set_to(10.0):
            smu.measure()
        yield SimpleNamespace(
            lab=lab, smu=smu, g=lab.chip.sim.true_conductance()[0].double().numpy()
        )
    finally:
        if smu is not None:
            _attempt(smu.close)
        Instrument.close_all()
        lab.stop()


def test_k2450_resync_after_a_late_reply_and_a_dropped_connection(k2450_rig):
    smu, instr, faults = k2450_rig.smu, k2450_rig.smu.instrument, k2450_rig.lab.faults("k2450")

    def ok():
        m = smu.measure()
        assert m.current_a == pytest.approx(V_READ * k2450_rig.g[CELL], rel=1e-3)
        assert m.voltage_v == pytest.approx(V_READ) and smu.output_is_on()

    faults.late_next()
    with pytest.raises(VisaIOError):
        smu.output_is_on()
    with instr.timeout.set_to(SLOW_S):
        assert not instr.ask("*IDN?").startswith("KEITHLEY")  # the late ':OUTP?' reply
    smu.resync()
    ok()
    faults.drop_next()
    with pytest.raises((VisaIOError, OSError)):
        smu.output_is_on()
    smu.resync()
    ok()
