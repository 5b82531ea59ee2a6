"""Contact at the site and the read voltage, on a served mock lab driven as ``memhil run
--station live.yaml`` drives a bench: the backend touches down and confirms contact
before its first read or pulse, reads go out at the protocol's ``v_read`` and store the
applied voltage and the measured current, and reads that only ever see an open circuit
are flagged (in the data and on the console), never on pristine cells."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from qcodes.instrument import Instrument

from memhil.backends.hardware import HardwareError
from memhil.backends.sim import SimBackend
from memhil.cli.app import main as cli_main
from memhil.core.errors import LimitError
from memhil.mock_hw.lab import MockLab
from memhil.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def _station(device: dict, *, cell: bool = False) -> dict:
    """A prober + array board bench (or + a 2636B and a B2201 for the cell strategy) on
    free loopback ports, 4x4, three dies."""
    instruments = {
        "prober": {"type": "formfactor_velox", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
        "board": {"type": "memhil_array_board", "address": "socket://127.0.0.1:0"},
    }
    wiring = {}
    if cell:
        instruments = {
            "prober": instruments["prober"],
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
        }
        wiring = {
            "smu_ports": {"smu.smua": 1, "smu.smub": 2},
            "rows": [1, 2, 3, 4],
            "cols": [5, 6, 7, 8],
            "ground_ports": [12],
        }
    return {
        "name": "site_bench",
        "chip": {"rows": 4, "cols": 4, "device": device["model"]}
        | ({"set_pulse": [2.0, 1e-4], "reset_pulse": [-2.0, 1e-4]} if cell else {}),
        "limits": {
            "v_pulse_max_v": 3.0,
            "v_read_max_v": 0.5,
            "width_min_s": 1e-4 if cell else 1e-9,  # the 2636B pulses the cell strategy
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-3,
        },
        "instruments": instruments,
        "wiring": wiring,
        "mock": {
            "device": device,
            "seed": 3,
            "read": {"read_noise_rel": 0.01},
            "wafer": {"dies": [[0, 0], [1, 0], [2, 0]]},
        },
    }


NEUROSIM = {"model": "neurosim", "g_min_s": 1e-6, "g_max_s": 8e-6}


@contextlib.contextmanager
def _served(tmp_path: Path, station: dict, wire: list):
    """The lab served on loopback (as ``memhil mock-lab serve --write-station``), every
    command each emulator receives appended to ``wire`` as (instrument, line)."""
    lab = MockLab(station, serve_array_board_tcp=True)
    for name, emu in lab.emulators.items():
        real = emu.handle
        emu.handle = lambda line, _n=name, _r=real: (wire.append((_n, line)), _r(line))[1]
    try:
        with lab:
            live = tmp_path / "live.yaml"
            live.write_text(yaml.safe_dump(lab.station_config().to_dict(), sort_keys=False))
            yield lab, live
    finally:
        Instrument.close_all()


def _run(tmp_path: Path, live: Path, protocol: str, params: dict, db: Path):
    proto = tmp_path / f"{protocol}.yaml"
    proto.write_text(yaml.safe_dump({"protocol": protocol, "params": params}))
    assert (
        cli_main(["run", str(proto), "--station", str(live), "--db", str(db), "--no-progress"]) == 0
    )
    with RunStore(db) as store:
        return store.load(store.runs()[-1].run_id)


def test_station_run_touches_down_confirms_contact_and_reads_at_the_requested_voltage(tmp_path):
    wire: list[tuple[str, str]] = []
    with _served(tmp_path, _station(NEUROSIM), wire) as (lab, live):
        df = _run(tmp_path, live, "conductance_map", {"v_read": 0.1}, tmp_path / "runs.db")
        g_true = lab.chip.sim.true_conductance()[0]
    reads = [k for k, (who, line) in enumerate(wire) if who == "board" and line.startswith("READC")]
    touch = max(
        k
        for k, (who, line) in enumerate(wire[: reads[0]])
        if who == "prober" and line.startswith("MoveChuckContact")
    )
    status = [line for who, line in wire[touch : reads[0]] if who == "prober"]
    assert any(line.startswith("ReadChuckPosition") for line in status)  # confirmed by a query
    for k in reads:  # the protocol's 0.1 V on the wire, not 0.5 x v_read_max_v
        levels = [float(x) for x in wire[k][1].split(" ", 1)[1].split(",")]
        assert max(levels) == pytest.approx(0.1) and sorted(levels)[:-1] == [0.0] * 3
    assert len(df) == 16 and df["v_read_v"].tolist() == pytest.approx([0.1] * 16)
    assert not df["open_circuit"].any()
    g = torch.tensor(df.sort_values(["row", "col"])["g"].to_numpy()).reshape(4, 4)
    assert torch.allclose(g, g_true.double(), rtol=0.05)  # 1 % read noise
    i = df["i_read_a"].to_numpy()
    assert (abs(i - df["g"].to_numpy() * 0.1) <= 1e-6 * abs(i)).all()  # measured, g = i / v


def test_cell_strategy_reads_drive_the_requested_level(tmp_path):
    wire: list[tuple[str, str]] = []
    with _served(tmp_path, _station(NEUROSIM, cell=True), wire) as (_lab, live):
        df = _run(
            tmp_path,
            live,
            "conductance_map",
            {"v_read": 0.15, "cells": [[0, 1, 2]]},
            tmp_path / "runs.db",
        )
    levels = [line for who, line in wire if who == "smu" and "levelv" in line and "smua" in line]
    assert any("0.15" in line for line in levels), levels
    assert df["v_read_v"].tolist() == pytest.approx([0.15])
    assert df["g"].iloc[0] > 1e-7 and not df["open_circuit"].any()


def test_lifted_needles_are_flagged_in_the_data_and_on_the_console(tmp_path):
    """A prober that still reports contact height while the needles left the pads: every
    read is an open circuit; ``memhil run`` (its own process) stores the flag and warns."""
    wire: list[tuple[str, str]] = []
    with _served(tmp_path, _station(NEUROSIM), wire) as (lab, live):
        lab.emulators["prober"].lose_contact(persistent=True)
        proto = tmp_path / "map.yaml"
        proto.write_text("protocol: conductance_map\nparams: {v_read: 0.1}\n")
        db = tmp_path / "runs.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "memhil",
                "run",
                str(proto),
                "--station",
                str(live),
                "--db",
                str(db),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert "16 of 16 cell(s) read an open circuit" in out.stderr
    with RunStore(db) as store:
        df = store.load(store.runs()[-1].run_id)
    assert df["open_circuit"].all() and (df["i_read_a"] == 0).all()


def test_pulse_train_units_without_contact_are_flagged(tmp_path, caplog):
    wire: list[tuple[str, str]] = []
    with _served(tmp_path, _station(NEUROSIM), wire) as (lab, live):
        df = _run(
            tmp_path,
            live,
            "pulse_train",
            {"n_pulses": 2, "cells": [[0, 0, 0], [0, 1, 1]]},
            tmp_path / "ok.db",
        )
        assert not df["open_circuit"].any()
        lab.emulators["prober"].lose_contact(persistent=True)
        with caplog.at_level(logging.WARNING, logger="memhil.protocols"):
            df = _run(
                tmp_path,
                live,
                "pulse_train",
                {"n_pulses": 2, "cells": [[0, 0, 0], [0, 1, 1]]},
                tmp_path / "lost.db",
            )
    assert df["open_circuit"].all() and len(df) == 2 * 5
    units = {
        r.getMessage().split(":")[0] for r in caplog.records if "open circuit" in r.getMessage()
    }
    assert units == {
        "pulse_train unit ('pulse_train', 'start')",
        "pulse_train unit ('pulse_train', 'ltp')",
        "pulse_train unit ('pulse_train', 'ltd')",
    }


def test_pristine_cells_are_not_flagged(tmp_path, caplog):
    wire: list[tuple[str, str]] = []
    forming = {"model": "rram_forming"}
    with (
        caplog.at_level(logging.WARNING, logger="memhil.protocols"),
        _served(tmp_path, _station(forming), wire) as (_lab, live),
    ):
        pristine = _run(tmp_path, live, "conductance_map", {"v_read": 0.2}, tmp_path / "a.db")
        formed = _run(
            tmp_path,
            live,
            "forming",
            {
                "v_start": 1.2,
                "v_step": 0.2,
                "v_max": 2.8,
                "i_target_a": 1e-6,
                "cells": [[0, 0, 0], [0, 2, 3]],
            },
            tmp_path / "b.db",
        )
    assert not pristine["open_circuit"].any() and (pristine["g"] > 0).all()
    assert "open_circuit" not in formed.columns and formed["i_read_a"].gt(0).all()
    assert not [r for r in caplog.records if "open circuit" in r.getMessage()]


# -- in-process: the contract and the backend --------------------------------------------


def test_sim_read_applies_the_voltage_it_is_given():
    """A Yakopcic device's chord conductance grows with the read bias (sinh I-V)."""
    sim = SimBackend({"rows": 2, "cols": 2, "device": "yakopcic", "seed": 0})
    r = sim.read([(0, 0, 0), (0, 1, 1)], v_read_v=0.4)
    want = sim.model.conductance(sim.state, sim.d2d, 0.4, sim.clock.now())[0]
    assert torch.allclose(r.g_s, torch.stack([want[0, 0], want[1, 1]]).to(r.g_s.dtype))
    assert (r.v_v == 0.4).all() and torch.allclose(r.i_a, r.g_s * 0.4)
    assert float(sim.read_conductance(v_read_v=0.4).mean()) > float(
        sim.read_conductance(v_read_v=0.1).mean()
    )
    with pytest.raises(LimitError, match="read voltage"):
        sim.read_conductance(v_read_v=5.0)


def test_contact_is_reconfirmed_after_a_safe_state_and_refused_when_the_prober_denies_it():
    backend = MockLab.open_backend(_station(NEUROSIM))
    try:
        wire: list[str] = []
        board = backend.lab.emulators["board"]
        real = board.handle
        board.handle = lambda line: (wire.append(line), real(line))[1]
        g0 = backend.read_conductance(v_read_v=0.1)
        backend.station.safe_state()  # separates the needles, as the runner does after a run
        assert not backend.station.prober.in_contact()
        g1 = backend.read_conductance(v_read_v=0.1)
        assert backend.station.prober.in_contact() and (g1 > 0).all()
        assert torch.allclose(g0, g1, rtol=0.05)
        backend.station.safe_state()
        backend.station.prober._prober.contact_ok = lambda: False  # a failed continuity check
        sent = len(wire)
        with pytest.raises(HardwareError, match="no contact"):
            backend.read_conductance(v_read_v=0.1)
        with pytest.raises(HardwareError, match="no contact"):
            backend.pulse([(0, 0, 0)], 2.0, 1e-7)
        assert not [line for line in wire[sent:] if line.startswith(("READ", "PULSE"))]
        with pytest.raises(LimitError, match="read voltage"):
            backend.read_conductance(v_read_v=0.6)
    finally:
        backend.close()


def test_the_backend_touches_down_on_its_configured_die():
    with MockLab.open_backend(_station(NEUROSIM), die=[2, 0]) as backend:
        assert backend.station.prober.position() == ((0, 0), 0)  # nothing moved at open
        backend.read_conductance(v_read_v=0.1)
        assert backend.station.prober.position() == ((2, 0), 0)
        assert backend.station.prober.in_contact() and backend.lab.chip.die == (2, 0)
