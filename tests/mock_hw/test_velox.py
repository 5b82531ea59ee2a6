"""PyMeasure's unmodified FormFactor Velox driver over pyvisa-py to the Velox emulator, and
the memhil Prober adapter over it: stepping a 3-die wafer map, the in-contact interlock,
per-die devices, the end of the map (703) and lost probe contact."""

from __future__ import annotations

import numpy as np
import pytest
from pymeasure.instruments.formfactor.velox import Velox

from memhil.instruments.adapters.velox import ProberInterlockError, VeloxProber
from memhil.instruments.array_board import ArrayBoard
from memhil.instruments.capabilities import Prober
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip, WaferSpec
from memhil.mock_hw.emulators.array_board import ArrayBoardEmulator
from memhil.mock_hw.emulators.b220x import B220xEmulator
from memhil.mock_hw.emulators.velox import VeloxEmulator

DIES = ((0, 0), (1, 0), (1, 1))
# HP devices start at x0 = 0.1: G ~ 1 / (0.9 R_off); die (1, 0) has half the R_off,
# die (1, 1) a quarter: 2x and 4x the conductance.
OVERRIDES = {"1,0": {"r_off_ohm": 8e3}, "1,1": {"r_off_ohm": 4e3}}


@pytest.fixture
def lab():
    chip = MockChip(
        {
            "rows": 4,
            "cols": 4,
            "device": {"model": "hp", "dx_std": 0.0},
            "read": {"read_noise_rel": 0.002},
        },
        wafer=WaferSpec(dies=DIES, die_overrides=OVERRIDES),
    )
    emu = VeloxEmulator(chip, subsites=2).start()
    board_emu = ArrayBoardEmulator(chip, "velox-test-board", probe=emu).start()
    velox = board = None
    try:
        velox = Velox(
            emu.resource_name,
            visa_library="@py",
            read_termination="\n",
            write_termination="\n",
            timeout=2000,
        )
        board = ArrayBoard(board_emu.url, timeout=2.0)
        yield chip, emu, velox, board
    finally:
        if board is not None:
            board.close()
        if velox is not None:
            velox.adapter.close()
        board_emu.stop()
        emu.stop()


def test_driver_identity_and_map_application(lab):
    _chip, _emu, velox, _ = lab
    assert velox.id.startswith("FormFactor,Velox")
    assert "3.7.0" in velox.version
    assert velox.wafermap.enabled is True
    assert velox.chuck.index == [5000.0, 5000.0]
    velox.chuck.index = (4000, 3000)
    assert velox.chuck.index == [4000.0, 3000.0]


def test_stepping_across_the_map_selects_each_die_until_703(lab):
    chip, emu, velox, _ = lab
    t0 = chip.clock.now()
    assert velox.wafermap.step_first_die() == [0, 0, 0, 2]
    assert chip.die == (0, 0)
    seen = [chip.die]
    while True:
        reply = velox.wafermap.step_next_die()
        if velox.wafermap.end_reached:  # 703: a status, not an exception
            assert velox.error_code == 703
            break
        assert reply[:2] == list(chip.die)
        seen.append(chip.die)
    assert seen == list(DIES)
    assert chip.die == (1, 1)  # stays on the last die
    assert chip.clock.now() > t0  # moves take (virtual) time
    velox.wafermap.step_to_die(1, 0, 1)  # explicit die and subsite
    assert (chip.die, emu.site) == ((1, 0), 1)
    with pytest.raises(ConnectionError, match="701"):
        velox.wafermap.step_to_die(5, 5)  # not on the map
    assert not velox.wafermap.end_reached


def test_station_refuses_moves_in_contact_and_adapter_interlocks(lab):
    chip, emu, velox, _ = lab
    velox.wafermap.step_first_die()
    velox.chuck.move_contact()
    assert emu.in_contact
    for move in (
        lambda: velox.wafermap.step_next_die(),
        lambda: velox.wafermap.step_to_die(1, 1),
        lambda: velox.chuck.move_index(1, 0, "home"),
        lambda: velox.chuck.move(100, 0, "home"),
    ):
        with pytest.raises(ConnectionError, match="705"):
            move()
        assert chip.die == (0, 0)

    prober = VeloxProber(velox)
    assert isinstance(prober, Prober)
    prober.load_map(DIES, subsites=2)
    assert prober.in_contact()
    sent = emu.server.transactions
    with pytest.raises(ProberInterlockError):
        prober.step_to((1, 0))
    # only the height queries went out: no move command reached the station
    assert emu.server.transactions - sent == 2
    assert chip.die == (0, 0)
    prober.safe_state()
    assert not prober.in_contact() and not emu.in_contact
    prober.step_to((1, 1), 1)
    assert prober.position() == ((1, 1), 1) and chip.die == (1, 1)
    with pytest.raises(ValueError):
        prober.step_to((3, 3))  # not in the loaded map: nothing sent


def test_each_die_has_its_own_devices(lab):
    chip, _emu, velox, board = lab
    prober = VeloxProber(velox)
    prober.load_map(DIES)
    v = np.full(4, 0.1)
    mean_g = {}
    for die in DIES:
        prober.step_to(die)
        prober.contact()
        mean_g[die] = float(board.read_columns(v).sum() / (0.1 * 16))
        prober.separate()
        r_off = {"0,0": 16e3, **{k: o["r_off_ohm"] for k, o in OVERRIDES.items()}}[
            f"{die[0]},{die[1]}"
        ]
        assert chip.sim.model.p.r_off_ohm == r_off
        # x0 = 0.1, R_on << R_off: G ~ 1 / (0.1 R_on + 0.9 R_off), 5 % D2D spread
        assert mean_g[die] == pytest.approx(1 / (0.1 * 100 + 0.9 * r_off), rel=0.05)
    assert mean_g[(1, 0)] == pytest.approx(2 * mean_g[(0, 0)], rel=0.1)
    assert mean_g[(1, 1)] == pytest.approx(4 * mean_g[(0, 0)], rel=0.1)


def test_end_of_map_through_the_adapter(lab):
    _chip, _emu, velox, _ = lab
    prober = VeloxProber(velox)
    assert prober.step_first() == (0, 0)
    assert prober.step_next() == (1, 0)
    assert prober.step_next() == (1, 1)
    assert prober.step_next() is None  # 703
    assert velox.wafermap.end_reached
    assert prober.position() == ((1, 1), 0)


def test_lost_contact_is_detected_and_terminals_read_open(lab):
    chip, emu, velox, board = lab
    v = np.full(4, 0.1)

    def continuity() -> bool:  # a small read through the array board
        return float(np.abs(board.read_columns(v)).sum()) > 1e-9

    prober = VeloxProber(velox, continuity=continuity)
    prober.load_map(DIES)
    prober.step_to((0, 0))
    assert not prober.contact_ok()  # separated: no contact
    assert np.all(board.read_columns(v) == 0.0)  # the board reaches nothing
    prober.contact()
    assert prober.contact_ok()
    assert np.all(board.read_columns(v) > 0)

    emu.lose_contact()  # needles lift off the pads
    assert prober.in_contact()  # the station cannot tell...
    assert not prober.contact_ok()  # ...the continuity check can
    assert np.all(board.read_columns(v) == 0.0)
    # a matrix behind the same probes routes nothing either: the bench reads open
    bench = MockBench(chip)
    matrix = B220xEmulator(
        bench,
        {"ports": {"smu.smua": 1}, "ground": [12], "rows": [1, 2, 3, 4], "cols": [5, 6, 7, 8]},
        probe=emu,
    )
    matrix.closed |= {(1, 1), (12, 5)}
    term = bench.terminal("smu.smua")
    term.output_on, term.voltage_v = True, 0.1
    assert bench.current("smu.smua") == 0.0

    prober.separate()  # a fresh touchdown clears it
    prober.contact()
    assert prober.contact_ok()
    assert bench.current("smu.smua") > 0.0

    emu.lose_contact(persistent=True)  # contaminated pads: stays lost
    prober.separate()
    prober.contact()
    assert not prober.contact_ok()
    emu.restore_contact()
    assert prober.contact_ok()
    prober.safe_state()
    assert not emu.in_contact


def test_status_replies_and_subsite_moves_follow_the_sci_command_list():
    """ReadChuckStatus has 11 fields (PresetHeight 7th), ReadProberStatus 4 (FlagsContact
    2nd); MoveChuckSubsite takes X Y Unit Velocity; jog and encoder units are refused."""
    chip = MockChip({"rows": 2, "cols": 2, "device": "hp"}, wafer=WaferSpec(dies=DIES))
    emu = VeloxEmulator(chip)  # its command handler alone: no socket needed
    assert emu.handle("StepFirstDie") == "0: 0 0 0 1"
    status = emu.handle("ReadChuckStatus").split()
    assert status[0] == "0:" and len(status) == 12 and status[7] == "S"
    assert emu.handle("ReadProberStatus") == "0: 0 0 L 0"
    assert emu.handle("MoveChuckSubsite 4 2 I 50") == "0:"  # mils, 50 % velocity
    assert emu.handle("ReadChuckPosition") == "0: 101.6 50.8 9700.0"
    assert emu.handle("MoveChuckSubsite 0 0") == "0:"  # back to the die's home
    assert emu.handle("MoveChuckContact") == "0:"
    assert emu.handle("ReadChuckStatus").split()[7] == "C"
    assert emu.handle("ReadProberStatus") == "0: 0 1 L 0"
    assert emu.handle("MoveChuckSubsite 10 10 Y").startswith("705:")  # in contact
    emu.handle("MoveChuckSeparation")
    for unit in ("J", "E"):
        assert emu.handle(f"MoveChuck 1 1 R {unit}") == f"2: Unit {unit} not supported"
