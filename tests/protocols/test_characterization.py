"""The characterization library (switch_seeker, multistate_seeker, converge_to_state,
stdp, volatility, chronoamperometry, multi_bias, sequence) on the simulator and on the
HardwareBackend over the mock lab: each recovers a truth its device model fixes."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from memhil.backends.sim import SimBackend
from memhil.cli import main
from memhil.cli.runs import PLOT_KINDS
from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError
from memhil.mock_hw.lab import MockLab
from memhil.protocols import (
    JournalFile,
    ListSink,
    ProtocolLimitError,
    Runner,
    build_protocol,
)
from memhil.protocols.library.multistate_seeker import closed_form_levels
from memhil.protocols.plan import Read
from memhil.store import RunStore, plots
from tests.backends import _mock_station
from tests.served_lab import serve_mock_lab

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "protocols"

# VTEAM without spreads, so every cell's thresholds are the nominal v_on / v_off.
_NO_SPREAD = {
    k: 0.0
    for k in ("r_on_dtod", "r_off_dtod", "v_on_dtod", "v_off_dtod", "k_on_dtod", "k_off_dtod")
}
VTEAM = {"model": "vteam", "dx_std": 0.0, **_NO_SPREAD}


@pytest.fixture
def backend():
    """``backend(where, device, rows, cols, read=..., limits=..., strategy=...)``: a
    simulator or the mock lab (its station's chip and mock device set to ``device``)."""
    opened = []

    def make(where, device, rows=2, cols=2, read=None, limits=None, strategy="parallel"):
        if where == "sim":
            cfg = {"rows": rows, "cols": cols, "device": device, "seed": 7}
            cfg.update({"read": read} if read else {})
            cfg.update({"limits": limits} if limits else {})
            return SimBackend(cfg)
        st = copy.deepcopy(_mock_station(strategy, rows, cols))
        st["chip"]["device"] = device["model"]
        st["mock"] = {"device": device, "read": read or {}, "seed": 7}
        st["limits"].update(limits or {})
        b = MockLab.open_backend(st, strategy=strategy)
        opened.append(b)
        return b

    yield make
    for b in opened:
        b.close()


def run(b, name, params, **kw):
    sink = ListSink()
    Runner(b, sink=sink, progress=False, **kw).run(build_protocol(name, params))
    return sink.points


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_switch_seeker_finds_vteam_thresholds_within_one_ramp_step(where, backend):
    b = backend(where, VTEAM, limits={"compliance_max_a": 0.05})
    step = 0.01
    pts = run(
        b,
        "switch_seeker",
        {
            "v_start_v": 0.01,
            "v_stop_v": 0.3,
            "v_step_v": step,
            "v_read_v": 0.01,
            "compliance_a": 0.05,
        },
    )
    results = [p for p in pts if p["record"] == "result"]
    assert len(results) == 8  # 4 cells x 2 polarities
    for p in results:
        # SET (G rises) above v_on = 0.2 V, RESET (G falls) below -v_off = -0.02 V: the
        # first ramp step beyond the threshold, where VTEAM's rate becomes non-zero
        v_th, sign = (0.2, 1.0) if p["polarity"] == "positive" else (0.02, -1.0)
        assert p["switched"] and p["direction"] == sign
        assert 0 < sign * p["v_switch_v"] - v_th <= step + 1e-9


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_multistate_seeker_counts_the_levels_read_and_programming_noise_allow(where, backend):
    sigma_read_s, tol_s = 1e-6, 0.5e-6
    # the programmed state lies within +-tol of the target: a uniform spread tol / sqrt(3)
    sigma_s = math.sqrt(sigma_read_s**2 + tol_s**2 / 3)
    # a ladder step of 2 z sigma * 3/4: every second target counts, with equal margins
    # (2 z sigma / 3 ~ 2 uS, several standard errors of the 60-read estimates) either side
    z, n = 3.0, (7 if where == "sim" else 3)  # the mock lab's reads cost more
    dg_s = 0.75 * 2 * z * sigma_s
    b = backend(
        where,
        {"model": "volatile", "volatile_fraction": 0.0},
        rows=1,
        read={"read_noise_abs_s": sigma_read_s},
    )
    pts = run(
        b,
        "multistate_seeker",
        {
            "g_low_s": 10e-6,
            "g_high_s": 10e-6 + (n - 1) * dg_s,
            "n_targets": n,
            "g_tolerance_s": tol_s,
            "trials": 3,
            "n_reads": 10,
            "n_verify_reads": 8,
            "max_iterations": 30,
            "hold_s": 0.1,
            "confidence": 2 * 0.99865 - 1,  # z = 3
        },
    )
    want = closed_form_levels(n, dg_s, sigma_s, z)
    assert want == (n - 1) // 2 + 1
    assert [p["n_levels"] for p in pts if p["record"] == "result"] == [want, want]
    levels = [p for p in pts if p["record"] == "level"]
    # the measured read spread is the configured one (60 reads: ~10 % standard error)
    assert all(0.7 * sigma_read_s < p["g_std_read"] < 1.3 * sigma_read_s for p in levels)
    assert all(abs(p["g_drift"]) < 2 * sigma_read_s for p in levels)  # stable levels


def test_multistate_levels_of_a_volatile_device_drift():
    b = SimBackend({"rows": 1, "cols": 2, "device": {"model": "volatile"}, "seed": 7})
    pts = run(
        b,
        "multistate_seeker",
        {"g_low_s": 20e-6, "g_high_s": 60e-6, "n_targets": 3, "trials": 1, "n_reads": 2},
    )
    # half of each programmed step relaxes (tau 1 ms) during the 1 s hold
    assert any(abs(p["g_drift"]) > 1e-6 for p in pts if p["record"] == "level")


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_converge_to_state_stores_the_program_and_verify_report(where, backend):
    b = backend(where, {"model": "volatile", "volatile_fraction": 0.0})
    pts = run(
        b,
        "converge_to_state",
        {"g_targets_s": [30e-6, 40e-6], "g_tolerance_s": 0.5e-6, "cells": [[0, 0, 0], [0, 1, 1]]},
    )
    assert [(p["row"], p["g_target"]) for p in pts] == [(0, 30e-6), (1, 40e-6)]
    for p in pts:
        assert p["within"] and abs(p["g"] - p["g_target"]) <= 0.5e-6
        assert p["set_pulses"] > 0


def _stdp_device():
    # VTEAM with alpha = 1 and equal thresholds (0.2 V) at the spike peak a_plus: the rate
    # above threshold is linear, so the change is prop. exp(-|delay| / tau) (stdp.py)
    return {
        **VTEAM,
        "r_on_ohm": 1e3,
        "r_off_ohm": 1e4,
        "v_on_v": 0.2,
        "v_off_v": 0.2,
        "alpha_on": 1.0,
        "alpha_off": 1.0,
        "k_on_m_per_s": 1e-4,
        "k_off_m_per_s": 1e-4,
        "x0": 0.5,
    }


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_stdp_sign_and_time_constant_match_the_spike_tail(where, backend):
    b = backend(where, _stdp_device(), rows=1)
    delays = [1e-6, -1e-6, 2e-6, -2e-6, 3e-6, -3e-6, 5e-6, -5e-6]  # interleaved: G stays put
    pts = run(b, "stdp", {"delays_s": delays, "tau_s": 2e-6, "v_floor_v": 0.15})
    for p in pts:
        if p["record"] == "delay":
            assert math.copysign(1.0, p["g_change"]) == math.copysign(1.0, p["delay_s"])
        else:
            # changes of ~3 % of G: the G(x) curvature biases the fit by about 1 %
            assert p["tau_plus_s"] == pytest.approx(2e-6, rel=0.03)
            assert p["tau_minus_s"] == pytest.approx(2e-6, rel=0.03)


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_volatility_recovers_the_relaxation_time_within_its_uncertainty(where, backend):
    tau_s = 1e-3
    b = backend(
        where, {"model": "volatile", "tau_s": tau_s}, rows=1, read={"read_noise_abs_s": 5e-8}
    )
    pts = run(
        b,
        "volatility",
        {"program_count": 4, "t_first_s": 1e-5, "t_last_s": 2e-2, "n_points": 20},
    )
    fits = [p for p in pts if p["record"] == "fit"]
    assert len(fits) == 2
    for p in fits:
        assert abs(p["tau_s"] - tau_s) < 3 * p["tau_err_s"]  # 3 sigma of the fit
        assert p["tau_err_s"] < 0.05 * tau_s
        assert p["t_min_s"] >= 1e-5


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_chronoamperometry_current_grows_as_the_bias_switches(where, backend):
    # threshold 0.1 V under a 0.2 V bias: dx/dt = k (v / v_th - 1) = k, linear in time
    dev = {"model": "volatile", "volatile_fraction": 0.0, "v_th_v": 0.1, "k_per_s": 10.0}
    b = backend(where, dev, rows=1, cols=1)
    pts = run(
        b,
        "chronoamperometry",
        {"v_bias_v": 0.2, "duration_s": 0.05, "n_points": 5, "spacing": "linear"},
    )
    g0, span = 1e-6 + 99e-6 * 0.2, 99e-6
    for p in pts:
        want = 0.2 * (g0 + span * 10.0 * p["t_pulsed_s"])  # the reads move no state
        assert p["i_read_a"] == pytest.approx(want, rel=1e-3)  # float32 state


def test_chronoamperometry_energy_limit_covers_the_whole_hold():
    b = SimBackend({"rows": 1, "cols": 1, "device": "volatile", "limits": {"energy_max_j": 1e-6}})
    # each 0.2 s segment stays below 1 uJ at 0.2 V x 1 mA; the 2 s hold does not
    with pytest.raises(ProtocolLimitError) as exc:
        run(
            b,
            "chronoamperometry",
            {"v_bias_v": 0.2, "duration_s": 2.0, "spacing": "linear", "n_points": 10},
        )
    assert exc.value.params == ("v_bias_v", "duration_s", "compliance_a")
    assert b.tally.calls == 0


@pytest.mark.parametrize(("where", "strategy"), [("sim", "parallel"), ("mock", "cell")])
def test_multi_bias_reads_the_chosen_columns_of_one_row(where, strategy, backend):
    dev = {"model": "volatile", "volatile_fraction": 0.0}  # no relaxation between reads
    b = backend(where, dev, rows=2, cols=3, strategy=strategy)
    b.pulse([(0, 1, 2)], 1.0, 1e-4, 4)  # 100 us: the shortest pulse of the cell path's 2636B
    g = b.read_conductance()
    pts = run(b, "multi_bias", {"row": 1, "cols": [0, 2], "v_bias_v": 0.2})
    assert [(p["row"], p["col"]) for p in pts] == [(1, 0), (1, 2)]
    assert all(p["parallel"] == (strategy == "parallel") for p in pts)
    for p in pts:
        assert p["g"] == pytest.approx(float(g[0, 1, p["col"]]), rel=0.02)
        assert p["i_a"] == pytest.approx(0.2 * p["g"])


def _neurosim():
    return SimBackend(
        {"rows": 2, "cols": 2, "device": "neurosim", "seed": 3, "read": {"read_noise_rel": 0.01}}
    )


@pytest.mark.parametrize("where", ["sim", "mock"])
def test_sequence_reproduces_pulse_train_exactly(where, backend):
    seq = load_yaml(EXAMPLES / "sequence_pulse_train.yaml")["params"]
    n = 20 if where == "sim" else 5  # the mock lab: fewer pulses (its reads cost more)
    for block in seq["blocks"][1:]:
        block["loop"]["times"] = n

    def fresh():  # the same seeded chip twice
        if where == "sim":
            return _neurosim()
        return backend("mock", {"model": "neurosim"}, read={"read_noise_rel": 0.01})

    first = fresh()
    a = run(first, "sequence", seq)
    first.close()  # one mock lab at a time (board ids are global)
    params = {"n_pulses": n, "v_ltp": 2.0, "v_ltd": -2.0, "width_s": 8e-8, "v_read": 0.2}
    b = run(fresh(), "pulse_train", {**params, "cells": seq["cells"]})
    assert len(a) == 4 * (2 * n + 1) and a == b


def _endurance_sequence(min_window: float) -> dict:
    """The example's endurance sequence, read every 10 cycles instead of 100 (faster)."""
    seq = load_yaml(EXAMPLES / "sequence_endurance.yaml")["params"]
    loop = seq["blocks"][0]["loop"]
    loop.update(start=10, step=10)
    loop["until"]["below"] = min_window
    loop["do"][0]["loop"]["times"] = 9
    return seq


@pytest.mark.parametrize("min_window", [2.0, 0.5])
def test_sequence_reproduces_endurance_exactly(min_window):
    a = run(_neurosim(), "sequence", _endurance_sequence(min_window))
    b = run(
        _neurosim(),
        "endurance",
        {
            "cycles": 30,
            "read_every": 10,
            "min_window": min_window,
            "v_set": 2.0,
            "v_reset": -2.0,
            "width_set_s": 1e-7,
            "width_reset_s": 1e-7,
        },
    )
    assert a == b
    assert len(a) == (4 if min_window == 2.0 else 12)  # collapsed at once / ran to the end


@pytest.mark.parametrize(
    ("blocks", "key", "why"),
    [
        ([{"pulse": {"amplitude_v": 1.0}}], "blocks[0].pulse", "width_s"),
        (
            [{"loop": {"times": 2, "do": [{"pulse": {"amplitude_v": 1.0, "width_s": -1.0}}]}}],
            "blocks[0].loop.do[0].pulse.width_s",
            "must be > 0",
        ),
        ([{"jump": {}}], "blocks[0]", "unknown block"),
        ([{"loop": {"do": [{"read": {}}]}}], "blocks[0].loop.times", "needs times"),
        (
            [{"loop": {"times": 2, "do": [{"read": {"record": {"k": "$nope"}}}]}}],
            "blocks[0].loop.do[0].read.record.k",
            "unknown counter",
        ),
        (
            [
                {
                    "loop": {
                        "times": 2,
                        "do": [
                            {"loop": {"times": 2, "until": {"below": 1.0}, "do": [{"read": {}}]}}
                        ],
                    }
                }
            ],
            "blocks[0].loop.do[0].loop.until",
            "top-level",
        ),
        (
            [
                {
                    "loop": {
                        "times": 2,
                        "until": {"column": "window", "below": 1.0},
                        "do": [{"read": {}}],
                    }
                }
            ],
            "blocks[0].loop.until.column",
            "not a column",
        ),
        ([{"read": {"record": {"a": 1}}}, {"read": {}}], "blocks[1].read.record", "same keys"),
        (
            [{"record": {"ratios": {"w": ["g_lrs", "g_hrs"]}}}],
            "blocks[0].record.ratios.w",
            "not read before",
        ),
    ],
)
def test_sequence_refuses_a_malformed_file_at_load_naming_file_and_key(blocks, key, why, tmp_path):
    with pytest.raises(ConfigError) as exc:
        build_protocol("sequence", {"blocks": blocks}, source="seq.yaml", prefix="params")
    assert exc.value.source == "seq.yaml"
    assert exc.value.key == f"params.{key}" or exc.value.key.startswith(f"params.{key}")
    assert why in str(exc.value)


def test_sequence_preflight_names_the_block_of_a_refused_pulse():
    b = _neurosim()
    blocks = [{"loop": {"times": 3, "do": [{"pulse": {"amplitude_v": 9.0, "width_s": 1e-7}}]}}]
    with pytest.raises(ProtocolLimitError) as exc:
        run(b, "sequence", {"blocks": blocks})
    assert exc.value.params == ("blocks[0].loop.do[0].pulse.amplitude_v",)
    assert b.tally.calls == 0


def test_sequence_resumes_after_an_interruption_without_repeating_units(tmp_path):
    seq = _endurance_sequence(0.5)
    full = run(_neurosim(), "sequence", seq)
    journal = tmp_path / "j.jsonl"
    b = _neurosim()
    sink = ListSink()
    runner = Runner(b, sink=sink, progress=False, journal=JournalFile(journal))
    reads = 0
    read = runner.commands[Read]

    def interrupt(msg, p):
        nonlocal reads
        if not p.dry:
            reads += 1
            if reads == 4:  # in the second loop iteration
                raise KeyboardInterrupt
        return read(msg, p)

    runner.register_command(Read, interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.run(build_protocol("sequence", seq))
    assert len(sink.points) == 4
    rest = run(b, "sequence", seq, journal=JournalFile(journal))
    assert [p["cycle"] for p in sink.points + rest] == [p["cycle"] for p in full]


@pytest.mark.slow  # a second process imports memhil (several seconds on a loaded machine)
def test_switch_seeker_and_multi_bias_on_a_served_mock_lab(tmp_path):
    """Both run by ``memhil run --station`` against the mock lab served as its own process
    (a VTEAM board without device spreads), over loopback sockets."""
    cfg = load_yaml(EXAMPLES.parent / "mock_vteam_station.yaml")
    cfg["mock"]["device"] = VTEAM
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump(cfg))
    live, db = tmp_path / "live.yaml", tmp_path / "runs.db"
    with serve_mock_lab(station, live):
        for name in ("switch_seeker", "multi_bias"):
            argv = ["run", str(EXAMPLES / f"{name}.yaml"), "--station", str(live)]
            assert main([*argv, "--db", str(db), "--no-progress"]) == 0
    with RunStore(db) as store:
        seek, bias = store.load(1), store.load(2)
    result = seek[seek["record"] == "result"]
    step = 0.01  # the example's ramp step; thresholds v_on = 0.2 V, v_off = 0.02 V
    pos = result[result["polarity"] == "positive"]["v_switch_v"]
    neg = result[result["polarity"] == "negative"]["v_switch_v"]
    assert ((pos - 0.2 > 0) & (pos - 0.2 <= step + 1e-9)).all()
    assert ((-neg - 0.02 > 0) & (-neg - 0.02 <= step + 1e-9)).all()
    assert len(bias) == 9 and bias["parallel"].all()  # the board reads lines at once
    # within 1/R_off .. 1/R_on (S), with the station's 1 % read noise
    assert ((bias["g"] > 0.97e-3) & (bias["g"] < 2.06e-2)).all()


def test_each_new_protocol_has_a_plot_of_its_records(tmp_path):
    vol = {"model": "volatile", "volatile_fraction": 0.5}
    cases = [
        (
            "switch_seeker",
            VTEAM,
            {
                "v_start_v": 0.1,
                "v_stop_v": 0.3,
                "v_step_v": 0.05,
                "v_read_v": 0.01,
                "compliance_a": 0.05,
            },
        ),
        ("multistate", vol, {"n_targets": 3, "trials": 1, "n_reads": 2, "hold_s": 0.0}),
        ("stdp", _stdp_device(), {"delays_s": [1e-6, -1e-6], "v_floor_v": 0.15}),
        ("volatility", vol, {"n_points": 5}),
        ("chronoamperometry", vol, {"n_points": 4}),
        ("multi_bias", vol, {"row": 0}),
        (
            "sequence",
            vol,
            {
                "blocks": [
                    {"read": {}},
                    {"pulse": {"amplitude_v": 1.0, "width_s": 1e-6}},
                    {"read": {}},
                ]
            },
        ),
    ]
    for kind, device, params in cases:
        protocol = "multistate_seeker" if kind == "multistate" else kind
        b = SimBackend(
            {
                "rows": 1,
                "cols": 2,
                "device": device,
                "seed": 7,
                "limits": {"compliance_max_a": 0.05},
            }
        )
        df = pd.DataFrame(run(b, protocol, params))
        out = getattr(plots, f"plot_{kind}")(df, tmp_path / f"{kind}.png")
        assert out.read_bytes()[:4] == b"\x89PNG", kind
        assert kind in PLOT_KINDS  # `memhil runs plot RUN --kind KIND`


RESUME_CASES = {
    "switch_seeker": {"v_start_v": 0.5, "v_stop_v": 1.0, "v_step_v": 0.25},
    "multistate_seeker": {"n_targets": 2, "trials": 1, "n_reads": 2, "hold_s": 0.0},
    "converge_to_state": {"g_targets_s": [30e-6]},
    "stdp": {"delays_s": [1e-6, -1e-6]},
    "volatility": {"n_points": 4, "t_last_s": 1e-3},
    "chronoamperometry": {"n_points": 2, "duration_s": 1e-3},
    "multi_bias": {},
    "sequence": {"blocks": [{"pulse": {"amplitude_v": 1.0, "width_s": 1e-6}}, {"read": {}}]},
}


@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_a_journaled_run_is_not_repeated_on_resume(name, tmp_path):
    journal = tmp_path / "journal.jsonl"
    b = SimBackend({"rows": 1, "cols": 2, "device": "volatile", "seed": 7})
    first = run(b, name, RESUME_CASES[name], journal=JournalFile(journal))
    calls = b.tally.calls
    again = run(b, name, RESUME_CASES[name], journal=JournalFile(journal))
    assert first and not again and b.tally.calls == calls  # nothing stored or pulsed twice


def test_a_row_outside_the_chip_is_one_line_naming_file_and_key(tmp_path, capsys):
    f = tmp_path / "mb.yaml"
    f.write_text("protocol: multi_bias\nparams: {row: 9}\nbackend: {sim: {rows: 4, cols: 4}}\n")
    assert main(["run", str(f), "--db", str(tmp_path / "r.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{f}: params.row: must be < 4 (rows), got 9"), err
    assert "Traceback" not in err
