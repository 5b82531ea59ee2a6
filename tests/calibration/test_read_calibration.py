"""Read-path calibration (``memhil.calibration.read_calibration``).

The simulator has no per-column gain/offset knob, so the test wraps a SimBackend in a small
Backend whose mvm adds a KNOWN per-column gain error (+/-20 %) and offset (+/-50 nA), and
shows ``calibrate_read_path`` recovers both and that ``apply`` restores the true currents.
"""

from __future__ import annotations

import pytest
import torch

from memhil.backends.base import Backend
from memhil.backends.sim import SimBackend
from memhil.calibration.read_calibration import ReadCalibration, calibrate_read_path


class GainOffsetBackend(Backend):
    """A backend whose column readout has gain ``gain[t, c]`` and offset ``offset[t, c]``."""

    def __init__(self, inner: SimBackend, gain: torch.Tensor, offset: torch.Tensor):
        self.inner, self.gain, self.offset = inner, gain, offset

    shape = property(lambda self: self.inner.shape)
    limits = property(lambda self: self.inner.limits)
    capabilities = property(lambda self: self.inner.capabilities)
    clock = property(lambda self: self.inner.clock)
    dtype = property(lambda self: self.inner.dtype)
    torch_device = property(lambda self: self.inner.torch_device)

    def _mvm(self, v, *, transpose, tile):
        out = self.inner._mvm(v, transpose=transpose, tile=tile)
        g = self.gain if tile is None else self.gain[tile : tile + 1]
        o = self.offset if tile is None else self.offset[tile : tile + 1]
        if transpose:
            return out
        return out * g[:, None, :].to(out.dtype) + o[:, None, :].to(out.dtype)

    def _read_conductance(self, mask):
        return self.inner._read_conductance(mask)

    def _pulse(self, selected, v, width_s, count, compliance_a):
        self.inner._pulse(selected, v, width_s, count, compliance_a)


def _make(noise=0.0, seed=0):
    sim = SimBackend(
        {
            "tiles": 2,
            "rows": 16,
            "cols": 8,
            "device": {"model": "neurosim", "c2c_std": 0.0},
            "seed": seed,
            "dtype": "float64",
            "read": {"read_noise_rel": noise},
        }
    )
    gen = torch.Generator().manual_seed(42)
    gain = 1.0 + 0.2 * (2 * torch.rand(2, 8, generator=gen, dtype=torch.float64) - 1)
    offset = 50e-9 * (2 * torch.rand(2, 8, generator=gen, dtype=torch.float64) - 1)
    hw = GainOffsetBackend(sim, gain, offset)
    # a spread of conductances so the reference cells are not all equal
    hw.pulse(None, 2.0, 80e-9, torch.randint(0, 20, hw.shape, generator=gen))
    return sim, hw, gain, offset


def test_recovers_gain_and_offset_with_known_reference_cells():
    sim, hw, gain, offset = _make(noise=0.0)
    ref = torch.zeros(hw.shape, dtype=torch.bool)
    ref[:, :4, :] = True  # the first 4 rows are reference cells, G known from per-cell reads
    g_ref = sim.true_conductance()[ref]
    cal = calibrate_read_path(hw, reference_cells=ref, reference_g_s=g_ref)
    assert cal.mode == "absolute"
    assert torch.allclose(cal.offset_a, offset, rtol=0, atol=1e-15)
    assert torch.allclose(cal.gain, gain, rtol=1e-9)
    v = torch.rand(5, 16, dtype=torch.float64) * 0.2
    raw = hw.mvm(v)
    true = sim.mvm(v)
    assert torch.allclose(cal.apply(raw), true, rtol=1e-9, atol=1e-15)
    assert torch.allclose(cal.apply(raw[1], tile=1), true[1], rtol=1e-9, atol=1e-15)
    err_raw = (raw - true).abs().max()
    assert err_raw > 1e-8  # the error was real


def test_with_read_noise_and_serialisation():
    sim, hw, gain, offset = _make(noise=0.01, seed=1)
    g_ref = sim.true_conductance()
    cal = calibrate_read_path(hw, reference_g_s=g_ref, n_repeats=8)
    # 1 % read noise over 16 rows x 4 levels x 8 repeats: gains to ~0.3 %
    rel = ((cal.gain - gain) / gain).abs().max()
    print(f"max relative gain error with 1 % read noise: {float(rel):.2e}")
    assert rel < 5e-3
    assert (cal.offset_a - offset).abs().max() < 1e-12  # offsets: no current, no noise
    back = ReadCalibration.from_dict(cal.to_dict())
    assert back.version == cal.version and "@" in cal.version
    assert torch.equal(back.gain, cal.gain) and torch.equal(back.offset_a, cal.offset_a)


def test_relative_gains_from_uniform_reference_region():
    sim, hw, gain, offset = _make(noise=0.0, seed=2)
    # make row 0 a uniform region: every cell reset to G_min by a full LTD train (no C2C)
    ref = torch.zeros(hw.shape, dtype=torch.bool)
    ref[:, 0, :] = True
    hw.pulse(ref, -2.0, 80e-9, 100)
    cal = calibrate_read_path(hw, reference_cells=ref)
    assert cal.mode == "relative"
    want = gain / gain.mean(1, keepdim=True)
    assert torch.allclose(cal.gain, want, rtol=1e-6)
    assert torch.allclose(cal.offset_a, offset, atol=1e-15)


def test_errors():
    sim, hw, gain, offset = _make()
    with pytest.raises(ValueError):
        calibrate_read_path(hw, reference_cells=torch.zeros(hw.shape, dtype=torch.bool))
    with pytest.raises(ValueError):
        calibrate_read_path(hw, reference_g_s=torch.ones(3))
    with pytest.raises(ValueError):
        calibrate_read_path(hw, v_levels=())
    with pytest.raises(ValueError):
        ReadCalibration(offset_a=torch.zeros(2, 3), gain=torch.zeros(2, 3))
