"""MNIST-1D, generated: ten 1-D template patterns turned into a harder classification
task by random padding, dilation, scaling, translation, correlated and iid noise and
shear (Greydanus, "Scaling down deep learning", arXiv 2011.14439, 2020, Sec. 2 and
Fig. 1). Nothing is shipped or downloaded: the set is a seeded function of its options.

Written from the paper's description, vectorized over samples with one numpy generator
(not the reference code, whose per-sample loop draws in another order): the same
options give the same kind of task, not bit-identical samples. With the paper's
defaults an MLP reaches about 68 % and a CNN about 94 % (the paper's Fig. 2), where
sklearn's 8x8 digits are near 98 % for both: a task on which weight errors show.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from memhil.datasets.containers import ClassificationData, Split

__all__ = ["mnist1d", "mnist1d_signals", "mnist1d_templates"]

#: The ten 12-point patterns of the paper's Fig. 1 (digit-like strokes: 0 a bump, 1 a dip
#: and a ramp, 3 two bumps, 8 two dips, ...), before whitening.
_PATTERNS = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)
#: Offset added to the template before padding, so "signal" (nonzero) and "padding"
#: (exactly zero, later replaced by correlated noise) stay distinguishable.
_EPS = 1e-8
#: Width (samples) of the Gaussian that correlates the background noise (the paper's 2).
_CORR_SIGMA = 2.0


def mnist1d_templates() -> np.ndarray:
    """(10, 12) templates: each pattern whitened (zero mean, unit sd), shifted to start at
    0 and scaled by 1/6, as in the paper; row c is class c."""
    x = np.asarray(_PATTERNS, dtype=np.float64)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return (x - x[:, :1]) / 6.0


def _resample(x: np.ndarray, n_valid: np.ndarray, n_out: int) -> np.ndarray:
    """Linear interpolation of each row's first ``n_valid[i]`` samples onto ``n_out``
    evenly spaced points (both ends kept): the per-row lengths differ, so the source
    positions are per row, gathered in one indexing step."""
    pos = np.linspace(0.0, 1.0, n_out)[None, :] * (n_valid[:, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_valid[:, None] - 1)
    frac = pos - lo
    rows = np.arange(x.shape[0])[:, None]
    return x[rows, lo] * (1.0 - frac) + x[rows, hi] * frac


def mnist1d_signals(
    n_samples: int = 5000,
    *,
    seed: int = 42,
    template_len: int = 12,
    pad_min: int = 36,
    pad_max: int = 60,
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 0.02,
    shear_scale: float = 0.75,
    final_length: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw signals (n, final_length) and labels (n,), ``n_samples // 10`` per class, in a
    seeded random order, before the set-wide standardization of :func:`mnist1d`.

    Per sample (the paper's Sec. 2): append ``p ~ U{pad_min..pad_max}`` zeros to the
    template; resample to ``template_len + pad_max`` points (a random dilation); multiply
    by ``1 + scale_coeff (u - 1/2)``; roll by ``k ~ U{0..max_translation-1}``; fill the
    padding with Gaussian noise of sd ``corr_noise_scale`` smoothed by a Gaussian of 2
    samples; add iid noise of sd ``iid_noise_scale``; subtract a linear shear ``c t``, ``c =
    shear_scale (u - 1/2)``, ``t`` in [-1/2, 1/2]; resample to ``final_length`` points.
    """
    templates = mnist1d_templates()
    if templates.shape[1] != template_len:
        raise ValueError(f"template_len must be {templates.shape[1]}, got {template_len}")
    if not 0 <= pad_min <= pad_max:
        raise ValueError(f"need 0 <= pad_min <= pad_max, got {pad_min}, {pad_max}")
    if not 1 <= max_translation:
        raise ValueError(f"max_translation must be >= 1, got {max_translation}")
    if n_samples < 10:
        raise ValueError(f"n_samples must be >= 10 (one per class), got {n_samples}")
    if final_length < 2:
        raise ValueError(f"final_length must be >= 2, got {final_length}")
    rng = np.random.default_rng(seed)
    per_class = n_samples // 10
    y = np.repeat(np.arange(10), per_class)
    n = len(y)
    length = template_len + pad_max
    x = np.zeros((n, length))
    x[:, :template_len] = templates[y] + _EPS
    pad = rng.integers(pad_min, pad_max + 1, size=n)
    x = _resample(x, template_len + pad, length)  # dilate: the padded signal fills `length`
    x *= 1.0 + scale_coeff * (rng.random(n)[:, None] - 0.5)
    shift = rng.integers(0, max_translation, size=n)
    x = x[np.arange(n)[:, None], (np.arange(length)[None, :] - shift[:, None]) % length]
    background = gaussian_filter1d(corr_noise_scale * rng.standard_normal(x.shape), _CORR_SIGMA)
    x = np.where(x != 0, x, background)
    x = x + iid_noise_scale * rng.standard_normal(x.shape)
    x = x - shear_scale * (rng.random(n)[:, None] - 0.5) * np.linspace(-0.5, 0.5, length)
    x = _resample(x, np.full(n, length), final_length)
    order = rng.permutation(n)
    return x[order], y[order]


def mnist1d(
    n_samples: int = 5000,
    test_fraction: float = 0.2,
    seed: int = 42,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 0.02,
    shear_scale: float = 0.75,
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    final_length: int = 40,
) -> ClassificationData:
    """MNIST-1D as (N, final_length) float32 vectors, standardized over the whole set (as
    the paper does), the last ``test_fraction`` of the shuffled samples for testing."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    x, y = mnist1d_signals(
        n_samples,
        seed=seed,
        corr_noise_scale=corr_noise_scale,
        iid_noise_scale=iid_noise_scale,
        shear_scale=shear_scale,
        scale_coeff=scale_coeff,
        max_translation=max_translation,
        final_length=final_length,
    )
    x = (x - x.mean()) / x.std()
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    cut = round((1.0 - test_fraction) * len(yt))
    return ClassificationData("mnist1d", Split(xt[:cut], yt[:cut]), Split(xt[cut:], yt[cut:]), 10)
