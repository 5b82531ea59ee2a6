"""Protocols on the simulator and on the HardwareBackend over the mock lab: physics
outcomes, pre-flight, safe state, journal and resume."""

from __future__ import annotations

import copy
import itertools
import math
import statistics

import pytest

from memhil.backends.sim import SimBackend
from memhil.core.errors import ConfigError
from memhil.mock_hw.lab import MockLab
from memhil.protocols import (
    JournalFile,
    ListSink,
    ProtocolError,
    ProtocolLimitError,
    Runner,
    build_protocol,
    protocol_names,
    switching_stats,
)
from tests.backends import _mock_station


def sim(device, rows=4, cols=4, **extra):
    return SimBackend({"rows": rows, "cols": cols, "device": device, "seed": 7, **extra})


@pytest.fixture
def mock_factory():
    opened = []

    def make(device=None, rows=4, cols=4):
        st = copy.deepcopy(_mock_station("parallel", rows, cols))
        if device is not None:
            st["mock"]["device"] = device
            st["chip"]["device"] = device if isinstance(device, str) else device["model"]
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


FORMING = {
    "v_start": 1.4,
    "v_step": 0.1,
    "v_max": 3.0,
    "width_s": 1e-6,
    "compliance_a": 5e-5,
    "i_target_a": 1e-6,
    "v_read": 0.2,
}


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_forming_stops_at_target_within_compliance(where, mock_factory):
    b = sim("rram_forming") if where == "sim" else mock_factory("rram_forming")
    pts = run(b, "forming", FORMING).points
    cells = {(p["tile"], p["row"], p["col"]) for p in pts}
    assert len(cells) == 16
    for cell in cells:
        seq = sorted(
            (p for p in pts if (p["tile"], p["row"], p["col"]) == cell), key=lambda p: p["step"]
        )
        flags = [p["formed"] for p in seq]
        assert flags[-1] and flags.count(True) == 1  # reached the target, then no more pulses
        assert all(p["i_read_a"] <= p["compliance_a"] for p in seq)
        assert seq[-1]["i_read_a"] >= FORMING["i_target_a"]
        if where == "sim":  # the simulator applies the compliance: G <= I_c / V_pulse
            assert seq[-1]["g"] * seq[-1]["v_pulse"] <= FORMING["compliance_a"] * 1.001
    v_form = [max(p["v_pulse"] for p in pts if (p["tile"], p["row"], p["col"]) == c) for c in cells]
    assert 1.6 < statistics.median(v_form) < 2.4  # V_bd ~ N(2.0 V, 0.2 V)


def _cells(points):
    return sorted({(p["tile"], p["row"], p["col"]) for p in points})


# rram_forming defaults (docs/devices.md#stochastic-forming-rram): LRS ~ LogNormal(ln 20 uS,
# 0.5) and HRS ~ LogNormal(ln 1 uS, 0.5), a fresh draw at every SET / RESET (C2C), no D2D
# term.
LRS_MEDIAN, HRS_MEDIAN, LOG_SIGMA = 20e-6, 1e-6, 0.5


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_endurance_window_and_stop_on_collapse(where, mock_factory):
    b = sim("rram_forming") if where == "sim" else mock_factory("rram_forming")
    run(b, "forming", FORMING)
    params = {
        "cycles": 40,
        "read_every": 10,
        "v_set": 1.2,
        "v_reset": -1.2,
        "compliance_set_a": 1e-3,
        "min_window": 2.0,
    }
    pts = run(b, "endurance", params).points
    assert sorted({p["cycle"] for p in pts}) == [10, 20, 30, 40]  # healthy window: no stop
    stats = switching_stats(pts)
    # model window: median LRS / HRS = 20; medians of 64 log-normal (sigma 0.5) draws are
    # within ~0.16 in ln (2.5 standard errors of a median, 1.25 sigma / sqrt(64)) -> x/1.2;
    # the bands below are wider (x/2) and still exclude a wrong state by a decade.
    assert 10 < stats["window_median"] < 40
    assert 10e-6 < stats["lrs_median_s"] < 40e-6 and 0.5e-6 < stats["hrs_median_s"] < 2e-6
    collapsed = run(b, "endurance", {**params, "min_window": 1000.0}).points
    assert {p["cycle"] for p in collapsed} == {10}


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_endurance_stops_when_the_model_window_collapses(where, mock_factory):
    """A device whose LRS/HRS window is 1.5 (LRS median 1.5 uS, HRS 1 uS, 10 % log spread)
    is below ``min_window`` = 2: the run stops at the first read; one whose window is 20
    runs all cycles (previous test). Formed by one 3 V pulse (V_bd ~ N(2 V, 0.2 V))."""
    device = {
        "model": "rram_forming",
        "g_formed_median_s": 1.5e-6,
        "g_formed_log_sigma": 0.1,
        "g_reset_log_sigma": 0.1,
    }
    b = sim(device) if where == "sim" else mock_factory(device)
    b.pulse(None, 3.0, 1e-6, compliance_a=1e-3)
    pts = run(
        b,
        "endurance",
        {
            "cycles": 40,
            "read_every": 10,
            "v_set": 1.2,
            "v_reset": -1.2,
            "compliance_set_a": 1e-3,
            "min_window": 2.0,
        },
    ).points
    assert {p["cycle"] for p in pts} == {10} and len(pts) == 16
    # median of 16 ratios of two 10 %-log-normal draws: 1.5 x/ e^(0.14 * 1.25 * 2.5 / 4)
    assert 1.3 < switching_stats(pts)["window_median"] < 1.7


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_endurance_follows_the_model_window_closing(where, mock_factory):
    """A wearing device (``wear_cycles`` = 25): the window at the read after cycle c comes
    from the c-th RESET, i.e. after n = c - 1 earlier ones, so the model median window is
    W(c) = 20^exp(-(c - 1) / 25): 8.1, 4.1, 2.5 at c = 10, 20, 30; with min_window = 3 the
    run stops at c = 30. Per cell ln(LRS/HRS) has sigma 0.1 * sqrt(2) = 0.14 (two 10 %
    log-normal draws; 1 % read noise is negligible); the median of 16 cells has a standard
    error of 1.25 * 0.14 / 4 = 0.044 in ln, and the tolerance is 4 of them (0.18)."""
    device = {
        "model": "rram_forming",
        "g_formed_log_sigma": 0.1,
        "g_reset_log_sigma": 0.1,
        "wear_cycles": 25.0,
    }
    b = sim(device) if where == "sim" else mock_factory(device)
    b.pulse(None, 3.0, 1e-6, compliance_a=1e-3)  # form every cell (V_bd ~ N(2 V, 0.2 V))
    pts = run(
        b,
        "endurance",
        {
            "cycles": 60,
            "read_every": 10,
            "v_set": 1.2,
            "v_reset": -1.2,
            "compliance_set_a": 1e-3,
            "min_window": 3.0,
        },
    ).points
    assert sorted({p["cycle"] for p in pts}) == [10, 20, 30]  # stopped when W < 3
    for c in (10, 20, 30):
        measured = statistics.median(p["window"] for p in pts if p["cycle"] == c)
        model = math.log(20.0) * math.exp(-(c - 1) / 25.0)
        assert abs(math.log(measured) - model) < 0.18, (c, measured, math.exp(model))


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_switching_statistics_match_model_c2c_spread(where, mock_factory):
    """SET/RESET statistics over 16 cells x 10 cycles = 160 draws each: the log-mean and
    log-std of LRS and HRS match the model's (ln 20 uS, 0.5) and (ln 1 uS, 0.5); the spread
    is cycle-to-cycle (the model has no D2D term), so the variance of the per-cell
    log-means is the C2C variance / 10, and the C2C part (per-cell spread across cycles)
    carries the whole log-std. Tolerances are 4 standard errors: the log-mean's
    0.5 / sqrt(160) = 0.04 -> 0.16; the log-std's 0.5 / sqrt(2 * 160) = 0.028 -> 0.12 (1 %
    read noise adds 0.01 in quadrature, negligible). The per-cell-mean variance
    (16 cells, chi^2 with 15 dof): 0.025 within a factor 2.6 covers its 99.9 % band."""
    b = sim("rram_forming") if where == "sim" else mock_factory("rram_forming")
    b.pulse(None, 3.0, 1e-6, compliance_a=1e-3)  # form every cell
    pts = run(
        b, "switching", {"cycles": 10, "v_set": 1.2, "v_reset": -1.2, "compliance_set_a": 1e-3}
    ).points
    assert len(pts) == 160
    for name, median in (("g_lrs", LRS_MEDIAN), ("g_hrs", HRS_MEDIAN)):
        ln = [math.log(p[name]) for p in pts]
        assert abs(statistics.fmean(ln) - math.log(median)) < 0.16, (name, statistics.fmean(ln))
        assert abs(statistics.pstdev(ln) - LOG_SIGMA) < 0.12, (name, statistics.pstdev(ln))
        per_cell = [
            [math.log(p[name]) for p in pts if (p["tile"], p["row"], p["col"]) == c]
            for c in _cells(pts)
        ]
        c2c = statistics.fmean(statistics.pvariance(x) for x in per_cell) * 10 / 9
        var_means = statistics.variance(statistics.fmean(x) for x in per_cell)
        assert abs(math.sqrt(c2c) - LOG_SIGMA) < 0.12, (name, math.sqrt(c2c))
        assert LOG_SIGMA**2 / 10 / 2.6 < var_means < LOG_SIGMA**2 / 10 * 2.6, (name, var_means)
    stats = switching_stats(pts)
    assert stats["n"] == 160 and 10 < stats["window_median"] < 40


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_retention_pcm_follows_drift(where, mock_factory):
    b = sim("pcm") if where == "sim" else mock_factory("pcm")
    pts = run(
        b,
        "retention",
        {
            "program_v": 1.0,
            "program_width_s": 100e-9,
            "program_count": 10,
            "spacing": "log",
            "t_first_s": 100.0,
            "duration_s": 1e5,
            "n_points": 16,
        },
    ).points
    xs, ys = [], []
    for k in sorted({p["index"] for p in pts}):
        row = [p for p in pts if p["index"] == k]
        xs.append(math.log(row[0]["t_s"]))
        ys.append(math.log(statistics.fmean(p["g"] for p in row)))
    slope = statistics.linear_regression(xs, ys).slope
    # PCM drift G ~ t^-nu with nu = 0.04: the log-log slope of the 16-cell mean; read noise
    # (3 % + 0.13 uS per read, averaged over 16 cells and 16 times) moves it by < 0.005.
    assert abs(slope - (-0.04)) < 0.01, slope
    assert pts[-1]["t_s"] >= 1e5  # virtual clock: 1e5 s in milliseconds


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_pulse_train_monotone_saturating(where, mock_factory):
    b = sim("neurosim") if where == "sim" else mock_factory()
    run(b, "pulse_train", {"n_pulses": 1, "v_ltp": -2.0 + 4.0, "v_ltd": -2.0, "width_s": 80e-9})
    for _ in range(40):  # start from G_min
        b.pulse(None, -2.0, 80e-9)
    pts = run(
        b, "pulse_train", {"n_pulses": 40, "v_ltp": 2.0, "v_ltd": -2.0, "width_s": 80e-9}
    ).points

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


@pytest.fixture
def vteam_2x2(mock_factory):
    def make(where):
        if where == "sim":
            return sim("vteam", 2, 2)
        return mock_factory("vteam", rows=2, cols=2)

    return make


IV = {"v_max": 0.3, "v_step": 0.05, "step_width_s": 1e-6, "v_read": 0.1, "compliance_a": 1e-3}


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_iv_sweep_vteam_hysteresis(where, vteam_2x2):
    pts = run(vteam_2x2(where), "iv_sweep", IV).points

    def i_at(branch, v):
        return statistics.fmean(
            p["i"] for p in pts if p["branch"] == branch and abs(p["v"] - v) < 1e-9
        )

    # VTEAM thresholds: SET above v_on = 0.2 V, RESET below -v_off = -0.02 V
    assert i_at("down+", 0.1) > 3 * i_at("up+", 0.1)  # SET during the + sweep
    assert abs(i_at("down-", -0.1)) < abs(i_at("up-", -0.05) / 0.05 * 0.1)  # RESET on the - side
    for cell in _cells(pts):  # no SET below threshold: G stays at the cell's first read
        up = [
            p["g"]
            for p in pts
            if p["branch"] == "up+" and p["v"] < 0.19 and (p["tile"], p["row"], p["col"]) == cell
        ]
        assert max(up) <= up[0] * 1.03  # 3 x the 1 % read noise


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_iv_sweep_compliance_limits_set(where, vteam_2x2):
    """On the simulator and through the array board (``COMP`` sent before each pulse
    group). A source in compliance lowers its voltage to I_c / G, so a SET stops once
    G >= I_c / v_on: no + step that starts from G > 1.15 I_c / v_on raises G (v_on = 0.2 V
    with a 5 % D2D spread: the margin is 3 sigma), and the compliance-limited LRS is far
    below the free one (20 mS)."""
    ic = 2e-4
    pts = run(vteam_2x2(where), "iv_sweep", {**IV, "compliance_a": ic}).points
    for cell in _cells(pts):
        seq = sorted(
            (p for p in pts if (p["tile"], p["row"], p["col"]) == cell and p["v"] > 0),
            key=lambda p: p["step"],
        )
        for before, after in itertools.pairwise(seq):
            if before["g"] > 1.15 * ic / 0.2:
                assert after["g"] <= before["g"] * 1.03, (cell, before, after)  # 1 % read noise x 3
        assert max(p["g"] for p in seq) < 0.25 * 20e-3


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
        Runner(b, progress=False).run(
            build_protocol("retention", {"v_read": 2.0, "duration_s": 10})
        )
    assert calls == []


def test_config_errors_name_key():
    with pytest.raises(ConfigError, match=r"iv_sweep\.v_stepp"):
        build_protocol("iv_sweep", {"v_stepp": 0.1})
    with pytest.raises(ConfigError, match=r"cfg\.yaml: forming\.v_start"):
        build_protocol("forming", {"v_start": 5.0, "v_max": 3.0}, source="cfg.yaml")
    assert "wafer_campaign" in protocol_names() and len(protocol_names()) == 17


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
        Runner(
            b, sink=sink, journal=journal, progress=False, safe_state=lambda: safe.append(1)
        ).run(build_protocol("iv_sweep", params))
    assert safe == [1]
    entries = [__import__("json").loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [e["key"] for e in entries if "key" in e] == [["iv_sweep", 0], ["iv_sweep", 1]]
    assert [e["started"] for e in entries if "started" in e] == [["iv_sweep", c] for c in range(3)]
    assert {p["cycle"] for p in sink.points} == {0, 1}
    b.pulse = real_pulse
    Runner(
        b,
        sink=sink,
        journal=JournalFile(tmp_path / "j.jsonl"),
        progress=False,
        safe_state=lambda: safe.append(2),
    ).run(build_protocol("iv_sweep", params))
    assert safe == [1, 2]
    keys = [(p["cycle"], p["step"], p["tile"], p["row"], p["col"]) for p in sink.points]
    assert len(keys) == len(set(keys)) == 4 * n_steps * 16
    resumed = JournalFile(tmp_path / "j.jsonl")
    assert len(resumed.keys) == 4
    # the unit in flight at the interrupt was started twice: its pulses may repeat
    assert resumed.attempts == {
        '["iv_sweep",0]': 1,
        '["iv_sweep",1]': 1,
        '["iv_sweep",2]': 2,
        '["iv_sweep",3]': 1,
    }


def test_default_safe_state_on_hardware(mock_factory):
    b = mock_factory()
    called = []
    orig = b.station.safe_state
    b.station.safe_state = lambda: (called.append(1), orig())
    run(b, "conductance_map", {})
    assert called and b.lab.sources_off()


def test_wafer_campaign_needs_prober():
    with pytest.raises(ProtocolError, match="prober"):
        Runner(sim("neurosim"), progress=False).run(
            build_protocol("wafer_campaign", {"dies": [[0, 0]]})
        )


def test_read_noise_and_map(mock_factory):
    b = mock_factory()
    pts = run(b, "read_noise", {"n_reads": 20, "checkpoint_every": 5, "cells": [[0, 1, 1]]}).points
    g = [p["g"] for p in pts]
    assert len(g) == 20 and 0 < statistics.pstdev(g) / statistics.fmean(g) < 0.05  # 1 % read noise
    assert len(run(b, "conductance_map", {}).points) == 16
