"""Online update schemes (memhil.analog.updates.schemes, refresh): mechanics per scheme, pulse
accounting, the registry, and the acceptance toy (online linear regression on noisy,
drifting PCM) that reproduces the known ranking of the schemes."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.analog.mapping import WeightMapping
from memhil.analog.updates.schemes import (
    MixedPrecisionParams,
    SignParams,
    SignUpdate,
    UpdateStep,
    available_update_schemes,
    build_update_scheme,
)
from memhil.analog.weights import AnalogWeights, PulseSpec
from memhil.backends.sim import SimBackend
from memhil.calibration.pulse_response import measure_pulse_response
from memhil.core.config import from_mapping
from memhil.core.errors import ConfigError
from tests.backends import BackendUnderTest

PCM_SET, PCM_RESET = PulseSpec(1.0, 100e-9), PulseSpec(-2.5, 50e-9)


# -- helpers ----------------------------------------------------------------------------
class PulseSpy:
    """Wraps ``backend.pulse`` and records every call: (mask, amplitude, counts per cell),
    an account of the pulses issued that is independent of ``AnalogWeights.tally``."""

    def __init__(self, backend):
        self.calls: list[tuple[torch.Tensor, float, torch.Tensor]] = []
        self._orig = backend.pulse
        backend.pulse = self._pulse

    def _pulse(self, cells, amplitude, width_s, count=1, **kw):
        mask = cells.clone() if isinstance(cells, torch.Tensor) else cells
        n = torch.as_tensor(count).expand(mask.shape).clone()
        self.calls.append((mask, float(amplitude), torch.where(mask, n, torch.zeros_like(n))))
        return self._orig(cells, amplitude, width_s, count, **kw)

    def counts(self, polarity: int) -> torch.Tensor:
        """Per-cell pulses of one polarity (+1 SET, -1 RESET) over all recorded calls."""
        out = None
        for _, amp, n in self.calls:
            if (amp > 0) == (polarity > 0):
                out = n.clone() if out is None else out + n
        return out

    def total(self, polarity: int) -> int:
        c = self.counts(polarity)
        return 0 if c is None else int(c.sum())

    def reset(self) -> None:
        self.calls.clear()


def _setup(backend, set_pulse, reset_pulse, in_f, out_f, n_devices=1, reset_count=50, n_pulses=12):
    """Weights on tile 0; the SET response measured on tile 1 (fresh RESET first), or on
    the columns right of the weights on a one-tile backend."""
    cells = torch.zeros(backend.shape, dtype=torch.bool)
    if backend.shape[0] > 1:
        cells[1] = True
    else:
        cells[0, :, 2 * out_f * n_devices :] = True
        assert cells.any(), "a one-tile backend needs spare columns for the calibration"
    resp = measure_pulse_response(
        backend, cells, *set_pulse, n_pulses, prepare=(*reset_pulse, reset_count)
    )
    g_lo, g_hi = float(resp.g_curve_s[0]), float(resp.g_curve_s[-1])
    mapping = WeightMapping(in_f, out_f, g_lo, g_hi, w_max=1.0, n_devices=n_devices)
    weights = AnalogWeights(backend, mapping, PulseSpec(*set_pulse), PulseSpec(*reset_pulse))
    return weights, resp


def _pcm(rows, cols, seed=0, tiles=2):
    return SimBackend({"tiles": tiles, "rows": rows, "cols": cols, "device": "pcm", "seed": seed})


def _pcm_setup(in_f, out_f, n_devices=1, seed=0):
    be = _pcm(in_f, 2 * out_f * n_devices, seed)
    w, r = _setup(be, (1.0, 100e-9), (-2.5, 50e-9), in_f, out_f, n_devices, reset_count=1)
    return be, w, r


def _region(weights: AnalogWeights, full: torch.Tensor | None) -> torch.Tensor:
    m = weights.mapping
    if full is None:
        return torch.zeros(m.in_features, m.n_cols, dtype=torch.int64)
    return full[m.tile, m.rows, m.cols]


def _backend_setup(but: BackendUnderTest, make_backend):
    be = make_backend(but)
    tiles, rows, cols = be.shape
    out_f = cols // 2 if tiles > 1 else (cols - 1) // 2
    weights, resp = _setup(be, but.set_pulse, but.reset_pulse, rows, out_f)
    return be, weights, resp


# -- registry -----------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert set(available_update_schemes()) >= {
        "ideal",
        "sign",
        "stochastic",
        "multi",
        "mixed_precision",
    }
    with pytest.raises(ConfigError, match="no_such_scheme"):
        build_update_scheme("no_such_scheme")
    with pytest.raises(ValueError, match="bogus"):  # ConfigError is a ValueError
        build_update_scheme("sign", bogus=1)
    with pytest.raises(ConfigError, match="threshold"):
        build_update_scheme("sign", threshold=-1)
    with pytest.raises(ConfigError, match="transfer_every"):
        build_update_scheme("mixed_precision", transfer_every=0)
    with pytest.raises(ConfigError, match="refresh_threshold_s"):
        build_update_scheme("stochastic", refresh_threshold_s=-1e-6)
    with pytest.raises(ConfigError, match="ideal.refresh_threshold_s"):  # no devices to refresh
        build_update_scheme("ideal", refresh_threshold_s=6e-6)
    # base parameters are accepted by every device scheme
    s = build_update_scheme(
        "mixed_precision", max_pulses=4, transfer_every=2, refresh_threshold_s=6e-6, refresh_every=3
    )
    assert s.max_pulses == 4 and s.refresh_every == 3


def test_scheme_params_are_dataclasses_validated_and_named():
    p = from_mapping(MixedPrecisionParams, {"max_pulses": 4, "refresh_threshold_s": 6e-6})
    assert (p.max_pulses, p.transfer_every, p.refresh_threshold_s) == (4, 1, 6e-6)
    s = build_update_scheme("mixed_precision", **vars(p))
    assert s.params == p and s.max_pulses == 4 and s.refresh_threshold_s == 6e-6
    with pytest.raises(ConfigError, match="max_pulses: must be >= 1"):
        MixedPrecisionParams(max_pulses=0)
    with pytest.raises(ConfigError, match=r"sign\.threshold: expected a number"):
        build_update_scheme("sign", threshold="big")
    with pytest.raises(ConfigError, match=r"multi\.transfer_every: unknown key"):
        build_update_scheme("multi", transfer_every=2)
    with pytest.raises(ConfigError, match=r"ideal\.init"):
        build_update_scheme("ideal", init="ones")
    # a scheme is built from its params dataclass as well
    assert SignUpdate(SignParams(threshold=2.0)).threshold == 2.0
    with pytest.raises(TypeError, match="SignParams"):
        SignUpdate(MixedPrecisionParams())


def test_bind_checks_and_unbound_use():
    be, weights, resp = _pcm_setup(4, 2)
    with pytest.raises(RuntimeError, match="not bound"):
        build_update_scheme("sign").apply(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="n_devices"):
        build_update_scheme("multi").bind(weights, resp)
    with pytest.raises(ValueError, match="pulse response"):
        build_update_scheme("sign").bind(weights, None)
    s = build_update_scheme("sign").bind(weights, resp)
    assert s.quantum == pytest.approx(resp.granularity_s / weights.mapping.scale)
    with pytest.raises(ValueError, match="shape"):
        s.apply(torch.zeros(4, 2))


# -- ideal ----------------------------------------------------------------------------------
def test_ideal_is_a_clipped_float_shadow_without_writes():
    be, weights, resp = _pcm_setup(4, 3)
    spy = PulseSpy(be)
    s = build_update_scheme("ideal").bind(weights)  # needs no response
    assert torch.equal(s.effective_weight(), torch.zeros(3, 4))
    dw = torch.linspace(-0.7, 0.7, 12).reshape(3, 4)
    for _ in range(3):
        step = s.apply(dw)
    assert step == UpdateStep()
    assert torch.allclose(s.effective_weight(), (3 * dw).clamp(-1, 1))
    x = torch.randn(5, 4)
    assert torch.allclose(s.matvec(x), x @ s.effective_weight().t())
    assert spy.calls == [] and weights.tally.total == 0


# -- sign (on every backend) --------------------------------------------------------------
def test_sign_one_pulse_beyond_threshold_none_below(but, make_backend):
    be, weights, resp = _backend_setup(but, make_backend)
    m = weights.mapping
    spy = PulseSpy(be)
    theta = 0.5
    s = build_update_scheme("sign", threshold=theta).bind(weights, resp)
    q = s.quantum
    g = torch.Generator().manual_seed(3)
    # multiples of quantum/8 in [-2q, 2q], never exactly at ±theta*q
    dw = (torch.randint(-16, 17, (m.out_features, m.in_features), generator=g) + 0.5) * q / 8
    step = s.apply(dw)
    up, down = dw > theta * q, dw < -theta * q
    expected = torch.cat([up.t(), down.t()], 1).to(torch.int64)  # (in, n_cols)
    assert torch.equal(_region(weights, spy.counts(+1)), expected)
    assert spy.counts(-1) is None  # SET-only
    assert len(spy.calls) == 1 == step.calls
    assert step.set_pulses == int(up.sum() + down.sum()) == weights.tally.set_pulses
    assert torch.equal(step.n, up.long() - down.long())
    # below the threshold everywhere: no pulse, no backend call
    spy.reset()
    step = s.apply(dw.clamp(-0.45 * q, 0.45 * q))
    assert step.pulses == 0 and step.calls == 0 and spy.calls == []


# -- mixed precision (on every backend) -----------------------------------------------------
def test_mixed_precision_keeps_remainder_and_waits_for_a_quantum(but, make_backend):
    be, weights, resp = _backend_setup(but, make_backend)
    m = weights.mapping
    spy = PulseSpy(be)
    s = build_update_scheme("mixed_precision").bind(weights, resp)
    q = s.quantum
    # below one quantum per step: no pulse until the accumulator holds a whole quantum
    small = torch.full((m.out_features, m.in_features), 0.3 * q)
    small[0] = -0.3 * q  # one output accumulates the other way
    for k in range(3):
        step = s.apply(small)
        assert step.pulses == 0 and spy.calls == [], f"pulse before a quantum at step {k + 1}"
    step = s.apply(small)  # chi = 1.2 q: one pulse per weight, on the side of the sign
    n_expected = torch.ones(m.out_features, m.in_features, dtype=torch.int64)
    n_expected[0] = -1
    assert torch.equal(step.n, n_expected)
    counts = _region(weights, spy.counts(+1))
    plus, minus = counts[:, : m.out_features], counts[:, m.out_features :]
    assert torch.equal(plus, (n_expected > 0).t().long()) and torch.equal(
        minus, (n_expected < 0).t().long()
    )
    expected_chi = 4 * small.double() - n_expected.double() * q  # accumulated in float64
    assert torch.allclose(s.chi, expected_chi, rtol=0, atol=1e-15)

    # exact remainder: chi after one apply == dw - n * quantum (n = trunc(dw / quantum))
    s2 = build_update_scheme("mixed_precision").bind(weights, resp)
    g = torch.Generator().manual_seed(5)
    dw = (torch.rand(m.out_features, m.in_features, generator=g) * 6 - 3) * q
    step = s2.apply(dw)
    n = torch.trunc(dw.double() / q)
    assert torch.equal(step.n, n.long())
    assert torch.equal(s2.chi, dw.double() - n * q)
    assert bool((s2.chi.abs() < q).all())


def test_mixed_precision_cap_and_transfer_every():
    be, weights, resp = _pcm_setup(6, 2)
    s = build_update_scheme("mixed_precision", max_pulses=2, transfer_every=3).bind(weights, resp)
    q = s.quantum
    dw = torch.full((2, 6), 2.0 * q)
    assert s.apply(dw).pulses == 0 and s.apply(dw).pulses == 0
    step = s.apply(dw)  # chi = 6 q, capped transfer of 2
    assert torch.equal(step.n, torch.full((2, 6), 2))
    assert step.set_pulses == 2 * 12
    assert torch.allclose(s.chi, torch.full((2, 6), 4.0 * q, dtype=torch.float64))


def test_mixed_precision_threshold_rounds_up_below_one_quantum_and_waits_above():
    be, weights, resp = _pcm_setup(6, 2)
    low = build_update_scheme("mixed_precision", threshold=0.5).bind(weights, resp)
    q = low.quantum
    dw = torch.full((2, 6), 0.6 * q)
    dw[0] = 0.4 * q  # below θ = 0.5 quanta: kept in the accumulator
    step = low.apply(dw)
    assert torch.equal(step.n[0], torch.zeros(6, dtype=torch.int64))
    assert torch.equal(step.n[1].abs(), torch.ones(6, dtype=torch.int64))  # one pulse, not 0
    assert torch.allclose(low.chi[1], torch.full((6,), -0.4 * q, dtype=torch.float64))
    high = build_update_scheme("mixed_precision", threshold=2.0).bind(weights, resp)
    assert high.apply(torch.full((2, 6), 1.6 * q)).pulses == 0  # 1.6 quanta < θ = 2
    assert torch.equal(high.apply(torch.full((2, 6), 1.6 * q)).n.abs(), torch.full((2, 6), 3))
    with pytest.raises(ConfigError, match="threshold"):
        build_update_scheme("mixed_precision", threshold=0.0)


# -- stochastic -----------------------------------------------------------------------------
def test_stochastic_expected_pulses_match_delta_over_quantum():
    be, weights, resp = _pcm_setup(32, 8)
    spy = PulseSpy(be)
    s = build_update_scheme("stochastic", seed=11).bind(weights, resp)
    q = s.quantum
    g = torch.Generator().manual_seed(2)
    dw = (torch.rand(8, 32, generator=g) * 2 - 1) * 0.9 * q  # |dW| < q: p = |dW| / q
    steps = 40
    total = 0
    per_weight = torch.zeros(8, 32, dtype=torch.int64)
    for _ in range(steps):
        step = s.apply(dw)
        total += step.set_pulses
        per_weight += step.n
        assert bool((step.n * torch.sign(dw).long() >= 0).all())  # side given by the sign
    p = (dw.abs() / q).double()
    mean = steps * float(p.sum())
    std = math.sqrt(steps * float((p * (1 - p)).sum()))
    # a sum of 10240 independent Bernoulli draws: within 4 standard deviations
    # (two-sided p ~ 6e-5 for a correct implementation; std ~ 1.9 % of the mean here)
    assert abs(total - mean) < 4 * std, (total, mean, std)
    assert total == spy.total(+1) == weights.tally.set_pulses
    # unbiased per weight too: E[n] = steps * dW / q (loose, per-weight binomial spread)
    err = per_weight.double() - steps * dw.double() / q
    assert float(err.mean().abs()) < 4 * math.sqrt(steps * 0.25 / per_weight.numel())
    # same seed, same pulses
    be2, w2, r2 = _pcm_setup(32, 8)
    s2 = build_update_scheme("stochastic", seed=11).bind(w2, r2)
    assert torch.equal(
        s2.apply(dw).n, build_update_scheme("stochastic", seed=11).bind(weights, resp).apply(dw).n
    )


# -- multi-device round robin -----------------------------------------------------------------
def test_multi_round_robin_over_the_sides_devices():
    n_dev, in_f, out_f = 4, 5, 3
    be, weights, resp = _pcm_setup(in_f, out_f, n_devices=n_dev)
    spy = PulseSpy(be)
    s = build_update_scheme("multi").bind(weights, resp)
    qd = s.quantum / n_dev
    sign = torch.ones(out_f, in_f)
    sign[1] = -1  # output 1 moves down: its - devices get the pulses
    dev_counts = []
    for k in range(2 * n_dev):  # one pulse per weight and step
        spy.reset()
        step = s.apply(sign * qd * 1.2)  # round(1.2) = 1
        assert step.calls == 1 and torch.equal(step.n, sign.long())
        c = _region(weights, spy.counts(+1))  # (in, n_cols)
        plus, minus = weights.mapping.split(c)  # (in, out, N)
        side = torch.where((sign > 0).t().unsqueeze(-1), plus, minus)
        other = torch.where((sign > 0).t().unsqueeze(-1), minus, plus)
        assert int(other.sum()) == 0
        # step k pulses device k mod N of the side, for every weight
        assert torch.equal(side.argmax(-1), torch.full((in_f, out_f), k % n_dev))
        assert int(side.sum()) == in_f * out_f
        dev_counts.append(side)
    # across the steps each of the N devices got its share (2 pulses each)
    assert torch.equal(sum(dev_counts), torch.full((in_f, out_f, n_dev), 2))
    # n = round(|dW| / (quantum / N)); 3 pulses continue from the pointer (at 0 now)
    spy.reset()
    step = s.apply(torch.full((out_f, in_f), 2.6 * qd))
    assert torch.equal(step.n, torch.full((out_f, in_f), 3))
    plus, _ = weights.mapping.split(_region(weights, spy.counts(+1)))
    assert torch.equal(plus, torch.tensor([1, 1, 1, 0]).expand(in_f, out_f, n_dev))
    spy.reset()
    s.apply(torch.full((out_f, in_f), 2.6 * qd))  # pointer at 3: devices 3, 0, 1
    plus, _ = weights.mapping.split(_region(weights, spy.counts(+1)))
    assert torch.equal(plus, torch.tensor([1, 1, 0, 1]).expand(in_f, out_f, n_dev))


# -- refresh ----------------------------------------------------------------------------------
def test_refresh_resets_saturated_pairs_and_preserves_the_weight():
    in_f, out_f = 16, 8
    be, weights, resp = _pcm_setup(in_f, out_f, seed=1)
    m = weights.mapping
    g = torch.Generator().manual_seed(4)
    hi = torch.randint(10, 15, (in_f, out_f), generator=g)  # ~7-8 µS: above the threshold
    lo = torch.randint(2, 7, (in_f, out_f), generator=g)  # ~3.5-6 µS
    flip = torch.rand(in_f, out_f, generator=g) < 0.5
    plus, minus = torch.where(flip, lo, hi), torch.where(flip, hi, lo)
    plus[:, 0] = minus[:, 0] = 0  # output 0 stays at RESET: never refreshed
    weights.set_region(torch.cat([plus, minus], 1))
    g_before = be.true_conductance()[0, :, : m.n_cols]
    w_before = m.weights_from_conductance(g_before)

    spy = PulseSpy(be)
    thr = 6e-6
    s = build_update_scheme("sign", refresh_threshold_s=thr).bind(weights, resp)
    step = s.apply(torch.zeros(out_f, in_f))  # no update: only the refresh acts
    assert step.refreshes > 0.5 * (in_f * (out_f - 1))  # most pairs were above 6 µS
    assert step.refreshes == weights.tally.refreshes
    # one RESET call and one SET call for all pairs; one RESET per device of each pair
    assert [a > 0 for _, a, _ in spy.calls] == [False, True]
    assert step.reset_pulses == 2 * step.refreshes == spy.total(-1)
    assert step.set_pulses == spy.total(+1)

    reset_cells = _region(weights, spy.counts(-1)) > 0
    r_plus, r_minus = m.split(reset_cells)
    refreshed = r_plus.squeeze(-1).t()  # (out, in)
    assert torch.equal(r_plus, r_minus) and int(refreshed.sum()) == step.refreshes
    assert not refreshed[0].any()  # the pairs at RESET were left alone
    g_after = be.true_conductance()[0, :, : m.n_cols]
    w_after = m.weights_from_conductance(g_after)
    gp, gm = (x.squeeze(-1).t() for x in m.split(g_after))
    # the losing side of every refreshed pair is back at RESET (~0.1 µS)
    assert bool((torch.minimum(gp, gm)[refreshed] < 0.5e-6).all())
    assert torch.equal(w_after[~refreshed], w_before[~refreshed])
    # Weight preserved within open-loop programming noise: the rewrite starts from RESET,
    # where a PCM SET pulse has sigma ~1.7 µS (about 0.2 weight units at this scale,
    # ~7.9 µS per unit). Measured on seeds 0-2: bias |mean| <= 0.03, rms ~0.2-0.3.
    err = (w_after - w_before)[refreshed]
    assert abs(float(err.mean())) < 0.1
    assert float(err.pow(2).mean().sqrt()) < 0.4


def test_refresh_with_multi_device_cells_rewrites_all_devices_of_one_side():
    n_dev, in_f, out_f = 2, 6, 2
    be, weights, resp = _pcm_setup(in_f, out_f, n_devices=n_dev, seed=2)
    m = weights.mapping
    counts = torch.zeros(in_f, m.n_cols, dtype=torch.int64)
    counts[:, : out_f * n_dev] = 12  # + devices saturated-ish
    counts[:, out_f * n_dev :] = 10  # - devices nearly as high: small difference
    weights.set_region(counts)
    spy = PulseSpy(be)
    s = build_update_scheme("multi", refresh_threshold_s=5e-6).bind(weights, resp)
    step = s.apply(torch.zeros(out_f, in_f))
    assert step.refreshes == in_f * out_f
    assert step.reset_pulses == in_f * m.n_cols
    set_counts = _region(weights, spy.counts(+1))
    plus, minus = m.split(set_counts)
    # the rewrite goes to one side per cell, the same count on each of its N devices
    one_side = (plus.sum(-1) == 0) | (minus.sum(-1) == 0)
    assert bool(one_side.all())
    assert bool((plus.amax(-1) == plus.amin(-1)).all() and (minus.amax(-1) == minus.amin(-1)).all())


# -- pulse accounting ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,params,n_dev",
    [
        ("sign", {}, 1),
        ("stochastic", {"seed": 3}, 1),
        ("multi", {}, 3),
        ("mixed_precision", {"max_pulses": 3}, 1),
        ("mixed_precision", {"refresh_threshold_s": 5e-6}, 1),
        ("multi", {"refresh_threshold_s": 5e-6, "refresh_every": 2}, 2),
    ],
)
def test_tally_equals_pulses_issued(name, params, n_dev):
    be, weights, resp = _pcm_setup(8, 3, n_devices=n_dev, seed=3)
    spy = PulseSpy(be)
    s = build_update_scheme(name, **params).bind(weights, resp)
    g = torch.Generator().manual_seed(9)
    steps = [s.apply((torch.rand(3, 8, generator=g) * 2 - 1) * 3 * s.quantum) for _ in range(25)]
    t = weights.tally
    assert t.set_pulses == spy.total(+1) == sum(x.set_pulses for x in steps) > 0
    assert t.reset_pulses == spy.total(-1) == sum(x.reset_pulses for x in steps)
    assert t.calls == len(spy.calls) == sum(x.calls for x in steps)
    assert t.refreshes == sum(x.refreshes for x in steps)
    # one backend call per polarity per step (a refresh adds one RESET and one SET call)
    assert all(x.calls <= (3 if x.refreshes else 1) for x in steps)
    if "refresh_threshold_s" in params:
        assert t.refreshes > 0 and t.reset_pulses > 0
    if name != "multi":  # the update part issues |n| pulses on each of the side's devices
        upd = [x for x in steps if not x.refreshes]
        assert sum(x.set_pulses for x in upd) == sum(int(x.n.abs().sum()) * n_dev for x in upd)


# -- acceptance: online linear regression on noisy, drifting PCM -------------------------------
# Toy: y = X w* + noise, w* ~ U[-0.8, 0.8]^(4 x 16), label noise sigma = 0.8; minibatches of
# 16; forward through the array (weights.matvec; the float shadow for `ideal`); ΔW = -lr *
# grad of the MSE, lr = 0.01 for every scheme; 400 steps with 38.6 s of device time between
# updates (srnn-pcm's write cadence, so PCM drift acts: ~20 % decay over the run). Weights on
# differential PCM pairs (default Nandakumar model: SET noise as large as the mean step),
# `multi` on N = 4 pairs per weight. Final loss = held-out MSE averaged over the last 50
# steps (5 evaluations), then over 4 seeds (device + data).
#
# Measured (this code, 2-core CPU, ~3 s for everything), seed-mean final loss (x ideal):
#   ideal 0.663 | mixed_precision 0.860 (1.30) | sign 2.592 (3.91) | stochastic 2.247 (3.39)
#   | multi (N=4) 0.753 (1.14); device pulses per run (seed mean): mixed 532, sign 34,
#   stochastic 1950, multi 1285. Other seed groups (4-7, 8-11, 12-15, 16-19): mixed
#   1.31-1.40x, sign 3.7-4.2x, stochastic 3.1-3.6x, multi 1.12-1.14x.
# The 1.5x bound holds because label noise sets the floor: mixed precision's own excess
# loss (~0.2, i.e. ~0.012 per weight, about one SET pulse's noise) is set by the PCM
# programming noise and does not shrink with less label noise: at sigma = 0.3 (300 steps)
# the ratios were mixed 2.7-3.4, sign ~27, stochastic 5-8, multi ~3. `multi` (4x the
# devices, noise averaged over 4 pairs) beats mixed precision here, unlike the e-prop
# paper's ranking; it has not saturated after 400 (or 1000) steps.
TOY = dict(
    n_in=16, n_out=4, sigma=0.8, lr=0.01, batch=16, steps=400, wait_s=38.6, tail=50, every=10
)
TOY_SCHEMES = [
    ("ideal", {}, 1),
    ("mixed_precision", {}, 1),
    ("sign", {}, 1),
    ("stochastic", {"seed": 0}, 1),
    ("multi", {}, 4),
]
TOY_SEEDS = (0, 1, 2, 3)


def _train_toy(
    name, params, n_dev, seed, n_in, n_out, sigma, lr, batch, steps, wait_s, tail, every
):
    g = torch.Generator().manual_seed(seed)
    w_star = torch.rand(n_out, n_in, generator=g) * 1.6 - 0.8
    x = torch.randn(steps * batch, n_in, generator=g)
    y = x @ w_star.t() + sigma * torch.randn(steps * batch, n_out, generator=g)
    x_test = torch.randn(256, n_in, generator=g)
    y_test = x_test @ w_star.t() + sigma * torch.randn(256, n_out, generator=g)
    be, weights, resp = _pcm_setup(n_in, n_out, n_devices=n_dev, seed=seed)
    scheme = build_update_scheme(name, **params).bind(weights, resp)
    losses = []
    for t in range(steps):
        xb, yb = x[t * batch : (t + 1) * batch], y[t * batch : (t + 1) * batch]
        grad = 2 * (scheme.matvec(xb) - yb).t() @ xb / batch
        scheme.apply(-lr * grad)
        be.wait(wait_s)
        if t >= steps - tail and (t + 1) % every == 0:
            losses.append(float(((scheme.matvec(x_test) - y_test) ** 2).mean()))
    return sum(losses) / len(losses), weights.tally.set_pulses + weights.tally.reset_pulses


@pytest.fixture(scope="module")
def toy_results():
    res = {}
    # tiny tensors: intra-op threads only add synchronisation (seconds on a busy 2-core box)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, params, n_dev in TOY_SCHEMES:
            runs = [_train_toy(name, params, n_dev, s, **TOY) for s in TOY_SEEDS]
            res[name] = dict(
                per_seed=[r[0] for r in runs],
                loss=sum(r[0] for r in runs) / len(runs),
                pulses=sum(r[1] for r in runs) / len(runs),
            )
    finally:
        torch.set_num_threads(threads)
    ideal = res["ideal"]["loss"]
    print("\nonline linear regression on PCM (seed-mean final loss, x ideal, pulses per run):")
    for name, r in res.items():
        print(
            f"  {name:16s} {r['loss']:.3f}  ({r['loss'] / ideal:.2f}x)  pulses {r['pulses']:.0f}"
            f"  per seed {[round(v, 3) for v in r['per_seed']]}"
        )
    return res


def test_toy_mixed_precision_close_to_ideal(toy_results):
    ideal, mixed = toy_results["ideal"]["loss"], toy_results["mixed_precision"]["loss"]
    assert ideal < 0.8  # the float run learned (label-noise floor 0.64)
    assert mixed < 1.5 * ideal


def test_toy_sign_and_stochastic_clearly_worse(toy_results):
    ideal = toy_results["ideal"]["loss"]
    for name in ("sign", "stochastic"):
        assert toy_results[name]["loss"] > 2.0 * ideal, name
    # the ranking holds seed by seed: mixed precision beats sign and stochastic every time
    for k in range(len(TOY_SEEDS)):
        m = toy_results["mixed_precision"]["per_seed"][k]
        assert (
            m < toy_results["sign"]["per_seed"][k] and m < toy_results["stochastic"]["per_seed"][k]
        )
    # accumulate-then-transfer issues far fewer pulses than stochastic rounding
    assert toy_results["mixed_precision"]["pulses"] < 0.5 * toy_results["stochastic"]["pulses"]
