"""Yakopcic model (IEEE EDL 2011): thresholds, polarity, RK4 against a fine reference
integration, the sinh I-V law at read; the checks every device model shares are in
test_device_contract.py."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from memhil.devices import YakopcicDevice, build_device_model

F64 = torch.float64
EXACT = dict(a_dtod=0.0, v_p_dtod=0.0, v_n_dtod=0.0, a_p_dtod=0.0, a_n_dtod=0.0, dx_std=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(**params) -> YakopcicDevice:
    return build_device_model({"model": "yakopcic", **params})


def cells(m, x0, n, dtype=F64):
    return m.sample_d2d((n,), gen(), dtype=dtype), torch.full((n, 1), float(x0), dtype=dtype)


def pulse(m, s, d2d, v, width, count, seed=0):
    shape = s.shape[:-1]

    def t(value, dtype):
        return torch.as_tensor(value, dtype=dtype).expand(shape).contiguous()

    return m.step(s, d2d, t(v, s.dtype), t(width, s.dtype), t(count, torch.int64), 0.0, gen(seed))


def reference(x0, v, t_end):
    """dx/dt = eta g(V) f(x) from the published equations, integrated by scipy (float64)."""
    a_p = a_n = 4000.0
    v_p, v_n, x_p, x_n, alpha_p, alpha_n = 0.16, 0.15, 0.3, 0.5, 1.0, 5.0
    g = (
        a_p * (math.exp(v) - math.exp(v_p))
        if v > v_p
        else (-a_n * (math.exp(-v) - math.exp(v_n)) if v < -v_n else 0.0)
    )

    def f(x):
        if v > 0 and x >= x_p:
            return math.exp(-alpha_p * (x - x_p)) * ((x_p - x) / (1 - x_p) + 1)
        if v <= 0 and x <= 1 - x_n:
            return math.exp(alpha_n * (x + x_n - 1)) * x / (1 - x_n)
        return 1.0

    sol = solve_ivp(
        lambda _, x: [g * f(x[0])], (0.0, t_end), [x0], method="LSODA", rtol=1e-12, atol=1e-14
    )
    return sol.y[0, -1]


def test_no_motion_inside_thresholds():
    m = model()  # default D2D: thresholds differ per cell
    d2d, s = cells(m, 0.4, 2000)
    frac = torch.rand(2000, generator=gen(1), dtype=F64)
    v = torch.cat([frac[:1000] * d2d["v_p_v"][:1000], -frac[1000:] * d2d["v_n_v"][1000:]])
    v[0], v[1000] = d2d["v_p_v"][0], -d2d["v_n_v"][1000]  # exactly at threshold: no motion
    assert torch.equal(pulse(m, s, d2d, v, 1.0, 1000), s)


def test_polarity():
    m = model()
    d2d, s = cells(m, 0.4, 2)
    out = pulse(m, s, d2d, torch.tensor([0.5, -0.5], dtype=F64), 1e-4, 2)
    assert out[0, 0] > 0.4 > out[1, 0]
    g0, g = m.conductance(s, d2d, 0.2, 0.0), m.conductance(out, d2d, 0.2, 0.0)
    assert g[0] > g0[0] and g[1] < g0[1]


@pytest.mark.parametrize(
    "v, x0, substeps, tol",
    [
        # Smooth stretch of f (no kink crossed): RK4 at the default 16 substeps, error << 1e-7.
        (-0.5, 0.11, 16, 1e-7),
        (0.2, 0.35, 16, 1e-7),
        # Trajectories crossing the kinks of f at x_p / 1 - x_n (f' jumps): the step straddling
        # a kink is only low-order accurate, ~1e-5 at 16 substeps, ~h^2 smaller when refined.
        (0.5, 0.11, 16, 5e-5),
        (-1.0, 1.0, 16, 5e-5),
        (-0.5, 1.0, 16, 5e-5),
        (-0.5, 1.0, 256, 1e-6),
    ],
)
def test_rk4_matches_reference_integration(v, x0, substeps, tol):
    m = model(**EXACT, substeps=substeps)
    d2d, s = cells(m, x0, 1)
    width, count = 1e-3, 3
    out = pulse(m, s, d2d, v, width, count).item()
    ref = reference(x0, v, width * count)
    assert abs(out - x0) > 1e-3  # the pulses do move the state
    assert out == pytest.approx(ref, abs=tol)


def test_threshold_rate_formula():
    m = model(**EXACT)
    d2d, _ = cells(m, 0.5, 4)
    v = torch.tensor([0.5, 0.16, -0.15, -0.7], dtype=F64)
    expect = [
        4000 * (math.exp(0.5) - math.exp(0.16)),
        0.0,
        0.0,
        -4000 * (math.exp(0.7) - math.exp(0.15)),
    ]
    np.testing.assert_allclose(m.threshold_rate(d2d, v).numpy(), expect, rtol=1e-12)


def test_sinh_iv_at_read():
    m = model(**EXACT, a2_a=0.2)
    d2d, _ = cells(m, 0.5, 3)
    s = torch.tensor([[0.11], [0.5], [1.0]], dtype=F64)
    x = s[:, 0]
    for v_read, a in ((0.5, 0.17), (-0.5, 0.2), (1.2, 0.17)):
        g = m.conductance(s, d2d, v_read, 0.0)
        i = m.current(s, d2d, torch.full((3,), v_read, dtype=F64))
        expect_i = a * x * math.sinh(0.05 * v_read)
        assert torch.allclose(i, expect_i, rtol=1e-12, atol=0)
        assert torch.allclose(g, expect_i / v_read, rtol=1e-12, atol=0)  # chord conductance
    # v_read = 0: the small-signal limit a1 x b
    assert torch.allclose(m.conductance(s, d2d, 0.0, 0.0), 0.17 * 0.05 * x, rtol=1e-12)
    # range: small-signal G from the as-fabricated x0 = 0.11 to x = 1, in siemens
    assert m.conductance_range() == pytest.approx((0.17 * 0.05 * 0.11, 0.17 * 0.05))
