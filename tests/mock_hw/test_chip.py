"""The mock lab's chip model: Kirchhoff on floating lines, sneak paths, half-select
disturb from the device model, the virtual wafer, and the bench's terminal wiring."""

from __future__ import annotations

import pytest
import torch

from memhil.mock_hw.bench import SHORT_PATH_OHM, MockBench
from memhil.mock_hw.chip import MockChip, WaferSpec

QUIET = {"model": "neurosim", "c2c_std": 0.0}


def chip(rows=5, cols=4, sneak=True, **cfg) -> MockChip:
    c = MockChip({"rows": rows, "cols": cols, "device": QUIET, "seed": 2, **cfg}, sneak_paths=sneak)
    counts = torch.randint(0, 25, (1, rows, cols), generator=torch.Generator().manual_seed(0))
    c.sim.pulse(None, 2.0, 80e-9, counts)  # varied conductances
    return c


def test_floating_lines_satisfy_kirchhoff():
    c = chip()
    g = c.sim.true_conductance()[0].double()
    rows, cols = {1: 0.3}, {2: 0.0}
    v_r, v_c = c.node_voltages(rows, cols, g)
    i_cell = g * (v_r[:, None] - v_c[None, :])
    floating_rows = [i for i in range(c.rows) if i not in rows]
    floating_cols = [j for j in range(c.cols) if j not in cols]
    # net current into every floating line is zero, but for the 1e-15 S regularizing leak
    # to ground (<= 1e-15 S * 0.3 V), nine orders below the cell currents (~1e-7 A)
    leak = 1e-15 * 0.3
    assert i_cell[floating_rows].sum(1).abs().max() <= leak
    assert i_cell[:, floating_cols].sum(0).abs().max() <= leak
    # what row 1 sources, column 2 sinks
    i_r, i_c = c.currents(rows, cols)
    assert i_r[1] == pytest.approx(-i_c[2], rel=1e-9)


def test_sneak_paths_inflate_a_floating_read_and_selectors_remove_them():
    sneaky, ideal = chip(), chip(sneak=False)
    g = sneaky.sim.true_conductance()[0, 1, 2].item()
    i_sneaky = sneaky.currents({1: 0.2}, {2: 0.0})[0][1]
    i_ideal = ideal.currents({1: 0.2}, {2: 0.0})[0][1]
    assert i_ideal == pytest.approx(0.2 * g, rel=1e-6)
    assert i_sneaky > 1.2 * i_ideal  # parallel paths through unselected cells


def test_grounded_unselected_lines_read_the_cell_exactly():
    c = chip()
    g = c.sim.true_conductance()[0].double()
    rows = {i: (0.2 if i == 1 else 0.0) for i in range(c.rows)}
    cols = {j: 0.0 for j in range(c.cols)}
    _, i_c = c.currents(rows, cols)
    assert -i_c[2] == pytest.approx(0.2 * float(g[1, 2]), rel=1e-6)


def test_v_half_write_disturbs_half_selected_cells_by_the_model():
    # NeuroSim's threshold is 1.5 V: a 2.4 V write puts 1.2 V (below) on half-selected
    # cells, a 3.4 V write puts 1.7 V (above) on them: the model decides, not the chip.
    for v, disturbed in ((2.4, False), (3.4, True)):
        c = chip()
        g0 = c.sim.true_conductance()[0]
        rows = {i: (v if i == 1 else v / 2) for i in range(c.rows)}
        cols = {j: (0.0 if j == 2 else v / 2) for j in range(c.cols)}
        c.hold(rows, cols, 80e-9)
        g1 = c.sim.true_conductance()[0]
        assert g1[1, 2] > g0[1, 2]  # the selected cell switched
        half = torch.zeros_like(g0, dtype=torch.bool)
        half[1, :], half[:, 2] = True, True
        half[1, 2] = False
        assert bool((g1[half] != g0[half]).any()) == disturbed
        assert torch.equal(
            g1[~half & ~(torch.arange(c.rows)[:, None] == 1)],
            g0[~half & ~(torch.arange(c.rows)[:, None] == 1)],
        )


def test_hold_advances_the_virtual_clock():
    c = chip()
    t0 = c.clock.now()
    c.hold({0: 0.1}, {0: 0.0}, 2.5)
    assert c.clock.now() - t0 == pytest.approx(2.5)


def test_each_die_is_its_own_array_with_its_overrides():
    wafer = WaferSpec(dies=((0, 0), (1, 0), (2, 0)), die_overrides={"2,0": {"g_max_s": 2e-5}})
    c = MockChip({"rows": 3, "cols": 3, "device": QUIET}, wafer=wafer)
    c.sim.pulse(None, 2.0, 80e-9, 40)
    g00 = c.sim.true_conductance()
    c.select_die((2, 0))
    c.sim.pulse(None, 2.0, 80e-9, 40)
    assert c.sim.true_conductance().mean() > 1.5 * g00.mean()  # larger G_max on die (2, 0)
    c.select_die((0, 0))
    assert torch.equal(c.sim.true_conductance(), g00)  # dies keep their own state
    with pytest.raises(ValueError, match="not on the wafer"):
        c.select_die((5, 5))


def test_bench_combines_terminals_and_shorts_them_through_the_path_resistance():
    c = chip()
    routes = {"a.smua": ([("row", 1)], [("col", 2)]), "a.smub": ([("row", 1)], [])}
    bench = MockBench(c, lambda key: routes.get(key, ([], [])))
    ta = bench.terminal("a.smua")
    ta.output_on, ta.voltage_v = True, 0.2
    i = bench.current("a.smua")
    assert i == pytest.approx(c.currents({1: 0.2}, {2: 0.0})[0][1])
    tb = bench.terminal("a.smub")
    tb.output_on, tb.voltage_v = True, 0.1
    # two sources on one line: a short through the matrix, the line midway between them
    i_row = c.currents({1: 0.15}, {2: 0.0})[0][1]
    assert bench.current("a.smua") == pytest.approx(i_row + 0.05 / SHORT_PATH_OHM)
    rows, cols = bench.drive()
    assert rows == {1: pytest.approx(0.15)} and cols == {2: 0.0}
    tb.output_on = False
    assert bench.current("a.smub") == 0.0
    bench.all_off()
    assert bench.current("a.smua") == 0.0
