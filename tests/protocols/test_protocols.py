"""Protocols on the simulator and on the HardwareBackend over the mock lab: physics
outcomes, pre-flight, safe state, journal and resume."""

from __future__ import annotations

import copy
import math
import statistics

import pytest

from memhil.backends.sim import SimBackend
from memhil.errors import ConfigError
from memhil.mock_hw.lab import MockLab
from memhil.protocols import (JournalFile, ListSink, ProtocolError, ProtocolLimitError, Runner,
                              build_protocol, protocol_names, switching_stats)
from tests.backends import _mock_station


def sim(device, rows=4, cols=4, **extra):
    return SimBackend({"rows": rows, "cols": cols, "device": device, "seed": 7, **extra})


@pytest.fixture
def mock_factory():
    opened = []

    def make(device=None):
        st = copy.deepcopy(_mock_station("parallel", 4, 4))
        if device is not None:
            st["mock"]["device"] = device
            st["chip"]["device"] = device
        b = MockLab.open_backend(st, strategy="parallel")
        opened.append(b)
        return b
    yield make
    for b in opened:
        b.close()


def run(backend, name, params, **kw):
    sink = ListSink()
    Runner(backend, sink=sink, progress=False, **kw).run(build_protocol(name, params))
    return sink


FORMING = {"v_start": 1.4, "v_step": 0.1, "v_max": 3.0, "width_s": 1e-6,
           "compliance_a": 5e-5, "i_target_a": 1e-6, "v_read": 0.2}


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_forming_stops_at_target_within_compliance(where, mock_factory):
    b = sim("rram_forming") if where == "sim" else mock_factory("rram_forming")
    pts = run(b, "forming", FORMING).points
    cells = {(p["tile"], p["row"], p["col"]) for p in pts}
    assert len(cells) == 16
    for cell in cells:
        seq = sorted((p for p in pts if (p["tile"], p["row"], p["col"]) == cell), key=lambda p: p["step"])
        flags = [p["formed"] for p in seq]
        assert flags[-1] and flags.count(True) == 1  # reached the target, then no more pulses
        assert all(p["i_read"] <= p["compliance_a"] for p in seq)
        assert seq[-1]["i_read"] >= FORMING["i_target_a"]
        if where == "sim":  # the simulator applies the compliance: G <= I_c / V_pulse
            assert seq[-1]["g"] * seq[-1]["v_pulse"] <= FORMING["compliance_a"] * 1.001
    v_form = [max(p["v_pulse"] for p in pts if (p["tile"], p["row"], p["col"]) == c) for c in cells]
    assert 1.6 < statistics.median(v_form) < 2.4  # V_bd ~ N(2.0 V, 0.2 V)


def test_endurance_window_and_collapse():
    b = sim("rram_forming")
    run(b, "forming", FORMING)
    params = {"cycles": 40, "read_every": 10, "v_set": 1.2, "v_reset": -1.2,
              "compliance_set_a": 1e-3, "min_window": 2.0}
    pts = run(b, "endurance", params).points
    assert sorted({p["cycle"] for p in pts}) == [10, 20, 30, 40]
    stats = switching_stats(pts)
    # model: LRS ~ LogNormal(20 uS), HRS ~ LogNormal(1 uS) -> median window ~ 20
    assert 10 < stats["window_median"] < 40
    assert 10e-6 < stats["lrs_median_s"] < 40e-6 and 0.5e-6 < stats["hrs_median_s"] < 2e-6
    collapsed = run(b, "endurance", {**params, "min_window": 1000.0}).points
    assert {p["cycle"] for p in collapsed} == {10}


def test_retention_pcm_follows_drift():
    b = sim("pcm")
    pts = run(b, "retention", {"program_v": 1.0, "program_width_s": 100e-9, "program_count": 10,
                               "spacing": "log", "t_first_s": 100.0, "duration_s": 1e5,
                               "n_points": 16}).points
    xs, ys = [], []
    for k in sorted({p["index"] for p in pts}):
        row = [p for p in pts if p["index"] == k]
        xs.append(math.log(row[0]["t_s"]))
        ys.append(math.log(statistics.fmean(p["g"] for p in row)))
    slope = statistics.linear_regression(xs, ys).slope
    assert abs(slope - (-0.04)) < 0.01, slope  # PCM nu = 0.04
    assert pts[-1]["t_s"] >= 1e5  # virtual clock: 1e5 s in milliseconds


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_pulse_train_monotone_saturating(where, mock_factory):
    b = sim("neurosim") if where == "sim" else mock_factory()
    run(b, "pulse_train", {"n_pulses": 1, "v_ltp": -2.0 + 4.0, "v_ltd": -2.0, "width_s": 80e-9})
    for _ in range(40):  # start from G_min
        b.pulse(None, -2.0, 80e-9)
    pts = run(b, "pulse_train", {"n_pulses": 40, "v_ltp": 2.0, "v_ltd": -2.0, "width_s": 80e-9}).points

    def curve(phase):
        by_n = {}
        for p in pts:
            if p["phase"] == phase:
                by_n.setdefault(p["pulse"], []).append(p["g"])
        return [statistics.fmean(by_n[k]) for k in sorted(by_n)]
    ltp, ltd = curve("ltp"), curve("ltd")
    tol = 0.03 * max(ltp)
    assert all(b2 >= a - tol for a, b2 in zip(ltp, ltp[1:]))
    assert all(b2 <= a + tol for a, b2 in zip(ltd, ltd[1:]))
    assert ltp[-1] > 5 * ltp[0] / 2 or ltp[-1] > ltp[0] + 5e-6
    # saturating: the first 5 pulses move G more than the last 5 (nonlinearity NL = 4.22)
    assert ltp[5] - ltp[0] > 2 * (ltp[-1] - ltp[-6])
    assert ltd[0] - ltd[5] > 2 * (ltd[-6] - ltd[-1])


def test_iv_sweep_vteam_hysteresis():
    pts = run(sim("vteam", 2, 2), "iv_sweep", {"v_max": 0.3, "v_step": 0.05, "step_width_s": 1e-6,
                                               "v_read": 0.1, "compliance_a": 1e-3}).points

    def i_at(branch, v):
        return statistics.fmean(p["i"] for p in pts if p["branch"] == branch and abs(p["v"] - v) < 1e-9)
    assert i_at("down+", 0.1) > 3 * i_at("up+", 0.1)  # SET during the + sweep
    assert abs(i_at("down-", -0.1)) < abs(i_at("up-", -0.05) / 0.05 * 0.1)  # RESET on the - side


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_preflight_rejects_and_nothing_reaches_backend(where, mock_factory, monkeypatch):
    b = sim("neurosim") if where == "sim" else mock_factory()
    calls = []
    monkeypatch.setattr(b, "pulse", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(b, "read_conductance", lambda *a, **k: calls.append(a))
    with pytest.raises(ProtocolLimitError, match=r"iv_sweep\.v_max"):
        Runner(b, progress=False).run(build_protocol("iv_sweep", {"v_max": 5.0}))
    with pytest.raises(ProtocolLimitError, match=r"forming\.compliance_a"):
        Runner(b, progress=False).run(build_protocol("forming", {**FORMING, "compliance_a": 1.0}))
    with pytest.raises(ProtocolLimitError, match=r"retention\.v_read"):
        Runner(b, progress=False).run(build_protocol("retention", {"v_read": 2.0, "duration_s": 10}))
    assert calls == []


def test_config_errors_name_key():
    with pytest.raises(ConfigError, match=r"iv_sweep\.v_stepp"):
        build_protocol("iv_sweep", {"v_stepp": 0.1})
    with pytest.raises(ConfigError, match=r"cfg\.yaml: forming\.v_start"):
        build_protocol("forming", {"v_start": 5.0, "v_max": 3.0}, source="cfg.yaml")
    assert "wafer_campaign" in protocol_names() and len(protocol_names()) == 9


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [KeyboardInterrupt, Boom])
@pytest.mark.parametrize("where", ["sim", "mock"])
def test_interrupt_safe_state_journal_and_resume(exc, where, mock_factory, tmp_path):
    b = sim("neurosim") if where == "sim" else mock_factory()
    params = {"cycles": 4, "v_max": 2.0, "v_step": 0.5, "step_width_s": 80e-9, "compliance_a": 1e-3}
    n_steps = 14  # levels per cycle at 0.5 V steps: 4 up, 3 down, per polarity
    safe = []
    real_pulse = b.pulse
    state = {"n": 0}

    def flaky(*a, **k):
        state["n"] += 1
        if state["n"] == 2 * n_steps + 5:  # mid third cycle
            raise exc()
        return real_pulse(*a, **k)
    b.pulse = flaky
    journal = JournalFile(tmp_path / "j.jsonl")
    sink = ListSink()
    with pytest.raises(exc):
        Runner(b, sink=sink, journal=journal, progress=False,
               safe_state=lambda: safe.append(1)).run(build_protocol("iv_sweep", params))
    assert safe == [1]
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert [__import__("json").loads(x)["key"] for x in lines] == [["iv_sweep", 0], ["iv_sweep", 1]]
    assert {p["cycle"] for p in sink.points} == {0, 1}
    b.pulse = real_pulse
    Runner(b, sink=sink, journal=JournalFile(tmp_path / "j.jsonl"), progress=False,
           safe_state=lambda: safe.append(2)).run(build_protocol("iv_sweep", params))
    assert safe == [1, 2]
    keys = [(p["cycle"], p["step"], p["tile"], p["row"], p["col"]) for p in sink.points]
    assert len(keys) == len(set(keys)) == 4 * n_steps * 16
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 4


def test_default_safe_state_on_hardware(mock_factory):
    b = mock_factory()
    called = []
    orig = b.station.safe_state
    b.station.safe_state = lambda: (called.append(1), orig())
    run(b, "conductance_map", {})
    assert called and b.lab.sources_off()


def test_wafer_campaign_needs_prober():
    with pytest.raises(ProtocolError, match="prober"):
        Runner(sim("neurosim"), progress=False).run(build_protocol("wafer_campaign", {"dies": [[0, 0]]}))


def test_read_noise_and_map(mock_factory):
    b = mock_factory()
    pts = run(b, "read_noise", {"n_reads": 20, "checkpoint_every": 5, "cells": [[0, 1, 1]]}).points
    g = [p["g"] for p in pts]
    assert len(g) == 20 and 0 < statistics.pstdev(g) / statistics.fmean(g) < 0.05  # 1 % read noise
    assert len(run(b, "conductance_map", {}).points) == 16
