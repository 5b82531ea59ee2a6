"""Edge pruning of random RRAM weights: top-k masks, straight-through gradients, the
switch-limiting rule and its flip count, forming and residual conductance on the
simulator, the vessel generator and the networks' shapes."""

from __future__ import annotations

import math

import pytest
import torch

from memhil.algorithms.pruning.edge_popup import (
    FloatWeight,
    FormingRecipe,
    MaskedWeight,
    ProgrammedWeight,
    ThresholdSchedule,
    TrainConfig,
    active_cells,
    backend_shape_for,
    cross_entropy,
    deploy_masks,
    draw_hardware_weights,
    layout_layers,
    masks_of,
    quantize_activations,
    read_magnitudes,
    straight_through,
    switch_limited_mask,
    top_k_mask,
    train,
)
from memhil.algorithms.pruning.models import MLP, ConvRNN, DigitCNN, UNet, layer_shapes
from memhil.backends.sim import SimBackend
from memhil.datasets import vessels


def _sim(shape, seed=3, read_noise_rel=0.03):
    t, r, c = shape
    return SimBackend(
        {
            "tiles": t,
            "rows": r,
            "cols": c,
            "device": "rram_forming",
            "seed": seed,
            "read": {"read_noise_rel": read_noise_rel},
        }
    )


def test_top_k_mask_keeps_largest_magnitudes():
    s = torch.tensor([[0.1, -0.9, 0.3], [-0.05, 0.7, -0.4]])
    m = top_k_mask(s, 0.5)
    assert m.tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    assert top_k_mask(torch.randn(10, 20), 0.3).sum() == 60
    with pytest.raises(ValueError, match="keep_fraction"):
        top_k_mask(s, 0.0)


def test_straight_through_gradient_reaches_scores():
    """dL/dS = dL/dM * sign(S) (ranking by |S|), with dL/dM = dL/dw * sign0 (G_keep - G_prune) / scale."""
    gen = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, (4, 6), generator=gen).float() * 2 - 1
    keep = 20e-6 * torch.rand(2, 4, 6, generator=gen) + 10e-6
    prune = 1e-6 * torch.rand(2, 4, 6, generator=gen) + 0.5e-6
    src = MaskedWeight(sign, keep, prune, gain=1.0, reprogram_noise_rel=0.0)
    src.read_index = 1
    c = torch.randn(4, 6, generator=gen)
    w = src.weight()
    (w * c).sum().backward()
    expected = c * sign * (keep[1] - prune[1]) / src.scale * torch.sign(src.scores.detach())
    torch.testing.assert_close(src.scores.grad, expected)
    # forward: kept weights read G_keep, pruned ones their residual G_prune (not zero)
    m = src.mask.bool()
    torch.testing.assert_close(w.detach()[m], (sign * keep[1] / src.scale)[m])
    torch.testing.assert_close(w.detach()[~m], (sign * prune[1] / src.scale)[~m])
    assert bool((w.detach()[~m].abs() > 0).all())
    # a fresh readout per forward pass: the bank index advances and wraps around
    src.read_index = 0
    w0 = src.weight().detach()
    src.read_index = 2
    assert not torch.equal(w0, w.detach()) and torch.equal(w0, src.weight().detach())
    h = torch.tensor([1.0, 0.0], requires_grad=True)
    straight_through(torch.tensor([0.0, 1.0]), h).sum().backward()
    assert h.grad.tolist() == [1.0, 1.0]


def test_switch_limit_rule_and_flip_count():
    prev = torch.tensor([1.0, 1.0, 0.0, 0.0])
    cand = torch.tensor([0.0, 1.0, 1.0, 1.0])
    ref = torch.tensor([1.0, 1.0, 1.0, -2.0])
    now = torch.tensor([1.005, 1.5, 1.02, -2.01])  # relative moves 0.5 %, 50 %, 2 %, 0.5 %
    mask, flipped = switch_limited_mask(cand, prev, now, ref, 0.01)
    assert mask.tolist() == [1.0, 1.0, 1.0, 0.0]  # only the 2 % mover may flip
    assert flipped.tolist() == [False, False, True, False]
    mask, flipped = switch_limited_mask(cand, prev, now, ref, 0.0)  # off: top-k wins
    assert mask.tolist() == cand.tolist() and int(flipped.sum()) == 3

    sched = ThresholdSchedule()
    assert sched.value == pytest.approx(0.01)
    for _ in range(20):
        sched.improved()
    assert sched.value == pytest.approx(0.007)  # 15 steps, then it stays

    gen = torch.Generator().manual_seed(1)
    src = MaskedWeight(
        torch.ones(8, 8),
        torch.full((1, 8, 8), 20e-6),
        torch.full((1, 8, 8), 1e-6),
        reprogram_noise_rel=0.0,
    )
    with torch.no_grad():
        src.scores.copy_(torch.randn(8, 8, generator=gen))
    before = src.mask.clone()
    n = src.refresh_mask(0.0)
    assert n == int((src.mask != before).sum()) and src.flips == n
    with torch.no_grad():
        src.scores.mul_(1.001)  # every score moved 0.1 %: below a 1 % threshold
        low = int(src.scores.abs().flatten().argmin())
        src.scores.view(-1)[low] = 50.0  # the weakest moved far and enters the top k
    before = src.mask.clone()
    n = src.refresh_mask(0.01)
    # only it flips; the bit it displaces from the top k moved 0.1 % and is held
    assert n == 1 and src.mask.view(-1)[low] == 1 and int((src.mask != before).sum()) == 1
    assert src.mask.sum() == before.sum() + 1
    assert src.flips == int(src.flips)  # a running count of programming operations


def test_switch_limiting_cuts_flips_in_training():
    """Same scores, data and readouts: limiting must flip fewer bits than plain top-k."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(120, 16, generator=gen)
    y = (x[:, :4].sum(1) > 0).long()
    flips = {}
    for name, limit in (("off", None), ("on", ThresholdSchedule())):

        def masked(name, shape, gain):
            keep = torch.full((2, *shape), 20e-6)
            return MaskedWeight(torch.ones(shape), keep, keep / 20, gain=gain, seed=5)

        model = MLP(masked, (16, 2), bits=None)
        flips[name] = train(
            model, x, y, cross_entropy, TrainConfig(epochs=4, batch_size=20, switch_limit=limit)
        ).flips
    assert 0 < flips["on"] < flips["off"]


def test_quantize_activations_levels_and_gradient():
    x = torch.linspace(-1, 3, 101, requires_grad=True)
    q = quantize_activations(x, 3)
    assert len(torch.unique(q.detach())) <= 8
    assert (
        float((q - x).detach().abs().max()) <= 4 / 7 / 2 + 1e-6
    )  # half a step of (max-min)/(2^3-1)
    q.sum().backward()
    assert bool((x.grad == 1).all())
    assert quantize_activations(x, None) is x


def test_quantized_activations_of_a_sample_do_not_depend_on_its_batch():
    # one range per sample: an outlier sample (x 100) leaves the others' levels alone
    x = torch.rand(5, 3, 4, generator=torch.Generator().manual_seed(0))
    x[4] *= 100
    q = quantize_activations(x, 3)
    for i in range(5):
        assert torch.equal(q[i : i + 1], quantize_activations(x[i : i + 1], 3))
        assert len(torch.unique(q[i])) <= 8
    assert float((q[:4] - x[:4]).abs().max()) <= 1 / 7 / 2 + 1e-6  # half a step, range <= 1


def test_forming_gives_signed_random_weights_and_deploy_keeps_residual():
    shapes = [(6, 10), (3, 6)]
    be = _sim(backend_shape_for(shapes))
    hw = draw_hardware_weights(be, shapes, sign_seed=4, n_reads=2)
    for keep, prune in zip(hw.states.keep, hw.states.prune):
        assert bool((keep > 3 * prune).all())  # formed (~20 uS) far above the RESET state
        assert 10e-6 < float(keep.median()) < 40e-6  # LogNormal(ln 20 uS, 0.5)
        assert 0.4e-6 < float(prune.median()) < 2.5e-6  # LogNormal(ln 1 uS, 0.5) - 0.1 uS partner
    # the partner of each pair is still pristine: G+ - G- carries the fixed sign
    g = be.read_conductance()
    m0 = hw.mappings[0]
    diff = m0.combine(g[0, m0.rows, m0.cols]).t()
    assert bool((torch.sign(diff) == hw.signs[0]).all())

    new = [torch.ones_like(s) for s in hw.signs]
    new[0][:, :5] = 0  # prune half the inputs of layer 0
    deploy_masks(be, hw.mappings, hw.signs, [torch.ones_like(s) for s in hw.signs], new)
    mag = read_magnitudes(be, hw.mappings, hw.signs)[0][0]
    pruned = mag[:, :5]
    assert bool((pruned > 0.1e-6).all())  # residual RESET conductance, not zero
    assert float(pruned.max()) < float(mag[:, 5:].min())


def test_deploy_pulses_exactly_the_flipped_cells(monkeypatch):
    shapes = [(4, 5)]
    be = _sim(backend_shape_for(shapes))
    hw = draw_hardware_weights(be, shapes, sign_seed=2, n_reads=1)
    calls = []
    real = be.pulse

    def spy(cells, amplitude, width_s, count=1, *, compliance_a=None):
        calls.append((be.cell_mask(cells).clone(), float(amplitude)))
        real(cells, amplitude, width_s, count, compliance_a=compliance_a)

    monkeypatch.setattr(be, "pulse", spy)
    old = torch.tensor([[1, 1, 0, 0, 1]] * 4).float()
    new = torch.tensor([[1, 0, 1, 0, 1]] * 4).float()
    dep = deploy_masks(be, hw.mappings, hw.signs, [old], [new])
    (reset_mask, v_reset), (set_mask, v_set) = calls
    assert v_reset < 0 < v_set
    m, s = hw.mappings[0], hw.signs[0]
    assert torch.equal(reset_mask, active_cells(m, s, be.shape, (old > 0) & (new == 0)))
    assert torch.equal(set_mask, active_cells(m, s, be.shape, (old == 0) & (new > 0)))
    assert dep.n_reset == 4 and dep.n_set == 4
    # exactly one cell per flipped weight, on the side given by its sign
    cols = set_mask[0].nonzero()[:, 1]
    assert torch.equal(cols, torch.where(s[:, 2] > 0, torch.arange(4), 4 + torch.arange(4)))


def test_programmed_baseline_noise_conventions():
    """Relative-to-target noise spares small weights; window-referred noise does not."""
    w = torch.zeros(50, 40)
    w[0, 0] = 1.0  # sets w_max
    spread = {}
    for ref in ("target", "window"):
        src = ProgrammedWeight(
            w, write_noise_rel=0.3, read_noise_rel=0.0, noise_reference=ref, seed=1
        )
        spread[ref] = float(src.weight()[1:].std())
    # target: both cells at g_lo = 1 uS with 30 % noise -> weight std 0.3*1*sqrt2/39 ~ 0.011
    # (weights in units of w_max = 1; 15 % covers the sample std of ~4000 draws);
    # window: sigma = 11.7 uS per cell, clipped at 0 S, still > 20x larger
    assert spread["target"] == pytest.approx(0.3 * 1 * math.sqrt(2) / 39, rel=0.15)
    assert spread["window"] > 20 * spread["target"]


def test_layout_and_shape_errors():
    be = _sim((1, 6, 8))
    hw = draw_hardware_weights(be, [(3, 5)], n_reads=1)
    with pytest.raises(ValueError, match=r"wants \(2, 5\)"):
        MLP(hw.masked_factory(), (5, 2))
    with pytest.raises(ValueError, match="no hardware region"):
        MLP(hw.masked_factory(), (5, 3, 2))
    maps = layout_layers([(3, 4), (2, 3)], (1, 8, 10))
    assert [(m.tile, m.col_offset) for m in maps] == [(0, 0), (0, 6)]
    with pytest.raises(ValueError, match="layer 1"):
        layout_layers([(3, 4), (3, 3)], (1, 8, 10))
    with pytest.raises(ValueError, match="forming method"):
        FormingRecipe(method="zap")


def test_vessels_generator_is_seeded_and_labelled():
    a = vessels(n_train=6, n_test=2, size=32, seed=3)
    b = vessels(n_train=6, n_test=2, size=32, seed=3)
    c = vessels(n_train=6, n_test=2, size=32, seed=4)
    assert a.train.x.shape == (6, 1, 32, 32) and a.test.y.shape == (2, 32, 32)
    assert a.train.y.dtype == torch.int64 and set(a.train.y.unique().tolist()) == {0, 1}
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    frac = float(a.train.y.float().mean())
    assert 0.03 < frac < 0.4
    x, y = a.train.x[:, 0], a.train.y.bool()
    assert float(x[y].mean()) < float(x[~y].mean()) - 0.1  # vessels are darker
    with pytest.raises(ValueError, match="size"):
        vessels(size=30)


@pytest.mark.parametrize(
    "build,x,out",
    [
        (lambda f: DigitCNN(f), torch.rand(3, 1, 8, 8), (3, 10)),
        (lambda f: ConvRNN(f), torch.randn(3, 7, 12), (3, 9)),
        (lambda f: UNet(f, base=4), torch.rand(2, 1, 16, 16), (2, 2, 16, 16)),
    ],
)
def test_networks_build_from_any_source(build, x, out):
    shapes = layer_shapes(build)
    float_net = build(lambda n, s, g: FloatWeight(s, gain=g))
    assert tuple(float_net(x).shape) == out
    be = _sim(backend_shape_for([s for _, s, _ in shapes]), read_noise_rel=0.0)
    hw = draw_hardware_weights(be, [s for _, s, _ in shapes], n_reads=1)
    net = build(hw.masked_factory())
    y = net(x)
    y.float().pow(2).mean().backward()
    scores = [p for n, p in net.named_parameters() if n.endswith("scores")]
    assert len(scores) == len(shapes) and all(p.grad is not None for p in scores)
    assert all(math.isclose(float(m.mean()), 0.5, abs_tol=0.05) for m in masks_of(net))
