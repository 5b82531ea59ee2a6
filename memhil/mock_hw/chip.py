"""The device under test behind every emulator of a mock lab: one crossbar of simulator
devices, one virtual clock, a virtual wafer of dies.

Instruments act on the chip through its lines. A *drive* maps line indices to the
voltage an instrument holds them at; every other line floats. The chip solves the
passive network (floating lines settle where Kirchhoff's current law holds, so sneak
paths through unselected cells are real), returns the current each driven line sources,
and, while a drive is held, every cell sees its own row-minus-column voltage: the
selected cell switches and half-selected cells are disturbed by whatever the device
model does at that voltage. Physics comes from ``memhil.backends.sim``; nothing here
re-implements a device law.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from memhil.backends.clock import VirtualClock
from memhil.backends.sim import SimBackend

Drive = Mapping[int, float]

# Floating lines reach ground only through this leakage (S): it keeps the nodal system
# regular when a floating line touches no driven line, and is far below any device.
_LEAK_S = 1e-15

# The chip's own simulator has no safety limits of its own: the bench's guard is in the
# instrument layer, and physics must follow whatever reaches the pins.
_PHYSICS_LIMITS = {
    "v_pulse_max_v": 1e3,
    "v_read_max_v": 1e3,
    "width_min_s": 1e-15,
    "width_max_s": 1e9,
    "compliance_max_a": 1e3,
    "compliance_default_a": 1e3,
    "count_max": 10**9,
}


@dataclass(frozen=True)
class Applied:
    """One drive the chip received (``MockChip.applied`` records them): ``kind`` "dc" (a
    level solved by ``currents``: a read, or a source trying a level) or "hold" (a pulse);
    ``v_cell`` every cell's row-minus-column voltage (V, float64); ``duration_s``,
    ``count``, the per-cell ``compliance_a`` and each cell's |current| (A, at the chord
    conductance, before any compliance) of a hold."""

    kind: str
    v_cell: Tensor
    duration_s: float = 0.0
    count: int = 0
    compliance_a: float | None = None
    current_a: Tensor | None = None


@dataclass(frozen=True)
class WaferSpec:
    """Dies of a virtual wafer: each die is its own array, seeded from its position, with
    optional device-parameter overrides per die (key ``"col,row"``)."""

    dies: tuple[tuple[int, int], ...] = ((0, 0),)
    die_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def key(self, die: tuple[int, int]) -> str:
        return f"{die[0]},{die[1]}"


class MockChip:
    """A ``rows x cols`` passive crossbar (one tile) of simulator devices on a virtual wafer.

    ``sim_config`` is a SimBackend configuration (device model, read noise, faults, seed);
    ``sneak_paths=False`` models an array with ideal selectors (only cells between two
    driven lines conduct). Thread-safe: emulators call it from their server threads.
    """

    def __init__(
        self,
        sim_config: Mapping[str, Any],
        *,
        clock: VirtualClock | None = None,
        wafer: WaferSpec | None = None,
        sneak_paths: bool = True,
    ):
        cfg = dict(sim_config)
        if cfg.get("tiles", 1) != 1:
            raise ValueError(f"a mock chip is one array (tiles=1), got tiles={cfg['tiles']}")
        self._base = cfg
        self.clock = clock or VirtualClock()
        self.wafer = wafer or WaferSpec()
        self.sneak_paths = sneak_paths
        # a list to record every drive into (``Applied``), None: not recorded; for tests
        # that check what reached the cells
        self.applied: list[Applied] | None = None
        self.lock = threading.RLock()
        self._dies: dict[tuple[int, int], SimBackend] = {}
        self.die = self.wafer.dies[0]
        self.rows = int(cfg.get("rows", 64))
        self.cols = int(cfg.get("cols", 64))

    # -- the wafer ------------------------------------------------------------------------
    @property
    def sim(self) -> SimBackend:
        """The simulator array of the die under the probes."""
        with self.lock:
            if self.die not in self._dies:
                self._dies[self.die] = self._make_die(self.die)
            return self._dies[self.die]

    def _make_die(self, die: tuple[int, int]) -> SimBackend:
        cfg = dict(self._base)
        base_seed = int(cfg.get("seed", 0))
        cfg["seed"] = base_seed * 1000 + 31 * die[0] + die[1] + 1
        device = cfg.get("device", "pcm")
        if isinstance(device, str) and device.endswith((".yaml", ".yml")):
            from memhil.core.config import load_yaml  # a parameter file, e.g. a fitted model

            device = load_yaml(device)
        device = {"model": device} if isinstance(device, str) else dict(device)
        override = dict(self.wafer.die_overrides.get(self.wafer.key(die), {}))
        # an override naming a model replaces the device (a split wafer); else it adjusts it
        device = override if "model" in override else {**device, **override}
        cfg["device"] = device
        cfg["limits"] = _PHYSICS_LIMITS
        return SimBackend(cfg, clock=self.clock)

    def select_die(self, die: tuple[int, int]) -> None:
        if die not in self.wafer.dies:
            raise ValueError(f"die {die} is not on the wafer map {list(self.wafer.dies)}")
        with self.lock:
            self.die = die

    # -- electrical network -------------------------------------------------------------
    def node_voltages(
        self, rows: Drive, cols: Drive, g: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Row and column line voltages (V) with ``rows``/``cols`` driven and the rest
        floating; floating lines follow from Kirchhoff's current law (sneak paths)."""
        if g is None:
            g = self.sim.sample_conductance()[0].double()
        v_r = torch.zeros(self.rows, dtype=torch.float64)
        v_c = torch.zeros(self.cols, dtype=torch.float64)
        for i, v in rows.items():
            v_r[self._check(i, self.rows, "row")] = v
        for j, v in cols.items():
            v_c[self._check(j, self.cols, "column")] = v
        if not self.sneak_paths:
            return v_r, v_c
        fr = torch.tensor([i for i in range(self.rows) if i not in rows], dtype=torch.long)
        fc = torch.tensor([j for j in range(self.cols) if j not in cols], dtype=torch.long)
        n_r, n_c = len(fr), len(fc)
        if n_r + n_c == 0:
            return v_r, v_c
        dr = torch.tensor(sorted(rows), dtype=torch.long)
        dc = torch.tensor(sorted(cols), dtype=torch.long)
        # Unknowns: floating row voltages, then floating column voltages.
        a = torch.zeros(n_r + n_c, n_r + n_c, dtype=torch.float64)
        b = torch.zeros(n_r + n_c, dtype=torch.float64)
        g_rr = g[fr][:, fc]  # floating row <-> floating col
        a[:n_r, :n_r] = torch.diag(g[fr].sum(1) + _LEAK_S)
        a[n_r:, n_r:] = torch.diag(g[:, fc].sum(0) + _LEAK_S)
        a[:n_r, n_r:] = -g_rr
        a[n_r:, :n_r] = -g_rr.t()
        if len(dc):
            b[:n_r] = g[fr][:, dc] @ v_c[dc]
        if len(dr):
            b[n_r:] = g[dr][:, fc].t() @ v_r[dr]
        x = torch.linalg.solve(a, b)
        v_r[fr], v_c[fc] = x[:n_r], x[n_r:]
        return v_r, v_c

    def currents(self, rows: Drive, cols: Drive) -> tuple[dict[int, float], dict[int, float]]:
        """Current (A) each driven row and column sources into the array, at the cells'
        chord conductance for the voltage they actually see (two fixed-point passes for
        nonlinear I-V)."""
        with self.lock:
            sim = self.sim
            g = sim.sample_conductance()[0].double()
            for _ in range(2):
                v_r, v_c = self.node_voltages(rows, cols, g)
                v_cell = v_r[:, None] - v_c[None, :]
                g = sim.sample_conductance(v_cell.to(sim.dtype).unsqueeze(0))[0].double()
            v_r, v_c = self.node_voltages(rows, cols, g)
            i_cell = g * (v_r[:, None] - v_c[None, :])
            if self.applied is not None:
                self.applied.append(Applied("dc", (v_r[:, None] - v_c[None, :]).clone()))
            if not self.sneak_paths:
                on = torch.zeros_like(i_cell, dtype=torch.bool)
                if rows and cols:
                    on[torch.tensor(sorted(rows))[:, None], torch.tensor(sorted(cols))[None, :]] = (
                        True
                    )
                i_cell = torch.where(on, i_cell, torch.zeros_like(i_cell))
            return (
                {i: float(i_cell[i].sum()) for i in rows},
                {j: float(-i_cell[:, j].sum()) for j in cols},
            )

    def hold(
        self,
        rows: Drive,
        cols: Drive,
        duration_s: float,
        count: int = 1,
        *,
        compliance_a: float | None = None,
    ) -> None:
        """Hold the drive for ``duration_s`` (``count`` times): every cell is pulsed with
        its own row-minus-column voltage, and the virtual clock advances. ``compliance_a``
        (A): a per-cell current limit (the simulator lowers a cell's voltage to I_c / G at
        the start of each pulse); None: none."""
        if duration_s <= 0 or count <= 0:
            return
        with self.lock:
            v_r, v_c = self.node_voltages(rows, cols)
            v_cell = (v_r[:, None] - v_c[None, :]).to(self.sim.dtype)
            if not self.sneak_paths:
                mask = torch.zeros(self.rows, self.cols, dtype=torch.bool)
                for i in rows:
                    for j in cols:
                        mask[i, j] = True
                v_cell = torch.where(mask, v_cell, torch.zeros_like(v_cell))
            if self.applied is not None:
                g = self.sim.sample_conductance(v_cell.unsqueeze(0))[0].double()
                self.applied.append(
                    Applied(
                        "hold",
                        v_cell.double().clone(),
                        float(duration_s),
                        int(count),
                        compliance_a,
                        (g * v_cell.double()).abs(),
                    )
                )
            if bool((v_cell != 0).any()):
                self.sim.pulse(
                    None, v_cell.unsqueeze(0), duration_s, count, compliance_a=compliance_a
                )
            else:
                self.clock.advance(duration_s * count)

    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @staticmethod
    def _check(index: int, size: int, what: str) -> int:
        if not 0 <= int(index) < size:
            raise IndexError(f"{what} {index} out of range 0..{size - 1}")
        return int(index)
