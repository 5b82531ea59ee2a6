"""Compiled input encoding of an analog layer: each row's largest |x|, in one read-only
pass over the batch.

``max|x|`` as torch ops is two passes (the largest entry as max and -min); here each row
is read once. The scaling itself (``x * v_read / max|x|``) happens in the backend's DAC
pass (``input_gain`` of :meth:`memhil.backends.base.Backend.mvm_pairs`), so the voltages
are never written out as a batch-sized tensor of their own. Imported on first use:
numba's import costs ~0.3 s.
"""

from __future__ import annotations

import numba
import numpy as np

from memhil.core.numba_target import prefer_full_vector_width
from memhil.core.philox_normals import bits_f32, f32_bits

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs

#: The smallest scale divided by: an all-zero row reads 0 V, not NaN
ALPHA_MIN = np.float32(1e-12)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def row_absmax(x, alpha):
    """For float32 (rows, n) ``x``: ``alpha[r]`` = max(max |x[r]|, 1e-12), equal to
    torch's ``max(x.amax(-1), -x.amin(-1)).clamp_min(1e-12)``. A NaN in a row makes its
    alpha NaN, as torch's ``amax`` does (a read of it is refused by the backend's limit
    check)."""
    magnitude = np.uint32(0x7FFFFFFF)
    for r in range(x.shape[0]):
        row = x[r]
        # the largest |x| as the largest integer of the float bits without their sign: an
        # integer max vectorizes where a float one (NaN-aware) does not, and a NaN's bits
        # exceed every number's, so it wins as torch's amax lets it
        top = np.uint32(0)
        for j in range(row.shape[0]):
            top = max(top, bits_f32(row[j]) & magnitude)
        a = f32_bits(top)
        alpha[r] = ALPHA_MIN if a < ALPHA_MIN else a  # NaN kept
