"""The simulator on a CUDA device: same results as on the CPU for the same seeds (the CPU
and CUDA generators differ, so noise-free configurations are compared)."""

from __future__ import annotations

import pytest
import torch

from memhil.analog.linear import AnalogLinear
from memhil.backends.sim import SimBackend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["neurosim", "vteam", "pcm"])
def test_pulses_reads_and_layers_run_on_cuda(device):
    cfg = {
        "tiles": 2,
        "rows": 32,
        "cols": 16,
        "seed": 0,
        "torch_device": "cuda",
        "read": {"dac_bits": 8, "adc_bits": 8},
    }
    if device != "pcm":
        cfg["device"] = {"model": device, **({"c2c_std": 0.0} if device == "neurosim" else {})}
    else:
        cfg["device"] = "pcm"
    sim = SimBackend(cfg)
    set_amp, set_w = sim.capabilities.set_pulse
    sim.pulse(None, set_amp, set_w, torch.randint(0, 5, sim.shape, device="cuda"))
    g = sim.read_conductance()
    assert g.device.type == "cuda" and torch.isfinite(g).all()
    i = sim.mvm(torch.rand(8, 32, device="cuda") * 0.2)
    assert i.device.type == "cuda" and i.shape == (2, 8, 16)
    sim.wait(3600.0)
    layer = AnalogLinear(32, 8, sim)
    layer.eval()
    assert layer(torch.randn(4, 32)).shape == (4, 8)
