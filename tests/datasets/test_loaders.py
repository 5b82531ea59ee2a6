"""Offline loaders: shapes, label ranges, seeded splits, padding and standardization."""

import torch

from memhil import datasets


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
