"""HP linear ion drift and its windows against closed forms (Strukov 2008, Joglekar, Biolek,
Prodromakis) and the current drive; the checks every device model shares are in
test_device_contract.py."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from memhil.devices import LinearIonDrift, build_device_model

NAMES = {"hp": "none", "joglekar": "joglekar", "biolek": "biolek", "prodromakis": "prodromakis"}
EXACT = dict(r_on_dtod=0.0, r_off_dtod=0.0, mu_v_dtod=0.0, dx_std=0.0)
F64 = torch.float64
K = 1e-14 * 100.0 / (10e-9) ** 2  # mu_v R_on / D^2 with the defaults, 1/(A s)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_model(name: str = "hp", **params) -> LinearIonDrift:
    return build_device_model({"model": name, **EXACT, **params})


def cells(model, x0, n: int):
    """float64 D2D tensors and a state of n cells at x0."""
    d2d = model.sample_d2d((n,), gen(), dtype=F64)
    return d2d, torch.full((n, 1), float(x0), dtype=F64)


def full(n: int, value, dtype=F64):
    return torch.full((n,), value, dtype=dtype)


# -- closed forms ---------------------------------------------------------------------


@pytest.mark.parametrize("i_a, x0", [(1e-5, 0.1), (-1e-5, 0.9)])
def test_constant_current_is_linear(i_a, x0):
    m = exact_model("hp")
    d2d, s = cells(m, x0, 4)
    width, count = 0.1, torch.tensor([0, 1, 5, 20])
    out = m.step_current(s, d2d, full(4, i_a), full(4, width), count, gen())[:, 0]
    expect = x0 + K * i_a * width * count.double()
    # dx/dt = k i is integrated in closed form: only float64 rounding remains.
    assert torch.allclose(out, expect, rtol=0, atol=1e-12)


def _voltage_closed_form(x0, v, t, r_on=100.0, r_off=16e3):
    # R_off x - b x^2/2 = R_off x0 - b x0^2/2 + k v t, smaller root of the quadratic.
    b = r_off - r_on
    c = r_off * x0 - 0.5 * b * x0**2 + K * v * t
    return (r_off - np.sqrt(r_off**2 - 2.0 * b * c)) / b


@pytest.mark.parametrize("v, x0", [(1.0, 0.1), (-1.0, 0.8)])
def test_constant_voltage_matches_analytic_trajectory(v, x0):
    m = exact_model("hp")
    t = np.array([1e-3, 0.05, 0.2, 0.5])
    d2d, s = cells(m, x0, 4)
    out = m.step(s, d2d, full(4, v), torch.tensor(t), torch.ones(4, dtype=torch.int64), 0.0, gen())[
        :, 0
    ].numpy()
    ref = _voltage_closed_form(x0, v, t)
    assert np.all((ref > 0) & (ref < 1)) and np.ptp(ref) > 0.1
    # Same trajectory, rationalised root vs textbook root: float64 rounding on O(1) values.
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
    # And against a direct integration of dx/dt = k v / R(x) (solver tolerance 1e-11).
    sol = solve_ivp(
        lambda _, x: K * v / (16e3 - (16e3 - 100.0) * x),
        (0, t[-1]),
        [x0],
        t_eval=t,
        rtol=1e-11,
        atol=1e-13,
    )
    np.testing.assert_allclose(out, sol.y[0], rtol=0, atol=1e-8)


def test_count_n_equals_n_single_pulses_voltage():
    m = exact_model("hp")
    d2d, s = cells(m, 0.2, 3)
    v, w = torch.tensor([1.0, -1.0, 2.0], dtype=F64), full(3, 0.05)
    once = m.step(s, d2d, v, w, torch.full((3,), 7), 0.0, gen())
    seq = s
    for _ in range(7):
        seq = m.step(seq, d2d, v, w, torch.ones(3, dtype=torch.int64), 0.0, gen())
    assert torch.allclose(once, seq, rtol=0, atol=1e-12)  # float64 rounding only


@pytest.mark.parametrize("i_a, x0", [(1e-4, 0.05), (-1e-4, 0.95)])
def test_joglekar_p1_logistic_under_constant_current(i_a, x0):
    m = exact_model("joglekar", p=1)
    d2d, s = cells(m, x0, 4)
    width, count = 0.05, torch.tensor([0, 1, 10, 40])
    out = m.step_current(s, d2d, full(4, i_a), full(4, width), count, gen())[:, 0]
    t = width * count.double()
    expect = 1.0 / (1.0 + (1.0 - x0) / x0 * torch.exp(-4.0 * K * i_a * t))
    # RK4, 16 substeps of h*4ki = 0.0125: global error ~ (h lambda)^4 ~ 1e-8 or far less.
    assert torch.allclose(out, expect, rtol=0, atol=1e-8)
    assert (out - x0).abs().max() > 0.5  # the test covers most of the sigmoid


# -- windows --------------------------------------------------------------------------


def test_joglekar_window_vanishes_at_both_bounds():
    m = exact_model("joglekar", p=2)
    x = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    for drive in (1.0, -1.0):
        f = m.window_value(x, full(3, drive))
        assert f.tolist() == [0.0, 1.0, 0.0]


def test_biolek_window_is_direction_dependent():
    m = exact_model("biolek", p=2)
    x = torch.tensor([0.0, 1.0], dtype=F64)
    up, down = m.window_value(x, full(2, 1.0)), m.window_value(x, full(2, -1.0))
    assert up[1] == 0.0 and up[0] == 1.0  # i > 0: zero at x = 1 only
    assert down[0] == 0.0 and down[1] == 1.0  # i < 0: zero at x = 0 only


def test_prodromakis_window_formula():
    j, p = 2.0, 3
    m = exact_model("prodromakis", p=p, j=j)
    x = torch.linspace(0, 1, 11, dtype=F64)
    f = m.window_value(x, torch.ones_like(x))
    assert torch.allclose(f, j * (1 - ((x - 0.5) ** 2 + 0.75) ** p), rtol=0, atol=1e-15)
    assert abs(f[0]) < 1e-15 and abs(f[-1]) < 1e-15
    assert f[5] == pytest.approx(j * (1 - 0.75**p), abs=1e-15)


@pytest.mark.parametrize("x0, i_a", [(0.0, 1e-4), (1.0, -1e-4)])
def test_biolek_leaves_a_bound_where_joglekar_locks(x0, i_a):
    count = torch.full((1,), 10)
    for name, moves in (("joglekar", False), ("biolek", True)):
        m = exact_model(name)
        d2d, s = cells(m, x0, 1)
        out = m.step_current(s, d2d, full(1, i_a), full(1, 0.05), count, gen())
        assert (out.item() != x0) is moves, name
        out_v = m.step(s, d2d, full(1, 1.0 if i_a > 0 else -1.0), full(1, 0.01), count, 0.0, gen())
        assert (out_v.item() != x0) is moves, name


# -- threshold and polarity -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_write_threshold(name):
    m = exact_model(name, v_threshold_v=0.55)
    d2d, s = cells(m, 0.5, 4)
    v = torch.tensor([0.5, -0.55, 0.6, -0.6], dtype=F64)
    out = m.step(s, d2d, v, full(4, 0.01), torch.full((4,), 20), 0.0, gen())[:, 0]
    assert torch.equal(out[:2], s[:2, 0])  # at or below 0.55 V: exactly no motion
    assert out[2] > 0.5 > out[3]  # above: positive SETs, negative RESETs


def test_current_drive_stops_where_device_voltage_reaches_threshold():
    vth, i_a = 0.55, 0.55 / 8000.0
    m = exact_model("hp", v_threshold_v=vth)
    d2d, s = cells(m, 0.1, 1)
    out = m.step_current(s, d2d, full(1, i_a), full(1, 10.0), torch.full((1,), 10), gen())
    x_stop = (16e3 - 8000.0) / (16e3 - 100.0)  # R(x) = vth / i
    assert out.item() == pytest.approx(x_stop, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_positive_pulses_raise_conductance(name):
    m = build_device_model(name)
    g = gen()
    d2d = m.sample_d2d((8,), g)
    s = torch.full((8, 1), 0.5)
    g0 = m.conductance(s, d2d, 0.2, 0.0)
    w, n = torch.full((8,), 0.01), torch.full((8,), 3)
    assert (
        m.conductance(m.step(s, d2d, torch.full((8,), 1.0), w, n, 0.0, g), d2d, 0.2, 0) > g0
    ).all()
    assert (
        m.conductance(m.step(s, d2d, torch.full((8,), -1.0), w, n, 0.0, g), d2d, 0.2, 0) < g0
    ).all()


# -- aliases and the current drive ---------------------------------------------------


@pytest.mark.parametrize("name, window", NAMES.items())
def test_alias_selects_window(name, window):
    m = build_device_model(name)
    assert isinstance(m, LinearIonDrift) and m.p.window == window
    assert m.conductance_range() == pytest.approx((1 / 16e3, 1 / 100.0))  # 1/R_off, 1/R_on


@pytest.mark.parametrize("name", NAMES)
def test_current_drive_seeded_shaped_and_idle_cells_unchanged(name):
    # step_current is specific to this model; step (voltage) is in test_device_contract.py.
    m = build_device_model(name)
    shape, g = (2, 3, 4), gen()
    d2d = m.sample_d2d(shape, g)
    s = torch.rand((*shape, 1), generator=g)
    count = torch.tensor([0, 3, 0, 1]).expand(shape)
    args = (torch.full(shape, 1e-4), torch.full(shape, 0.1), count)
    a, b, c = (m.step_current(s, d2d, *args, gen(seed)) for seed in (5, 5, 6))
    assert a.shape == s.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[count == 0], s[count == 0])
    assert (a[count > 0] != s[count > 0]).all()
