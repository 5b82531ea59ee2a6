"""Spiking task generators for e-prop (memhil.datasets.spike_tasks)."""

from __future__ import annotations

import pytest
import torch

from memhil.datasets import pattern_generation, sequential_digits, spike_digits


def test_pattern_generation_matches_the_reference_task():
    task = pattern_generation(seed=0)
    assert task.train.x.shape == (3, 1000, 100) and task.test.x.shape == (3, 1000, 100)
    assert task.train.y.shape == (3, 1000, 1) and task.dt_s == 1e-3
    x = torch.cat([task.train.x, task.test.x])
    assert set(x.unique().tolist()) == {0.0, 1.0}
    # 50 Hz at 1 ms: p = 0.05 per step; 6e5 draws give a std of the mean of 2.8e-4, so
    # +-0.002 is ~7 sigma
    assert float(x.mean()) == pytest.approx(0.05, abs=0.002)
    y = torch.cat([task.train.y, task.test.y])[..., 0]
    assert torch.allclose(y.abs().amax(1), torch.ones(6))  # normalized to max |y| = 1
    # 1 s at 1 ms: FFT bins are 1 Hz apart, so the 1/2/3/5 Hz sinusoids hold the energy
    power = torch.fft.rfft(y.double(), dim=1).abs() ** 2
    share = power[:, [1, 2, 3, 5]].sum(1) / power.sum(1)
    assert bool((share > 0.999).all())


def test_pattern_generation_is_seeded_and_checks_arguments():
    a, b, c = pattern_generation(seed=1), pattern_generation(seed=1), pattern_generation(seed=2)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.train.x, c.train.x) and not torch.equal(a.train.y, c.train.y)
    with pytest.raises(ValueError, match="n_train"):
        pattern_generation(n_samples=2, n_train=3)
    with pytest.raises(ValueError, match="rate_hz"):
        pattern_generation(rate_hz=2000.0)


def test_spike_digits_rate_and_latency_coding():
    ref = sequential_digits(by_rows=True, seed=0)
    rate = spike_digits(coding="rate", steps_per_row=10, max_rate_hz=200.0, seed=0)
    assert rate.train.x.shape == (len(ref.train), 80, 8) and rate.n_classes == 10
    assert torch.equal(rate.train.y, ref.train.y) and torch.equal(rate.test.y, ref.test.y)
    # spikes per pixel window = 10 steps * p * 0.2: the mean over all pixels matches the
    # mean intensity (std of the mean over ~8.6e5 Bernoulli draws ~3e-4; tolerance 3 %)
    counts = rate.train.x.reshape(-1, 8, 10, 8).sum(2)  # (N, rows, cols)
    assert float(counts.mean()) == pytest.approx(float(ref.train.x.mean()) * 2.0, rel=0.03)
    assert float(counts[ref.train.x == 0].sum()) == 0.0  # dark pixels never fire

    lat = spike_digits(coding="latency", steps_per_row=10, seed=0)
    win = lat.train.x.reshape(-1, 8, 10, 8)  # (N, rows, steps, cols)
    img = ref.train.x
    assert torch.equal(win.sum(2), (img > 0).float())  # one spike per lit pixel, per row
    first = win.argmax(2)  # step of that spike
    want = torch.round((1.0 - img) * 9).long()
    assert torch.equal(first[img > 0], want[img > 0])  # brighter pixels fire earlier
    with pytest.raises(ValueError, match="coding"):
        spike_digits(coding="phase")
