"""Refresh of one-sided (SET-only) differential cells: reset saturated pairs and rewrite
their difference onto one device.

PCM potentiates gradually but depresses only by an abrupt RESET, so a differential pair
``W = (G+ - G-) / scale`` is lowered by potentiating G-. Both devices climb towards
saturation, where SET pulses no longer move them and the weight freezes. The refresh of
Nandakumar et al., Front. Neurosci. 2020 / aihwkit's one-sided unit cell
(``docs/devices.md#differential-pairs-and-refresh``) undoes this: when a device of a pair
exceeds a threshold, read the pair, RESET both devices, and program the difference back onto
one side with an open-loop SET count taken from the measured pulse response.

Everything is vectorized over the pairs that need it: one read of the region, one RESET
call and one SET call, whatever the number of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from memhil.analog.pulse_response import PulseResponse
from memhil.analog.weights import AnalogWeights
from memhil.core.config import require


@dataclass(frozen=True)
class RefreshParams:
    """When and how a device update scheme refreshes saturated pairs (``refresh_pairs``);
    the base of every device scheme's parameters."""

    refresh_threshold_s: float | None = None
    """Conductance (S) above which a device's pair is refreshed; None: refresh off."""
    refresh_every: int = 1
    """Check for saturated pairs every this many update steps."""
    refresh_reset_pulses: int = 1
    """RESET pulses per device (1 for PCM's abrupt RESET, more for a gradual one)."""

    def __post_init__(self) -> None:
        require(
            self.refresh_threshold_s is None or self.refresh_threshold_s > 0,
            "refresh_threshold_s",
            f"must be > 0 S or None, got {self.refresh_threshold_s}",
        )
        require(self.refresh_every >= 1, "refresh_every", f"must be >= 1, got {self.refresh_every}")
        require(
            self.refresh_reset_pulses >= 1,
            "refresh_reset_pulses",
            f"must be >= 1, got {self.refresh_reset_pulses}",
        )


def refresh_pairs(
    weights: AnalogWeights,
    response: PulseResponse,
    threshold_s: float,
    *,
    reset_pulses: int = 1,
    max_pulses: int | None = None,
    g_region: Tensor | None = None,
) -> Tensor:
    """Refresh every weight whose + or - devices hold a conductance above ``threshold_s``.

    Only pairs whose difference fits below the threshold after the rewrite
    (``g0 + |diff| / N < threshold_s``, g0 the RESET level) are refreshed: a pair that
    encodes a large weight on a saturated device would land above the threshold again
    and be refreshed every time without gaining headroom.

    For a multi-device cell (``n_devices = N``) the cell is refreshed when any of its 2N
    devices exceeds the threshold, and the difference ``sum G+ - sum G-`` is rewritten as
    ``|diff| / N`` on each of the N devices of the winning side. The RESET state is the
    start of ``response`` (the curve is measured from RESET), so the open-loop count per
    device is ``round(response.pulses_between(g0, g0 + |diff| / N))``, capped at
    ``max_pulses`` (default: the backend's ``count_max``).

    ``reset_pulses`` RESET pulses are applied per device (1 for an abrupt RESET as in PCM;
    more for a gradual bipolar device). ``g_region`` (in, n_cols) is a conductance read
    to decide on; None reads the region now. Counts the refreshed pairs in
    ``weights.tally.refreshes``; returns the boolean (out, in) mask of refreshed weights.
    """
    m = weights.mapping
    if m.layout != "differential":
        raise ValueError("refresh needs the differential layout (a + and a - side)")
    g = weights.read_conductance() if g_region is None else g_region
    g = g.detach().to("cpu", torch.float64)
    plus, minus = m.split(g)  # (in, out, N) each
    diff = plus.sum(-1) - minus.sum(-1)  # (in, out), S
    g0 = response.g_curve_s[0]
    per_device = diff.abs() / m.n_devices
    over = (plus.amax(-1) > threshold_s) | (minus.amax(-1) > threshold_s)  # (in, out)
    need = over & (g0 + per_device < threshold_s)
    n_need = int(need.sum())
    if n_need == 0:
        return need.t().clone()
    select = need.t()  # (out, in)
    mask_p, mask_m = m.side_masks(select)
    weights.reset_region((mask_p | mask_m).to(torch.int64) * int(reset_pulses))

    cap = weights.backend.limits.count_max if max_pulses is None else max_pulses
    n = response.pulses_between(g0.expand_as(per_device), g0 + per_device)
    n = n.round().clamp(0, cap).to(torch.int64) * need
    pos = (n * (diff > 0)).repeat_interleave(m.n_devices, 1)
    neg = (n * (diff < 0)).repeat_interleave(m.n_devices, 1)
    weights.set_region(torch.cat([pos, neg], 1))
    weights.tally.refreshes += n_need
    return select.clone()
