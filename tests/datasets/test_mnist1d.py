"""The generated MNIST-1D (memhil.datasets.mnist1d): what follows from the generator's
definition alone, without reference data: shapes, exact class balance, seeded
determinism, and the templates themselves when every transformation is off."""

import numpy as np
import pytest
import torch

from memhil import datasets
from memhil.datasets.mnist1d import mnist1d_signals, mnist1d_templates

#: Every random transformation off: no padding, scaling, shift, noise or shear.
NO_TRANSFORM = dict(
    pad_min=0,
    pad_max=0,
    scale_coeff=0.0,
    max_translation=1,
    corr_noise_scale=0.0,
    iid_noise_scale=0.0,
    shear_scale=0.0,
)


def test_the_loader_gives_the_papers_shapes_and_exactly_balanced_classes():
    data = datasets.mnist1d(n_samples=1000, seed=3)
    assert (len(data.train), len(data.test), data.n_features, data.n_classes) == (800, 200, 40, 10)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.long
    y = torch.cat([data.train.y, data.test.y])
    assert torch.equal(y.bincount(minlength=10), torch.full((10,), 100))
    x = torch.cat([data.train.x, data.test.x]).double()
    # standardized over the whole set (float32 storage: 1e-6 relative slack)
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std(unbiased=False)) - 1) < 1e-6


def test_the_same_seed_gives_the_same_set_and_another_seed_another():
    a, b = datasets.mnist1d(n_samples=200, seed=5), datasets.mnist1d(n_samples=200, seed=5)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    c = datasets.mnist1d(n_samples=200, seed=6)
    assert not torch.equal(a.train.x, c.train.x)


def test_with_every_transformation_off_each_signal_is_its_class_template():
    x, y = mnist1d_signals(50, final_length=12, **NO_TRANSFORM)
    t = mnist1d_templates()
    # resampling 12 points onto 12 points is the identity; 1e-8 is the generator's offset
    # that marks signal against padding
    np.testing.assert_allclose(x, t[y] + 1e-8, atol=1e-12)
    assert np.array_equal(np.bincount(y), np.full(10, 5))


def test_templates_are_whitened_patterns_starting_at_zero():
    t = mnist1d_templates()
    assert t.shape == (10, 12)
    np.testing.assert_allclose(t[:, 0], 0.0)
    np.testing.assert_allclose((6 * t).std(1), 1.0)  # unit sd before the 1/6 scale


def test_a_shift_moves_the_template_and_the_padding_stays_zero_without_noise():
    x, y = mnist1d_signals(30, final_length=72, **{**NO_TRANSFORM, "pad_max": 60, "pad_min": 60})
    t = mnist1d_templates()
    # pad to 72 points and resample 72 -> 72 (identity): template, then 60 zeros
    np.testing.assert_allclose(x[:, :12], t[y] + 1e-8, atol=1e-12)
    assert np.all(x[:, 12:] == 0)


def test_a_bad_option_names_itself():
    with pytest.raises(ValueError, match="pad_min"):
        mnist1d_signals(20, pad_min=5, pad_max=2)
