"""The unmodified QCoDeS KeysightB2201 over pyvisa-py to the B220x emulator, routing bench
terminals onto the mock chip: cell reads, floating vs V/2 reads with sneak paths, V/2
write disturb, stuck relays, the driver's bias mode, and the SwitchMatrix adapter.

Terminals are driven through the bench directly (``bench.terminal(key)``): the SMU
emulators are not needed to test the matrix.

V/2 read scheme used here (``v_half_read``): the selected row i on smua, the selected
column j on smuc held at 0 V (an SMU at 0 V is the ammeter), every other row and column
on smub at V/2. The current into column j is then g_ij * V(row i) plus the currents of
the half-selected cells (i', j) at V/2. Taking it twice, with row i at V and at V/2, and
subtracting cancels the half-selected cells: g_ij = (I(V) - I(V/2)) / (V/2). Every line
is driven, so no current sneaks through unselected cells.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from memhil.instruments.adapters.b220x import B220xMatrix, SwitchMatrixError
from memhil.instruments.capabilities import SwitchMatrix
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.b220x import B220xEmulator

R = C = 8
V_READ = 0.2
SMUA, SMUB, SMUC, GND = 1, 2, 3, 12
WIRING = {
    "ports": {"smu.smua": SMUA, "smu.smub": SMUB, "smu.smuc": SMUC},
    "ground": [GND],
    "rows": list(range(1, R + 1)),  # outputs 1..8
    "cols": list(range(R + 1, R + C + 1)),
}  # outputs 9..16
ROW = WIRING["rows"]
COL = WIRING["cols"]
_names = itertools.count()


def make_chip(*, sneak: bool = True, noise: float = 0.005, seed: int = 3) -> MockChip:
    """An 8 x 8 HP ion-drift array (ohmic, deterministic writes) with random states."""
    chip = MockChip(
        {
            "rows": R,
            "cols": C,
            "device": {"model": "hp", "dx_std": 0.0},
            "seed": seed,
            "dtype": "float64",
            "read": {"read_noise_rel": noise},
        },
        sneak_paths=sneak,
    )
    amp = 3.0 * torch.rand(
        (1, R, C), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    chip.sim.pulse(None, amp, 0.2, 1)  # x spread over ~[0.1, 0.75]: G 65..330 uS
    return chip


class Lab:
    def __init__(self, chip: MockChip):
        self.chip = chip
        self.bench = MockBench(chip)
        self.emu = B220xEmulator(self.bench, WIRING).start()
        try:
            self.matrix = B220xMatrix(
                self.emu.resource_name, name=f"b2201_{next(_names)}", visalib="@py"
            )
        except Exception:
            self.emu.stop()
            raise
        self.driver = self.matrix.driver

    def close(self) -> None:
        try:
            self.matrix.close()
        finally:
            self.emu.stop()

    def term(self, key: str, v: float | None) -> None:
        t = self.bench.terminal(key)
        t.output_on = v is not None
        t.voltage_v = 0.0 if v is None else v

    def floating_read(self, i: int, j: int, v: float = V_READ) -> float:
        """smua HI on row i, column j to ground (LO), everything else open."""
        self.matrix.open_all()
        self.matrix.connect_many([(SMUA, ROW[i]), (GND, COL[j])])
        self.term("smu.smua", v)
        self.term("smu.smub", None)
        self.term("smu.smuc", None)
        return self.bench.current("smu.smua") / v

    def v_half_routes(self, i: int, j: int) -> list[tuple[int, int]]:
        others = [(SMUB, ROW[k]) for k in range(R) if k != i]
        others += [(SMUB, COL[k]) for k in range(C) if k != j]
        return [(SMUA, ROW[i]), (SMUC, COL[j]), *others]

    def v_half_read(self, i: int, j: int, v: float = V_READ) -> float:
        self.matrix.open_all()
        self.matrix.connect_many(self.v_half_routes(i, j))
        self.term("smu.smub", v / 2)
        self.term("smu.smuc", 0.0)
        self.term("smu.smua", v)
        i_full = -self.bench.current("smu.smuc")  # current into column j's ammeter
        self.term("smu.smua", v / 2)
        i_half = -self.bench.current("smu.smuc")
        return (i_full - i_half) / (v / 2)


@pytest.fixture
def lab():
    labs: list[Lab] = []

    def make(**kw) -> Lab:
        labs.append(Lab(make_chip(**kw)))
        return labs[-1]

    yield make
    for lb in labs:
        lb.close()


def test_driver_init_and_connections_round_trip(lab):
    lb = lab()
    assert isinstance(lb.matrix, SwitchMatrix)
    assert lb.driver.IDN()["model"] == "B2201A"
    lb.driver.connect(SMUA, ROW[2])
    lb.driver.connect_paths([(GND, COL[5]), (SMUB, ROW[0])])
    assert lb.driver.connections() == {(SMUA, ROW[2]), (GND, COL[5]), (SMUB, ROW[0])}
    assert lb.emu.closed == {(SMUA, ROW[2]), (GND, COL[5]), (SMUB, ROW[0])}
    lb.driver.disconnect(SMUA, ROW[2])
    assert lb.matrix.connections() == {(GND, COL[5]), (SMUB, ROW[0])}
    assert lb.driver.get_error() == '+0,"No error"'
    with pytest.warns(UserWarning, match="existing connections are not released"):
        lb.driver.connection_rule("single")
    assert lb.driver.connection_rule() == "single"
    lb.driver.connect(SMUB, ROW[1])  # single route: replaces (SMUB, ROW[0])
    assert lb.matrix.connections() == {(GND, COL[5]), (SMUB, ROW[1])}
    with pytest.raises(SwitchMatrixError, match="Single route"):
        lb.matrix.connect_many([(SMUA, ROW[3]), (SMUA, COL[1])])  # one input, two outputs
    lb.driver.connection_rule("free")
    lb.driver.connection_sequence("mbb")
    assert lb.driver.connection_sequence() == "mbb"
    lb.driver.disconnect_all()
    assert lb.matrix.connections() == set()
    # the route the bench sees follows the relays
    lb.matrix.connect_many([(SMUA, ROW[3]), (SMUA, COL[1]), (GND, COL[4])])
    assert lb.emu.route("smu.smua") == ([("row", 3), ("col", 1)], [("col", 4)])
    assert lb.emu.route("smu.smub") == ([], [("col", 4)])


def test_cell_read_through_the_matrix_matches_the_true_conductance():
    chip = make_chip(sneak=False)  # ideal selectors: a floating read sees only the cell
    lb = Lab(chip)
    try:
        g_true = chip.sim.true_conductance()[0].numpy()
        for i, j in [(0, 0), (2, 5), (7, 7), (4, 1)]:
            g = lb.floating_read(i, j)
            assert g == pytest.approx(g_true[i, j], rel=5 * 0.005)  # 5 sigma of read noise
        lb.matrix.open_all()
        assert lb.bench.current("smu.smua") == 0.0  # no route: open circuit
    finally:
        lb.close()


def test_v_half_read_beats_the_floating_read_with_sneak_paths(lab):
    lb = lab(sneak=True)
    g_true = lb.chip.sim.true_conductance()[0].numpy()
    floating = np.array([[lb.floating_read(i, j) for j in range(C)] for i in range(R)])
    v_half = np.array([[lb.v_half_read(i, j) for j in range(C)] for i in range(R)])

    def rms_rel(g):
        return float(np.sqrt(np.mean(((g - g_true) / g_true) ** 2)))

    err_floating, err_v_half = rms_rel(floating), rms_rel(v_half)
    # sneak paths only ever add current to a floating read
    assert (floating > g_true).all()
    assert err_floating > 1.0  # measured ~3.7 (368 %)
    assert err_v_half < 0.06  # read noise only (~0.03)
    assert err_v_half < err_floating / 20
    # every single cell is closer with V/2
    assert (np.abs(v_half - g_true) < np.abs(floating - g_true)).all()


def test_driver_bias_mode_gives_the_same_v_half_drive(lab):
    """The B2200 bias mode ties every unused output to the bias port: the same V/2 drive
    as routing smub to each unselected line explicitly."""
    lb = lab(noise=0.0)
    i, j = 3, 6
    explicit = lb.v_half_read(i, j)
    lb.matrix.open_all()
    lb.driver.bias_input_port(SMUB)
    lb.driver.bias_enable_all_outputs()
    lb.driver.bias_mode(True)
    lb.matrix.connect_many([(SMUA, ROW[i]), (SMUC, COL[j])])
    hi, _ = lb.emu.route("smu.smub")
    assert len(hi) == R + C - 2
    lb.term("smu.smua", V_READ)
    i_full = -lb.bench.current("smu.smuc")
    lb.term("smu.smua", V_READ / 2)
    i_half = -lb.bench.current("smu.smuc")
    assert (i_full - i_half) / (V_READ / 2) == pytest.approx(explicit, rel=1e-9)
    # the bias port cannot be switched while bias mode is on: the adapter raises
    with pytest.raises(SwitchMatrixError, match="Bias"):
        lb.matrix.connect(SMUB, ROW[0])
    lb.matrix.safe_state()
    assert lb.emu.physical_connections() == set()


def test_v_half_pulse_disturbs_half_selected_cells_by_the_model(lab):
    lb = lab(noise=0.001)
    chip = lb.chip
    i, j, amp, width = 2, 5, 2.0, 0.05
    reference = make_chip(noise=0.001).sim  # the same devices (same seeds), stepped directly
    np.testing.assert_array_equal(reference.true_conductance(), chip.sim.true_conductance())
    g0 = chip.sim.true_conductance()[0].numpy()
    half = [(i, k) for k in range(C) if k != j] + [(k, j) for k in range(R) if k != i]
    measured0 = {c: lb.v_half_read(*c) for c in [(i, j), *half]}

    lb.matrix.open_all()
    lb.matrix.connect_many(
        [(SMUA, ROW[i]), (GND, COL[j])]
        + [(SMUB, ROW[k]) for k in range(R) if k != i]
        + [(SMUB, COL[k]) for k in range(C) if k != j]
    )
    lb.term("smu.smuc", None)
    lb.term("smu.smub", amp / 2)
    lb.term("smu.smua", amp)
    t0 = chip.clock.now()
    lb.bench.hold(width)
    assert chip.clock.now() == pytest.approx(t0 + width)
    lb.bench.all_off()

    v = torch.zeros((1, R, C), dtype=torch.float64)
    v[0, i, :] = amp / 2
    v[0, :, j] = amp / 2
    v[0, i, j] = amp
    reference.pulse(None, v, width, 1)
    g1 = chip.sim.true_conductance()[0].numpy()
    g_model = reference.true_conductance()[0].numpy()
    np.testing.assert_allclose(g1, g_model, rtol=1e-9)  # the chip follows the model

    dg = g1 - g0
    unselected = np.ones((R, C), bool)
    unselected[i, :] = unselected[:, j] = False
    assert (dg[unselected] == 0).all()  # 0 V: untouched
    assert dg[i, j] > 0
    assert all(dg[c] > 0 for c in half)  # V/2 disturbs (no threshold)
    # measured (V/2 reads before/after) vs model change of every half-selected cell
    for c in half:
        measured = lb.v_half_read(*c) - measured0[c]
        assert measured == pytest.approx(g_model[c] - g0[c], rel=0.2, abs=2e-6)


def test_stuck_relays_ignore_commands_and_are_found_electrically(lab):
    lb = lab(noise=0.0)
    # stuck open: the instrument reports the relay closed, but row 1 floats
    lb.emu.stuck_open(SMUA, ROW[1])
    lb.matrix.connect_many([(SMUA, ROW[1]), (GND, COL[0])])
    assert (SMUA, ROW[1]) in lb.matrix.connections()
    lb.term("smu.smua", V_READ)
    assert lb.bench.current("smu.smua") == 0.0
    lb.emu.release(SMUA, ROW[1])
    assert lb.bench.current("smu.smua") > 0.0

    # stuck closed: open_all reports nothing closed, yet smub still reaches row 4
    lb.emu.stuck_closed(SMUB, ROW[4])
    lb.matrix.open_all()
    assert lb.matrix.connections() == set()
    assert lb.emu.route("smu.smub") == ([("row", 4)], [])
    lb.matrix.connect(GND, COL[2])
    lb.term("smu.smua", None)
    lb.term("smu.smub", 0.1)  # smub is routed nowhere, yet it conducts:
    g_true = lb.chip.sim.true_conductance()[0].numpy()
    i_b = lb.bench.current("smu.smub")  # row 4 -> column 2 (ground), plus sneak paths
    assert i_b >= 0.1 * g_true[4, 2] * (1 - 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lb.matrix.disconnect(SMUB, ROW[4])  # the command is accepted...
    assert lb.emu.route("smu.smub")[0] == [("row", 4)]  # ...and ignored by the relay


def test_matrix_errors_reach_the_queue_and_the_status_byte(lab):
    lb = lab()
    lb.driver.write(":CLOS (@01599)")  # input 15 does not exist
    assert int(lb.driver.get_status()) & 16
    assert lb.driver.get_error().startswith("-222")
    assert lb.driver.get_error() == '+0,"No error"'
    lb.driver.write(":FROB 0")
    assert lb.driver.get_error().startswith("-113")  # undefined header (SCPI-1999 21.8.9)
    with pytest.raises(ValueError):  # the driver validates before sending
        lb.matrix.connect(15, 1)
    assert lb.emu.closed == set()


def test_the_manuals_route_prefixed_forms_open_card_all_and_self_test(lab):
    """B2200A/B2201A User's Guide, SCPI command reference: every relay command sits under
    ``[:ROUTe]``; ``:OPEN:CARD`` takes a card number or ALL; ``*TST?`` answers 0 on a pass."""
    lb = lab()
    lb.driver.write(":ROUT:CLOS (@10109,10210)")
    assert lb.driver.ask(":ROUT:CLOS? (@10109,10210,10311)") == "1,1,0"
    assert lb.driver.ask(":ROUTE:CONN:RULE? 1") == "FREE"
    lb.driver.write(":ROUT:OPEN:CARD ALL")
    assert lb.driver.ask("*OPC?") == "1"  # the write has been handled
    assert lb.emu.closed == set()
    assert lb.driver.ask("*TST?") == "0"
    lb.driver.write(":ROUT:FROB")
    assert int(lb.driver.ask("*STB?")) & 4  # error available
    assert lb.driver.get_error().startswith("-113")
    assert lb.driver.get_error() == '+0,"No error"'
