"""Property tests: the safety check accepts exactly the requests inside every limit, and
the converters' rounding error is at most half a step inside their range."""

from __future__ import annotations

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from memhil.backends.base import Limits
from memhil.backends.sim.read_path import quantize_symmetric
from memhil.core.errors import LimitError

LIMITS = Limits(
    v_pulse_max_v=2.0,
    width_min_s=1e-8,
    width_max_s=1e-3,
    compliance_max_a=1e-3,
    compliance_default_a=1e-4,
    count_max=50,
)


@settings(max_examples=200, deadline=None)
@given(v=st.floats(-4, 4), w=st.floats(1e-9, 1e-2), n=st.integers(0, 100), c=st.floats(1e-6, 1e-2))
def test_check_pulse_accepts_exactly_the_requests_within_limits(v, w, n, c):
    # values within float32 rounding (1e-6 relative) of a limit may go either way
    for value, limit in ((abs(v), 2.0), (w, 1e-8), (w, 1e-3), (c, 1e-3)):
        assume(abs(value - limit) > 1e-6 * limit)
    inside = abs(v) <= 2.0 and 1e-8 <= w <= 1e-3 and n <= 50 and c <= 1e-3
    t = lambda x, dt=torch.float64: torch.tensor(x, dtype=dt)
    try:
        LIMITS.check_pulse(t(v), t(w), t(n, torch.int64), t(c), None)
        accepted = True
    except LimitError as err:
        accepted = False
        assert "limit" in str(err)
    assert accepted == inside


@settings(max_examples=100, deadline=None)
@given(
    bits=st.integers(2, 12),
    scale=st.floats(1e-6, 10.0),
    x=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=50),
)
def test_quantizer_error_is_at_most_half_a_step_in_range(bits, scale, x):
    xt = torch.tensor(x, dtype=torch.float64) * scale
    q = quantize_symmetric(xt, bits, scale)
    lsb = scale / (2 ** (bits - 1) - 1)
    assert float((q - xt).abs().max()) <= lsb / 2 * (1 + 1e-9)
    assert torch.allclose(quantize_symmetric(q, bits, scale), q)  # idempotent
