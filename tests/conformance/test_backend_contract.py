"""What EVERY backend must satisfy (simulator, hardware over the mock lab, a real bench).

Parameterized over ``backends.BACKENDS``; each test builds a fresh backend.
"""

from __future__ import annotations

import pytest
import torch

from memhil.backends.base import Backend, Capabilities, InputEncoding, Limits
from memhil.core.errors import LimitError
from tests.backends import BackendUnderTest


@pytest.fixture
def backend(but: BackendUnderTest):
    b = but.make()
    yield b
    b.close()


def _inputs(backend: Backend, n_lines: int, batch: int, amplitude: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return (torch.rand(batch, n_lines, generator=g) * 2 - 1).to(backend.dtype) * amplitude


def _bring_up(backend: Backend, but: BackendUnderTest) -> None:
    """Put the cells in a spread of intermediate states so G is not uniform."""
    t, r, c = backend.shape
    counts = torch.arange(t * r * c).reshape(t, r, c) % 4
    backend.pulse(None, but.set_pulse[0], but.set_pulse[1], counts)


def test_is_a_backend_with_consistent_shape(backend: Backend):
    assert isinstance(backend, Backend)
    t, r, c = backend.shape
    caps = backend.capabilities
    assert isinstance(caps, Capabilities) and (caps.tiles, caps.rows, caps.cols) == (t, r, c)
    assert isinstance(backend.limits, Limits)
    assert caps.read_strategy in ("parallel", "line", "cell")
    g_lo, g_hi = caps.conductance_range_s
    assert 0 <= g_lo < g_hi


def test_read_shapes_and_dtypes(backend: Backend, but: BackendUnderTest):
    t, r, c = backend.shape
    v = _inputs(backend, r, 5, but.v_read)
    i = backend.mvm(v)
    assert i.shape == (t, 5, c) and i.dtype == backend.dtype and torch.isfinite(i).all()
    assert backend.mvm(v, tile=t - 1).shape == (5, c)
    assert backend.mvm(v.expand(t, 5, r)).shape == (t, 5, c)
    u = _inputs(backend, c, 3, but.v_read)
    assert backend.mvm_t(u).shape == (t, 3, r)
    g = backend.read_conductance()
    assert g.shape == (t, r, c) and torch.isfinite(g).all() and (g >= 0).all()
    sel = backend.read_conductance([(0, 0, 0), (t - 1, r - 1, c - 1)])
    assert sel.shape == (2,)
    with pytest.raises(ValueError):
        backend.mvm(torch.zeros(5, r + 1))
    with pytest.raises(IndexError):
        backend.read_conductance([(t, 0, 0)])


def test_mvm_equals_v_at_g_within_noise(backend: Backend, but: BackendUnderTest):
    _bring_up(backend, but)
    g = backend.read_conductance().double()
    v = _inputs(backend, backend.shape[1], 16, but.v_read)
    i = backend.mvm(v).double()
    ideal = v.double() @ g
    scale = v.double().abs() @ g
    err = (i - ideal).abs()
    assert (err <= but.mvm_rtol * scale + but.mvm_atol_a).all(), float(
        (err / (scale + 1e-30)).max()
    )
    # and it is not trivially small: the currents carry the conductances
    assert float(ideal.abs().max()) > 10 * but.mvm_atol_a


def test_transpose_read_is_consistent(backend: Backend, but: BackendUnderTest):
    _bring_up(backend, but)
    t, r, c = backend.shape
    g = backend.read_conductance().double()
    u = _inputs(backend, c, 8, but.v_read)
    i_t = backend.mvm_t(u).double()
    ideal = u.double() @ g.transpose(-1, -2)
    scale = u.double().abs() @ g.transpose(-1, -2)
    assert ((i_t - ideal).abs() <= but.mvm_rtol * scale + but.mvm_atol_a).all()
    # bilinear identity u . (V G) == v . (G^T u) across the two read directions
    v = _inputs(backend, r, 8, but.v_read)
    lhs = (backend.mvm(v).double() * u.double()).sum(-1)
    rhs = (backend.mvm_t(u).double() * v.double()).sum(-1)
    tol = (
        2 * but.mvm_rtol * (v.double().abs() @ g * u.double().abs()).sum(-1)
        + 2 * c * but.mvm_atol_a
    )
    assert ((lhs - rhs).abs() <= tol).all()


def test_set_raises_and_reset_lowers_conductance(backend: Backend, but: BackendUnderTest):
    t, r, c = backend.shape
    target = torch.zeros(backend.shape, dtype=torch.bool)
    target[:, : r // 2] = True
    g0 = backend.read_conductance()
    backend.pulse(target, but.set_pulse[0], but.set_pulse[1], 5)
    g1 = backend.read_conductance()
    assert g1[target].mean() > 1.5 * g0[target].mean(), "SET pulses must raise G"
    # untouched cells stay where they were (within read noise)
    assert torch.allclose(g1[~target].mean(), g0[~target].mean(), rtol=0.1)
    backend.pulse(target, but.reset_pulse[0], but.reset_pulse[1], 5)
    g2 = backend.read_conductance()
    assert g2[target].mean() < 0.7 * g1[target].mean(), "RESET pulses must lower G"


@pytest.mark.parametrize(
    "request_kw, quantity",
    [
        ({"amplitude": 1e3}, "amplitude"),
        ({"width_s": 1e3}, "width"),
        ({"width_s": 1e-15}, "width"),
        ({"count": 10**9}, "count"),
        ({"compliance_a": 10.0}, "compliance"),
    ],
)
def test_limits_raise_before_any_state_change(
    backend: Backend, but: BackendUnderTest, request_kw, quantity
):
    _bring_up(backend, but)
    g_before = backend.read_conductance()
    t0 = backend.clock.now()
    sent = getattr(backend, "transactions", None)  # a bench's instrument operations
    kw = {"amplitude": but.set_pulse[0], "width_s": but.set_pulse[1], "count": 3, **request_kw}
    # per-cell request where only ONE cell is out of limits: nothing may be applied
    for key in ("amplitude", "width_s", "compliance_a"):
        if key in request_kw:
            base = {
                "amplitude": but.set_pulse[0],
                "width_s": but.set_pulse[1],
                "compliance_a": backend.limits.compliance_default_a,
            }[key]
            field = torch.full(backend.shape, base, dtype=torch.float64)
            field[0, 0, 0] = request_kw[key]
            kw[key] = field
    with pytest.raises(LimitError) as err:
        backend.pulse(None, **kw)
    msg = str(err.value)
    assert quantity in msg and "limit" in msg
    # nothing was applied: virtual time stood still and a bench issued no instrument
    # operation (a wall clock moves by itself, so on a bench the transaction count is the
    # proof; a bound on elapsed wall time raced a loaded CI machine)
    assert backend.clock.now() == t0 or not backend.clock.virtual, "a refused pulse took time"
    assert getattr(backend, "transactions", None) == sent, "a refused pulse reached the bench"
    g_after = backend.read_conductance()
    assert torch.allclose(g_after.mean(), g_before.mean(), rtol=0.05)


def test_read_voltage_limit(backend: Backend):
    r, c = backend.shape[1], backend.shape[2]
    vmax = backend.limits.v_read_max_v
    with pytest.raises(LimitError, match="read voltage"):
        backend.mvm(torch.full((1, r), 1.5 * vmax))
    pairs = slice(0, c // 2), slice(c // 2, 2 * (c // 2))
    for bad in (1.5 * vmax, float("nan")):  # the pair read too (the simulator's DAC checks)
        with pytest.raises(LimitError, match="read voltage"):
            backend.mvm_pairs(torch.full((1, r), bad), *pairs)


@pytest.mark.parametrize("mode", ["absmax", "fixed"])
def test_reads_take_an_input_encoding_and_a_digital_decoding(
    backend: Backend, but: BackendUnderTest, mode
):
    """``mvm(x, encoding=e)`` drives ``x * gain`` and returns the currents times 1 / gain;
    ``mvm_pairs(x, encoding=e, output_affine=(s, b))`` returns the pair differences so,
    times ``s``, plus ``b``: within the read noise of plain reads of ``x * gain``. A
    ``fixed`` encoding that lifts the inputs past the read limit is refused."""
    _bring_up(backend, but)
    _, r, c = backend.shape
    pairs = slice(0, c // 2), slice(c // 2, 2 * (c // 2))
    x = _inputs(backend, r, 6, 3.0) * torch.linspace(0.2, 1.0, 6, dtype=backend.dtype)[:, None]
    encoding = InputEncoding(mode, but.v_read, x_max=3.0)
    gain, back = encoding.scales(x)
    scale = torch.linspace(1e5, 3e5, 6, dtype=backend.dtype).unsqueeze(-1)
    bias = torch.linspace(-1.0, 1.0, c // 2, dtype=backend.dtype)
    g = backend.read_conductance().double()
    v = (x * gain).double()
    peak = v.abs().amax(-1)  # absmax: every input at the read voltage; fixed: within it
    if mode == "absmax":
        assert torch.allclose(peak, torch.full_like(peak, but.v_read), rtol=1e-6)
    assert bool((peak <= but.v_read * (1 + 1e-6)).all()) and float(peak.min()) > 0.1 * but.v_read
    full = backend.mvm(x, encoding=encoding).double() / back.double()
    err = (full - v @ g).abs()
    assert (err <= but.mvm_rtol * (v.abs() @ g) + but.mvm_atol_a).all()
    got = backend.mvm_pairs(x, *pairs, encoding=encoding, output_affine=(scale, bias)).double()
    assert got.shape == (backend.shape[0], 6, c // 2)
    i = (got - bias.double()) / (scale.double() * back.double())
    ideal = v @ (g[..., pairs[0]] - g[..., pairs[1]])
    span = v.abs() @ (g[..., pairs[0]] + g[..., pairs[1]])
    assert (((i - ideal).abs()) <= but.mvm_rtol * span + 2 * but.mvm_atol_a).all()
    assert float(span.max()) > 10 * but.mvm_atol_a  # currents well above the tolerance
    over = InputEncoding("fixed", 1.5 * backend.limits.v_read_max_v, x_max=float(x.abs().max()))
    with pytest.raises(LimitError, match="read voltage"):
        backend.mvm_pairs(x, *pairs, encoding=over)


def test_reads_apply_the_read_voltage_they_are_given(backend: Backend, but: BackendUnderTest):
    """``read``/``read_conductance`` carry ``v_read_v`` to the array: the reading reports
    it as applied, the current is the conductance times it, and a read voltage beyond the
    limit is refused. These devices are linear at read bias: G agrees at two voltages."""
    _bring_up(backend, but)
    cells = [(0, 0, 0), (0, 1, 1), (backend.shape[0] - 1, 1, 0)]
    lo, hi = 0.5 * but.v_read, but.v_read
    r_lo, r_hi = backend.read(cells, v_read_v=lo), backend.read(cells, v_read_v=hi)
    for r, v in ((r_lo, lo), (r_hi, hi)):
        assert r.g_s.shape == r.v_v.shape == r.i_a.shape == (3,)
        assert torch.allclose(r.v_v.double(), torch.full((3,), v, dtype=torch.float64))
        assert torch.allclose(r.i_a.double(), r.g_s.double() * v, rtol=1e-5)
        assert not r.at_floor.any()
    assert torch.allclose(
        r_lo.g_s, r_hi.g_s, rtol=0.06
    )  # two draws of 1 % read noise (+ PCM's own)
    assert backend.read_conductance(cells, v_read_v=hi).shape == (3,)
    with pytest.raises(LimitError, match="read voltage"):
        backend.read(cells, v_read_v=1.5 * backend.limits.v_read_max_v)


def test_clock_advances_with_pulses_and_waits(backend: Backend, but: BackendUnderTest):
    t0 = backend.clock.now()
    backend.pulse([(0, 0, 0)], but.set_pulse[0], but.set_pulse[1], 4)
    t1 = backend.clock.now()
    assert t1 - t0 >= 4 * but.set_pulse[1] * (1 - 1e-6)
    dt = 5.0 if backend.clock.virtual else 0.01
    backend.wait(dt)
    assert backend.clock.now() - t1 >= dt
    with pytest.raises(LimitError):
        backend.wait(-1.0)


def test_non_finite_requests_are_refused(backend: Backend, but: BackendUnderTest):
    r = backend.shape[1]
    with pytest.raises(LimitError):
        backend.mvm(torch.full((1, r), float("nan")))
    with pytest.raises(LimitError):
        backend.pulse(None, float("nan"), but.set_pulse[1])
    with pytest.raises(LimitError):
        backend.pulse(None, but.set_pulse[0], float("inf"))


def test_a_read_at_exactly_the_read_limit_passes(backend: Backend):
    # float32 rounds 0.5 * k up or down; a value asked equal to the limit must pass everywhere
    _, rows, cols = backend.shape
    v = torch.full((1, rows), backend.limits.v_read_max_v, dtype=backend.dtype)
    assert backend.mvm(v, tile=0).shape == (1, cols)
    v_t = torch.full((1, cols), -backend.limits.v_read_max_v, dtype=backend.dtype)
    assert backend.mvm_t(v_t, tile=0).shape == (1, rows)


@pytest.mark.parametrize("factor,passes", [(1 + 2.0**-22, True), (1 + 2.0**-18, False)])
def test_a_pulse_within_the_documented_slack_passes_every_layer(backend: Backend, factor, passes):
    from memhil.core.limits import SLACK

    assert (factor - 1 <= SLACK) == passes
    amp = backend.limits.v_pulse_max_v * factor
    width_s = max(1e-6, backend.limits.width_min_s)  # an SMU-pulsing bench has a floor
    if passes:
        backend.pulse([(0, 0, 0)], amp, width_s)
    else:
        with pytest.raises(LimitError, match="amplitude"):
            backend.pulse([(0, 0, 0)], amp, width_s)


@pytest.mark.parametrize(
    "cells,match",
    [
        ([(0, 0.5, 0)], "integers"),  # would pulse cell (0, 0, 0)
        ([(0, 1), (0, 2), (1, 1)], "triples"),  # three pairs read as two triples
        ([], "empty"),
    ],
)
def test_bad_cell_lists_are_refused_with_a_clear_message(backend: Backend, cells, match):
    t0 = backend.clock.now()
    sent = getattr(backend, "transactions", None)  # a bench's instrument operations
    with pytest.raises(ValueError, match=match):
        backend.pulse(cells, 1.0, 1e-6)
    with pytest.raises(ValueError, match=match):
        backend.read_conductance(cells)
    # nothing was pulsed or read: virtual time stood still (a wall clock moves anyway), and
    # a hardware backend issued no instrument operation
    assert backend.clock.now() == t0 or not backend.clock.virtual
    assert getattr(backend, "transactions", None) == sent


def test_a_huge_count_and_an_empty_batch_get_clear_messages(backend: Backend):
    with pytest.raises(LimitError, match="pulse count = 1e\\+30"):
        backend.pulse([(0, 0, 0)], 1.0, 1e-6, 1e30)
    with pytest.raises(ValueError, match="pulse count must be an integer"):
        backend.pulse([(0, 0, 0)], 1.0, 1e-6, float("nan"))
    with pytest.raises(ValueError, match="empty batch"):
        backend.mvm(torch.zeros(0, backend.shape[1]))


def test_tally_counts_applied_pulses_by_polarity_and_worst_case_energy(backend, but):
    assert backend.tally.total == 0 and backend.tally.energy_j == 0.0
    (v_set, w_set), (v_reset, w_reset) = but.set_pulse, but.reset_pulse
    i_cc = backend.limits.compliance_default_a
    backend.pulse([(0, 0, 0), (0, 1, 1)], v_set, w_set, 3)
    backend.pulse([(0, 0, 0)], v_reset, w_reset, 2, compliance_a=i_cc / 2)
    backend.pulse(torch.zeros(backend.shape, dtype=torch.bool), v_set, w_set)  # no cell
    with pytest.raises(LimitError):
        backend.pulse([(0, 0, 0)], 10 * backend.limits.v_pulse_max_v, w_set)
    t = backend.tally
    assert (t.set_pulses, t.reset_pulses, t.calls) == (6, 2, 2)
    expected_j = 6 * abs(v_set) * i_cc * w_set + 2 * abs(v_reset) * (i_cc / 2) * w_reset
    assert t.energy_j == pytest.approx(expected_j, rel=1e-9)


def test_describe_names_the_device_model_and_calibration_files(backend):
    desc = backend.describe()
    assert desc["device_model"] is not None
    assert isinstance(desc["calibration_files"], dict)
    if desc.get("station_config") is not None:  # a bench also describes its station
        assert "station" in desc
