"""The contract every device-model plugin satisfies, run over every registered name.

``device_model_names()`` drives the parametrization, so a newly registered model (or alias)
is checked automatically; the checks that pulse a device need a programming recipe from
``RECIPES`` below, and a model without one fails ``test_recipe_table_covers_every_model``
(and each pulse-dependent check) with a message saying what to add. Model-specific
physics (closed forms, statistics, thresholds) lives in each model's own test file.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest
import torch
import yaml

from memhil.core.errors import ConfigError
from memhil.devices import (
    DeviceModel,
    build_device_model,
    device_model_names,
)

NAMES = device_model_names()
SHAPE = (2, 3, 4)  # arbitrary leading shape (tiles, rows, cols)
T_WRITE = 1.0  # absolute time (s) at the end of the test pulses
T_READ = 100.0  # read time (s): later than the writes, so drift models drift
V_READ = 0.2
DTYPES = [torch.float32, torch.float64]


class Pulse(NamedTuple):
    v: float  # V; positive potentiates (SET), negative depresses (RESET)
    width_s: float
    count: int


class Recipe(NamedTuple):
    """How to program one model from its as-fabricated state.

    ``set`` must raise the mean conductance visibly without driving every cell to a
    bound (the C2C check needs spread left); ``reset`` must lower it again from the state
    ``set`` leaves (None only for models with no depression; bipolar models need one);
    ``saturate`` is a long train of strong positive pulses, for the conductance ceiling;
    ``noisy`` are parameter overrides that switch on every D2D spread the model has.
    """

    set: Pulse
    reset: Pulse | None
    saturate: Pulse
    noisy: Mapping[str, Any] = {}


_NEUROSIM = Recipe(
    set=Pulse(2.0, 80e-9, 5),
    reset=Pulse(-2.0, 80e-9, 5),
    saturate=Pulse(2.0, 80e-9, 200),
    noisy={"g_min_dtod": 0.1, "g_max_dtod": 0.1, "a_dtod": 0.2},
)
# HP moves x by ~1e-3 per ms at 1 V (Strukov constants): pulses of tens of ms to seconds
# (short ones here: the windows' RK4 takes ~16 substeps per ms at 1 V).
_ION_DRIFT = Recipe(
    set=Pulse(1.0, 0.02, 1), reset=Pulse(-1.0, 0.02, 1), saturate=Pulse(1.0, 1.0, 1)
)

RECIPES: dict[str, Recipe] = {
    # SET >= 0.5 V (width does not enter the fit), RESET <= -0.5 V.
    "pcm": Recipe(
        set=Pulse(1.0, 100e-9, 5),
        reset=Pulse(-2.5, 100e-9, 1),
        saturate=Pulse(1.0, 100e-9, 100),
        noisy={"nu_dtod": 0.2, "g_max_dtod": 0.1},
    ),
    # +2.8 V is 4 sigma above the mean breakdown voltage: forms ~all cells; -1.2 V RESETs.
    "rram_forming": Recipe(
        set=Pulse(2.8, 1e-6, 1),
        reset=Pulse(-1.2, 1e-6, 1),
        saturate=Pulse(2.8, 1e-6, 10),
        noisy={"g_pristine_log_sigma": 0.1},
    ),
    # NeuroSim writes with +-2 V (threshold 1.5 V); 200 pulses saturate the 31-level curve.
    "neurosim": _NEUROSIM,
    "ltp_ltd": _NEUROSIM,
    "hp": _ION_DRIFT,
    "joglekar": _ION_DRIFT,
    "biolek": _ION_DRIFT,
    "prodromakis": _ION_DRIFT,
    # Just above the 0.2 V SET threshold, 1 us moves x by ~0.4; -0.2 V RESETs fully.
    "vteam": Recipe(
        set=Pulse(0.21, 1e-6, 1), reset=Pulse(-0.2, 1e-6, 1), saturate=Pulse(0.3, 1e-6, 2)
    ),  # one such pulse already saturates
    # +-0.5 V for 0.1 ms moves x by ~0.2 per pulse; 1 V for ms saturates.
    "yakopcic": Recipe(
        set=Pulse(0.5, 1e-4, 2), reset=Pulse(-0.5, 1e-4, 2), saturate=Pulse(1.0, 1e-3, 10)
    ),
    # the default table: +-0.1 uS per 1 V / 1 us pulse over 1-10 uS; 100 pulses saturate
    "empirical": Recipe(
        set=Pulse(1.0, 1e-6, 5),
        reset=Pulse(-1.0, 1e-6, 5),
        saturate=Pulse(1.0, 1e-6, 100),
        noisy={
            "step_dtod": (0.2, 0.2),
            "step_std_s": ((2e-8, 2e-8), (2e-8, 2e-8)),
            "g0_std_s": 1e-7,
        },
    ),
    # 1 V (twice the threshold) for 1 us moves x by 0.05, half of it relaxing (tau 1 ms)
    "volatile": Recipe(
        set=Pulse(1.0, 1e-6, 4),
        reset=Pulse(-1.0, 1e-6, 2),
        saturate=Pulse(1.0, 1e-5, 100),
        noisy={"tau_dtod": 0.2, "k_dtod": 0.2, "dx_std": 0.05},
    ),
}


#: Parameter variants that take other code paths, run through the same contract.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "vteam": [{"window": "kvatinsky"}, {"iv": "exponential"}],
    "rram_forming": [{"v_bd_per_decade_v": 0.1}],
    "neurosim": [{"a_ltd": 3.0, "p_max_ltd": 20.0}],
    "volatile": [{"volatile_fraction": 0.0, "dx_std": 0.1}],
}

#: (registered name, parameter overrides): every name at its defaults, then the variants.
CASES = [pytest.param(name, {}, id=name) for name in NAMES] + [
    pytest.param(name, v, id=name + "-" + ",".join(f"{k}={x}" for k, x in v.items()))
    for name, vs in VARIANTS.items()
    for v in vs
]


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        pytest.fail(
            f"device model {name!r} has no programming recipe: add an entry to RECIPES "
            f"in {__file__} (a SET pulse that programs it, a RESET pulse or None, a "
            "saturating train, and overrides that switch its D2D spreads on)"
        )
    return RECIPES[name]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(name: str, variant: Mapping[str, Any] | None = None, noisy: bool = False) -> DeviceModel:
    """The model by name, with a variant's overrides and, if ``noisy``, its D2D spreads on."""
    overrides = recipe(name).noisy if noisy else {}
    return build_device_model({"model": name, **(variant or {}), **overrides})


def chip(m: DeviceModel, shape=SHAPE, dtype=torch.float32, seed: int = 0):
    """D2D tensors and the as-fabricated state of a fresh array."""
    d2d = m.sample_d2d(shape, gen(seed), dtype=dtype)
    return d2d, m.initial_state(d2d, shape, gen(seed + 1), dtype=dtype)


def pulse(m: DeviceModel, state, d2d, p: Pulse, seed: int = 1, count=None):
    """``p`` applied to every cell (``count`` overrides the recipe's count when given)."""
    shape = state.shape[:-1]
    full = lambda x: torch.full(shape, x, dtype=state.dtype)
    cnt = torch.full(shape, p.count, dtype=torch.int64) if count is None else count
    return m.step(state, d2d, full(p.v), full(p.width_s), cnt, T_WRITE, gen(seed))


def mixed_pulses(rec: Recipe, shape=SHAPE, dtype=torch.float32):
    """Per-cell (v, width, count): SET on row 0 of each tile, RESET (or SET) on the rest,
    zero counts on every other column, and a zero-volt pulse with nonzero count on one cell."""
    neg = rec.reset or rec.set
    v = torch.full(shape, neg.v, dtype=dtype)
    w = torch.full(shape, neg.width_s, dtype=dtype)
    n = torch.full(shape, neg.count, dtype=torch.int64)
    v[:, 0], w[:, 0], n[:, 0] = rec.set.v, rec.set.width_s, rec.set.count
    n[..., ::2] = 0
    v[0, 0, 1], n[0, 0, 1] = 0.0, max(rec.set.count, 1)
    return v, w, n


def check_conductance(m: DeviceModel, state, d2d, shape=SHAPE):
    g = m.conductance(state, d2d, V_READ, T_READ)
    assert g.shape == shape and g.dtype == state.dtype
    assert torch.isfinite(g).all() and (g >= 0).all()
    assert (g < 1.0).all(), "conductance must be in siemens (a device above 1 S is not)"
    return g


# -- the recipe table -----------------------------------------------------------------


def test_recipe_table_covers_every_model():
    missing = sorted(set(NAMES) - set(RECIPES))
    assert not missing, (
        f"registered device models without a programming recipe: {missing}; "
        f"add them to RECIPES in {__file__}"
    )
    stale = sorted((set(RECIPES) | set(VARIANTS)) - set(NAMES))
    assert not stale, f"RECIPES or VARIANTS name models that are not registered: {stale}"


@pytest.mark.parametrize("name", NAMES)
def test_recipe_matches_the_model_kind(name):
    rec, m = recipe(name), model(name)
    assert rec.set.v > 0 and rec.saturate.v > 0 and rec.set.count > 0
    if m.bipolar:
        assert rec.reset is not None, f"{name} is bipolar: its recipe needs a RESET pulse"
    if rec.reset is not None:
        assert rec.reset.v < 0 and rec.reset.count > 0


# -- construction and configuration ---------------------------------------------------


@pytest.mark.parametrize("name, variant", CASES)
def test_build_by_name_and_config_round_trip(name, variant):
    m = build_device_model({"model": name, **variant})
    assert isinstance(m, DeviceModel) and build_device_model(m) is m
    assert m.name == name and m.state_names
    assert isinstance(m.bipolar, bool) and isinstance(m.drifts, bool)
    for noisy in (False, True):
        m = model(name, variant, noisy)
        cfg = m.config()
        assert cfg["model"] == name
        again = build_device_model(cfg)
        assert type(again) is type(m) and again.p == m.p and again.config() == cfg


@pytest.mark.parametrize("name", NAMES)
def test_unknown_key_raises_config_error_naming_it(name):
    with pytest.raises(ConfigError, match="no_such_param"):
        build_device_model({"model": name, "no_such_param": 1.0})


def test_unknown_or_missing_model_name_raises_config_error():
    with pytest.raises(ConfigError, match="no_such_model"):
        build_device_model("no_such_model")
    with pytest.raises(ConfigError, match="no_such_model"):
        build_device_model({"model": "no_such_model"})
    with pytest.raises(ConfigError, match="device.model"):
        build_device_model({"g_max_s": 1e-5})


def _first_float_field(params) -> str:
    hints = typing.get_type_hints(type(params))
    return next(f.name for f in dataclasses.fields(params) if hints[f.name] is float)


@pytest.mark.parametrize("name, variant", CASES)
def test_yaml_file_loads_and_bad_values_name_file_and_key(name, variant, tmp_path):
    m = model(name, variant, noisy=True)
    path = tmp_path / f"{name}_fit.yaml"
    path.write_text(yaml.safe_dump(m.config()))
    loaded = build_device_model(path)
    assert type(loaded) is type(m) and loaded.p == m.p and loaded.name == name
    key = _first_float_field(m.p)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": name, key: "fast"}))
    with pytest.raises(ConfigError, match=key) as err:
        build_device_model(bad)
    assert err.value.source == str(bad)


@pytest.mark.parametrize("name, variant", CASES)
def test_conductance_range_in_siemens(name, variant):
    g_min, g_max = model(name, variant).conductance_range()
    assert 0 <= g_min < g_max < 1.0  # siemens: no device has 1 S; a µS number would


# -- seeded randomness ----------------------------------------------------------------


@pytest.mark.parametrize("name, variant", CASES)
def test_d2d_and_initial_state_are_seeded(name, variant):
    m = model(name, variant, noisy=True)
    a, b, c = (m.sample_d2d(SHAPE, gen(seed)) for seed in (1, 1, 2))
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert a[key].shape == SHAPE, key
        assert torch.equal(a[key], b[key]), key
        assert not torch.equal(a[key], c[key]), f"{key} does not depend on the seed"
    s1, s2 = (m.initial_state(a, SHAPE, gen(7)) for _ in range(2))
    assert torch.equal(s1, s2)
    assert s1.shape == (*SHAPE, len(m.state_names))


@pytest.mark.parametrize("name, variant", CASES)
def test_c2c_is_seeded(name, variant):
    m = model(name, variant, noisy=True)
    d2d, s = chip(m)
    a, b, c = (pulse(m, s, d2d, recipe(name).set, seed=seed) for seed in (5, 5, 6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c), "the SET recipe shows no cycle-to-cycle randomness"


# -- step: shapes, idle cells, purity, dtype ------------------------------------------


@pytest.mark.parametrize("name, variant", CASES)
def test_count_zero_and_zero_volt_cells_unchanged(name, variant):
    rec, m = recipe(name), model(name, variant)
    d2d, s = chip(m)
    s = pulse(m, s, d2d, rec.set)  # programmed once, so RESETs have something to undo
    v, w, n = mixed_pulses(rec)
    out = m.step(s, d2d, v, w, n, T_WRITE, gen(3))
    assert out.shape == s.shape == (*SHAPE, len(m.state_names))
    idle = (n == 0) | (v == 0)
    assert torch.equal(out[idle], s[idle])
    assert not torch.equal(out[~idle], s[~idle]), "the recipe pulses program no cell"


@pytest.mark.parametrize("name, variant", CASES)
def test_all_counts_zero_returns_the_input_state(name, variant):
    rec, m = recipe(name), model(name, variant)
    d2d, s = chip(m)
    s = pulse(m, s, d2d, rec.set)
    zero = torch.zeros(SHAPE, dtype=torch.int64)
    for p in (rec.set, rec.reset, rec.saturate):
        if p is not None:
            assert torch.equal(pulse(m, s, d2d, p, count=zero), s)
    v, w, _ = mixed_pulses(rec)
    assert torch.equal(m.step(s, d2d, v, w, zero, T_WRITE, gen(3)), s)


@pytest.mark.parametrize("name, variant", CASES)
def test_step_and_conductance_do_not_modify_their_inputs(name, variant):
    rec, m = recipe(name), model(name, variant, noisy=True)
    d2d, s = chip(m)
    s = pulse(m, s, d2d, rec.set)
    v, w, n = mixed_pulses(rec)
    before = [t.clone() for t in (s, v, w, n)]
    d2d_before = {k: t.clone() for k, t in d2d.items()}
    m.step(s, d2d, v, w, n, T_WRITE, gen(3))
    m.step(s, d2d, v, w, torch.zeros_like(n), T_WRITE, gen(3))
    for p in (rec.set, rec.reset, rec.saturate):
        if p is not None:
            pulse(m, s, d2d, p)
    m.conductance(s, d2d, V_READ, T_READ)
    for after, orig in zip((s, v, w, n), before):
        assert torch.equal(after, orig)
    assert d2d.keys() == d2d_before.keys()
    assert all(torch.equal(d2d[k], d2d_before[k]) for k in d2d)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, variant", CASES)
def test_dtype_is_kept_and_conductance_is_finite_nonnegative_siemens(name, variant, dtype):
    rec, m = recipe(name), model(name, variant, noisy=True)
    d2d, s = chip(m, dtype=dtype)
    assert all(t.dtype == dtype for t in d2d.values())
    assert s.dtype == dtype
    states = [s, pulse(m, s, d2d, rec.set), pulse(m, s, d2d, rec.saturate)]
    if rec.reset is not None:
        states.append(pulse(m, states[1], d2d, rec.reset))
    v, w, n = mixed_pulses(rec, dtype=dtype)
    states.append(m.step(states[1], d2d, v, w, n, T_WRITE, gen(3)))
    for state in states:
        assert state.dtype == dtype and state.shape == (*SHAPE, len(m.state_names))
        g = check_conductance(m, state, d2d)
        std = m.read_noise_std(g, d2d)
        if std is not None:  # a model's own read noise: finite, >= 0, per cell
            assert std.shape == SHAPE and torch.isfinite(std).all() and (std >= 0).all()


def _declares_ceiling(name: str) -> bool:
    cls = type(build_device_model(name))
    return cls.conductance_ceiling is not DeviceModel.conductance_ceiling


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, variant", [c for c in CASES if _declares_ceiling(c.values[0])])
def test_conductance_ceiling_bounds_saturated_cells(name, variant, dtype):
    rec, m = recipe(name), model(name, variant, noisy=True)
    d2d, s = chip(m, dtype=dtype)
    ceiling = m.conductance_ceiling(d2d)
    if ceiling is None:  # a model may have a ceiling for some parameters only
        return
    assert 0 < ceiling < 1.0
    # Rounding only: float32 G = 1/(R_off - (R_off - R_on) x) at x = 1 misses 1/R_on by
    # ~(R_off/R_on) eps ~ 1e-5 for the HP constants.
    rtol = 1e-4 if dtype == torch.float32 else 1e-12
    out = pulse(m, s, d2d, rec.saturate)
    for state in (s, out):
        g = m.conductance(state, d2d, V_READ, T_WRITE)
        assert (g <= ceiling * (1 + rtol)).all(), float(g.max() / ceiling)


# -- generic physics: polarity --------------------------------------------------------


@pytest.mark.parametrize("name, variant", CASES)
def test_positive_pulses_raise_and_negative_pulses_lower_mean_conductance(name, variant):
    rec, m = recipe(name), model(name, variant)
    shape = (8, 32)
    d2d, s0 = chip(m, shape=shape)

    def mean_g(state):
        return float(m.conductance(state, d2d, V_READ, T_WRITE).mean())

    s1 = pulse(m, s0, d2d, rec.set)
    assert mean_g(s1) > mean_g(s0), "positive (SET) pulses lowered or kept the mean G"
    if rec.reset is not None:
        s2 = pulse(m, s1, d2d, rec.reset, seed=2)
        assert mean_g(s2) < mean_g(s1), "negative (RESET) pulses raised or kept the mean G"
