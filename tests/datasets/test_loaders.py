"""Offline loaders: shapes, label ranges, seeded splits, padding and standardization."""

import pytest
import torch

from memhil import datasets
from memhil.datasets import classification_sets, load_ucr


def test_sequential_digits_is_the_image_read_pixel_by_pixel():
    flat = datasets.digits(seed=3)
    seq = datasets.sequential_digits(seed=3)
    assert seq.train.x.shape[1:] == (64, 1)
    torch.testing.assert_close(seq.train.x[:, :, 0], flat.train.x)
    perm = datasets.sequential_digits(seed=3, permuted=True)
    # same multiset of pixels per image, different order
    torch.testing.assert_close(perm.train.x.sort(1).values, seq.train.x.sort(1).values)
    assert not torch.equal(perm.train.x, seq.train.x)
    assert set(seq.train.y.tolist()) == set(range(10))


def test_japanese_vowels_padding_and_lengths():
    data = datasets.japanese_vowels()
    assert (len(data.train), len(data.test), data.n_features, data.n_classes) == (270, 370, 12, 9)
    lengths = data.train.lengths
    assert lengths is not None and int(lengths.min()) >= 7 and int(lengths.max()) <= data.seq_len
    i = int(lengths.argmin())
    assert torch.all(data.train.x[i, lengths[i] :] == 0)
    z = datasets.standardize(data)
    assert torch.all(z.train.x[i, lengths[i] :] == 0)  # padding stays zero
    valid = torch.arange(data.seq_len)[None, :] < lengths[:, None]
    assert abs(float(z.train.x[valid].mean())) < 1e-4


def test_acsf1_is_long_univariate():
    data = datasets.acsf1()
    assert data.seq_len == 1460 and data.n_features == 1 and data.n_classes == 10
    assert data.train.lengths is None


def test_validation_split_is_stratified_and_disjoint():
    data = datasets.iris(seed=0)
    reduced, val = data.with_validation(0.2, seed=1)
    assert len(reduced.train) + len(val) == len(data.train)
    assert set(val.y.tolist()) == {0, 1, 2}
    rows = {tuple(r.tolist()) for r in reduced.train.x}
    assert not any(tuple(r.tolist()) in rows for r in val.x)


def test_every_classification_set_in_the_sktime_wheel_is_listed():
    names = classification_sets()
    # sktime 1.2's wheel: the regression set Tecator and forecasting CSVs are not listed
    assert {"ACSF1", "ArrowHead", "JapaneseVowels", "OSULeaf", "PLAID"} <= set(names)
    assert "Tecator" not in names and "Covid3Month" not in names


@pytest.mark.parametrize("name", ["PLAID", "ArrowHead"])
def test_sets_beyond_the_examples_load(name):
    data = load_ucr(name)
    assert data.train.x.dim() == 3 and data.train.x.shape[1:] == data.test.x.shape[1:]
    assert int(data.train.y.max()) < data.n_classes and int(data.train.y.min()) == 0
    if name == "PLAID":  # ragged appliance traces, T = 100..1344
        assert data.train.lengths is not None and int(data.train.lengths.max()) == 1344
        assert data.n_classes == 11 and len(data.train) == 537


def test_an_unknown_set_names_the_available_ones():
    with pytest.raises(KeyError, match="PLAID"):
        load_ucr("NoSuchSet")
