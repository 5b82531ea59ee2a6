"""VTEAM fit (``memhil.calibration.fit.vteam``, ``memhil fit --model vteam``): the round trip
on the mock lab.

The shipped example (``examples/protocols/vteam_amplitudes.yaml`` on
``examples/mock_vteam_station.yaml``): a 6 x 6 VTEAM mock chip (array board) with KNOWN
parameters (the model defaults, D2D spreads 1 %, C2C 5 %) runs one ``pulse_train``
protocol with three LTP amplitudes (1 ns) and three LTD amplitudes (100 ns) through
``memhil run``; ``memhil fit --model vteam``
fits the eight VTEAM parameters and must recover the true ones within
``|fit - true| <= 3 stderr + floor``.

Model-discrepancy floor: the fit models the mean over a large virtual population with the
nominal parameters, but the chip is 36 cells, a finite sample of the D2D distribution:
their mean log-parameters differ from the nominal by sigma_d2d / sqrt(36) = 0.17 % (1
sigma, 1 % spread), an error shared by every point of the curve (so the s^2 (J^T J)^-1
error bars, which treat points as independent, do not contain it). Floor: 3 x that, 0.5 %
of each value (the exponents absorb the threshold's share through their correlation, so
they get the same floor). The statistical errors are far below that sampling shift, so
the floor carries the check; the OFF triple is strongly correlated (k_off and v_off trade
off), hence its wide error bars.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from memhil.backends.sim import SimBackend
from memhil.calibration.fit.neurosim import FitResult
from memhil.calibration.fit.vteam import (
    FITTED,
    PulseSequence,
    fit_vteam,
    population_curve,
)
from memhil.cli.app import main as cli_main
from memhil.devices.vteam import VTEAMDevice
from memhil.mock_hw.lab import MockLab
from memhil.store import RunStore

SPREADS = {
    k: 0.01
    for k in ("r_on_dtod", "r_off_dtod", "v_on_dtod", "v_off_dtod", "k_on_dtod", "k_off_dtod")
}
TRUE = {**{f.name: f.default for f in dataclasses.fields(VTEAMDevice.Params)}, **SPREADS}
ROWS = 6
TRAIN = {
    "n_pulses": 30,
    "v_ltp": [0.235, 0.25, 0.27],
    "v_ltd": [-0.06, -0.09, -0.13],
    "width_s": 1e-9,
    "width_ltd_s": 1e-7,
    "compliance_a": 0.01,
    "v_read": 0.2,
}


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STATION = EXAMPLES / "mock_vteam_station.yaml"
PROTOCOL = EXAMPLES / "protocols" / "vteam_amplitudes.yaml"


def _station(device) -> dict:
    """The example VTEAM station with another mock device."""
    st = yaml.safe_load(STATION.read_text())
    st["mock"]["device"] = device
    return st


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The shipped example run through ``memhil run`` (its own backend: the example VTEAM
    station), then ``memhil fit --model vteam`` with the known D2D spreads held."""
    tmp = tmp_path_factory.mktemp("vteam")
    db = tmp / "runs.db"
    assert cli_main(["run", str(PROTOCOL), "--db", str(db), "--no-progress"]) == 0
    out = tmp / "fitted.yaml"
    fix = [a for k, v in SPREADS.items() for a in ("--fix", f"{k}={v}")]
    assert cli_main(["fit", "1", "--model", "vteam", "--db", str(db), "--out", str(out), *fix]) == 0
    return tmp, db, out


def test_example_matches_the_stated_truth():
    st = yaml.safe_load(STATION.read_text())
    assert st["mock"]["device"] == {"model": "vteam", **SPREADS}
    assert st["chip"]["rows"] == st["chip"]["cols"] == ROWS
    assert yaml.safe_load(PROTOCOL.read_text())["params"] == TRAIN


def test_vteam_fit_recovers_mock_chip_parameters(measured, capsys):
    _, _, out = measured
    fit = FitResult.load(out)
    assert fit.model == "vteam" and "@" in fit.version
    assert set(fit.stderr) == set(FITTED)
    floor = 3 * 0.01 / math.sqrt(ROWS * ROWS)  # relative; see the module docstring
    for name in FITTED:
        err = abs(fit.params[name] - TRUE[name])
        bound = 3 * fit.stderr[name] + floor * abs(TRUE[name])
        print(
            f"{name}: true {TRUE[name]:.4g} fit {fit.params[name]:.5g} +/- "
            f"{fit.stderr[name]:.2g} (|err| {err:.2g}, bound {bound:.2g})"
        )
        assert 0 < fit.stderr[name] < math.inf
        assert err <= bound, name
    # the held parameters are in the file as given
    for k, v in SPREADS.items():
        assert fit.params[k] == v
    assert fit.covariance["k_off_m_per_s"]["v_off_v"] != 0.0


def test_fitted_file_loads_in_simulator_and_mock_chip(measured):
    """The fitted YAML drives a SimBackend (``device: fitted.yaml``) and a mock chip (the
    station's ``mock: device: fitted.yaml``, relative to the station file); both predict
    the measured pulse response: rms error <= 3 % of the conductance span (1 - 20 mS; the
    fit's own rms residual is ~1.2 %, and the predicting population adds its own C2C draws),
    worst point <= 15 %: the first LTD pulse from ON drops G by two thirds of the span in
    one step, so the fitted OFF rate's ~12 % uncertainty (k_off) moves that point by up to
    ~10 % of the span.
    """
    tmp, db, out = measured
    from memhil.runs.fit import pulse_sequence_from_run

    with RunStore(db) as store:
        seq = pulse_sequence_from_run(store, 1)
    span = seq.g_mean_s.max() - seq.g_mean_s.min()

    def predicted(backend) -> np.ndarray:
        cells = torch.ones(backend.shape, dtype=torch.bool)
        g = [float(backend.read_conductance(cells).double().mean())]
        for v, w in zip(seq.amplitude_v.tolist(), seq.width_s.tolist()):
            backend.pulse(None, v, w, compliance_a=0.01)
            g.append(float(backend.read_conductance(cells).double().mean()))
        return np.asarray(g)

    sim = SimBackend(
        {
            "rows": 16,
            "cols": 16,
            "device": str(out),
            "seed": 3,
            "read": {"read_noise_rel": 0.01},
            "limits": {"width_min_s": 1e-9, "compliance_max_a": 0.01},
        }
    )
    assert sim.capabilities.device_model == "vteam"
    d_sim = predicted(sim) - seq.g_mean_s
    station = tmp / "twin.yaml"
    station.write_text(yaml.safe_dump(_station(out.name)))
    twin = MockLab.open_backend(str(station), strategy="parallel")
    try:
        d_twin = predicted(twin) - seq.g_mean_s
    finally:
        twin.close()
    for name, d in (("sim", d_sim), ("mock twin", d_twin)):
        rms, worst = float(np.sqrt(np.mean(d**2))) / span, float(np.abs(d).max()) / span
        print(f"{name}: rms |pred - measured| {rms:.4f}, max {worst:.4f} of the span")
        assert rms <= 0.03 and worst <= 0.15, name


def test_fit_exact_on_its_own_population_curve():
    """Noise-free data from the fit's own population model (same D2D sample) -> the
    parameters to 1e-6, from a start 10-50 % away (the model defaults)."""
    true = {
        **TRUE,
        "k_on_m_per_s": 5.0,
        "v_on_v": 0.18,
        "alpha_on": 2.5,
        "k_off_m_per_s": 1e-3,
        "v_off_v": 0.03,
        "alpha_off": 1.5,
    }
    amps = [0.22] * 25 + [-0.06] * 25 + [0.235] * 25 + [-0.09] * 25 + [0.25] * 25 + [-0.12] * 25
    widths = [1e-9 if a > 0 else 1e-7 for a in amps]
    z = np.random.default_rng(123).standard_normal((6, 4096))
    g = population_curve(
        PulseSequence(np.array(amps), np.array(widths), np.zeros(len(amps) + 1)),
        true,
        z,
        x_start=1.0,
    )
    fit = fit_vteam(
        [PulseSequence(np.array(amps), np.array(widths), g)], fixed=SPREADS, n_pop=4096, seed=123
    )
    for name in FITTED:
        assert fit.params[name] == pytest.approx(true[name], rel=1e-6), name
    assert fit.residual_rms < 1e-12


def test_fit_vteam_rejects_bad_input():
    seq = PulseSequence(
        np.array([0.25, -0.1]), np.array([1e-9, 1e-7]), np.array([1e-3, 2e-3, 1e-3])
    )
    with pytest.raises(ValueError, match="unknown parameter"):
        fit_vteam([seq], fixed={"k_onn": 1.0})
    with pytest.raises(ValueError, match="window"):
        fit_vteam([seq], fixed={"window": "kvatinsky"})
    with pytest.raises(ValueError, match="needs 3 values"):
        PulseSequence(np.array([0.25, -0.1]), 1e-9, np.array([1e-3]))
