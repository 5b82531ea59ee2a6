"""AnalogLinear: forward/transpose equal the float products within each backend's noise,
gradients, hardware-aware noise injection, layouts and placement errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memhil.analog.linear import AnalogLinear, AnalogLinearConfig
from memhil.backends.sim import SimBackend
from memhil.core.config import from_mapping
from memhil.core.errors import ConfigError
from memhil.core.types import PulseSpec
from tests.backends import BackendUnderTest


def ideal_backend(rows=16, cols=16, **read) -> SimBackend:
    """Noise-free NeuroSim devices and ideal converters: reads are exact."""
    return SimBackend(
        {
            "rows": rows,
            "cols": cols,
            "seed": 0,
            "read": read,
            "device": {"model": "neurosim", "c2c_std": 0.0},
        }
    )


def spread_states(layer: AnalogLinear, seed: int = 0) -> None:
    """Put the layer's devices in varied states (so W is not trivial)."""
    w = layer.weights
    counts = torch.randint(
        0,
        25,
        (w.mapping.in_features, w.mapping.n_cols),
        generator=torch.Generator().manual_seed(seed),
    )
    w.set_region(counts)


@pytest.mark.parametrize(
    "layout, n_devices", [("differential", 1), ("differential", 2), ("reference", 1)]
)
def test_forward_and_transpose_equal_float_products_on_an_ideal_device(layout, n_devices):
    layer = AnalogLinear(
        6, 3, ideal_backend(), layout=layout, n_devices=n_devices, row_offset=2, col_offset=1
    )
    spread_states(layer)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    w = layer.read_weights()
    assert w.abs().max() > 0.1
    x = torch.randn(5, 6)
    layer.eval()
    assert torch.allclose(layer(x), x @ w.t() + layer.bias, rtol=1e-5, atol=1e-6)
    y = torch.randn(4, 3)
    assert torch.allclose(layer.transpose(y), y @ w, rtol=1e-5, atol=1e-6)
    # leading batch dimensions pass through like nn.Linear
    assert layer(torch.randn(2, 5, 6)).shape == (2, 5, 3)


def test_forward_within_the_backends_noise(but: BackendUnderTest, make_backend):
    backend = make_backend(but)
    _, rows, cols = backend.shape
    n_out = cols // 2
    layer = AnalogLinear(
        rows,
        n_out,
        backend,
        set_pulse=but.set_pulse,
        reset_pulse=but.reset_pulse,
        v_read=but.v_read,
        bias=False,
    )
    counts = torch.randint(
        0, 4, (rows, layer.weights.mapping.n_cols), generator=torch.Generator().manual_seed(1)
    )
    layer.weights.set_region(counts)
    g = layer.weights.read_conductance().double()
    m = layer.weights.mapping
    plus, minus = m.split(g)
    w = m.combine(g).t()
    layer.eval()
    x = torch.rand(16, rows, generator=torch.Generator().manual_seed(2)) * 2 - 1
    y = layer(x).double()
    ideal = x.double() @ w.t()
    # The backend promises |I - V@G| <= rtol * |V|@G + atol per column: in weight units
    # (V = x * v_read / max|x|) that bounds each output by the same rule on G+ and G-.
    alpha = x.abs().amax(-1, keepdim=True).double() / but.v_read
    g_abs = (plus.sum(-1) + minus.sum(-1)) / (m.n_devices * m.scale)
    bound = but.mvm_rtol * (x.double().abs() @ g_abs) + 2 * but.mvm_atol_a * alpha / m.scale
    assert ((y - ideal).abs() <= bound).all()


def test_gradients_reach_inputs_and_weights():
    layer = AnalogLinear(8, 4, ideal_backend())
    spread_states(layer)
    w = layer.read_weights()
    layer.eval()
    x = torch.randn(5, 8, requires_grad=True)
    g_out = torch.randn(5, 4)
    layer(x).backward(g_out)
    assert torch.allclose(x.grad, g_out @ w, rtol=1e-4, atol=1e-6)  # via the transpose read
    assert torch.allclose(layer.weight.grad, g_out.t() @ x.detach(), rtol=1e-6)
    assert torch.allclose(layer.bias.grad, g_out.sum(0))
    digital = AnalogLinear(8, 4, ideal_backend(), backward="digital")
    digital.eval()
    x2 = torch.randn(3, 8, requires_grad=True)
    digital(x2).sum().backward()
    assert torch.allclose(x2.grad, torch.ones(3, 4) @ digital.weight.detach())


def test_hwa_noise_is_injected_in_training_and_straight_through():
    layer = AnalogLinear(8, 4, ideal_backend(), hwa_noise=0.05, seed=3)
    x = torch.randn(64, 8)
    layer.train()
    y1, y2 = layer(x), layer(x)
    assert not torch.allclose(y1, y2)
    clean = x @ layer.weight.detach().t()
    spread = (y1.detach() - clean).std() / (x.pow(2).sum(-1).sqrt().mean())
    assert 0.03 < float(spread) < 0.08  # std of x@noise = 0.05 * |x| for N(0, 0.05^2) weights
    g = torch.randn(64, 4)
    y1.backward(g)
    assert torch.allclose(layer.weight.grad, g.t() @ x, rtol=1e-5)  # straight-through
    layer.eval()  # evaluation reads the array, not the float weights
    assert torch.allclose(layer(x), layer(x))


def test_region_that_does_not_fit_names_the_sizes():
    with pytest.raises(ValueError, match="need 10 columns"):
        AnalogLinear(4, 5, ideal_backend(cols=9))
    with pytest.raises(ValueError, match="20 rows"):
        AnalogLinear(20, 2, ideal_backend(rows=16))


def test_works_inside_torch_modules():
    backend = ideal_backend(rows=16, cols=32)
    net = nn.Sequential(
        AnalogLinear(8, 6, backend),
        nn.ReLU(),
        AnalogLinear(6, 2, backend, row_offset=8, col_offset=12),
    )
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    net.eval()
    assert net(torch.randn(3, 8)).shape == (3, 2)
    assert "layout=differential" in repr(net[0])


def test_online_update_scheme_learns_through_the_layer():
    # a 4-input regression target learned on PCM pairs with mixed-precision transfers
    backend = SimBackend({"rows": 8, "cols": 8, "device": "pcm", "seed": 0})
    layer = AnalogLinear(4, 2, backend, bias=False, update="mixed_precision")
    w0 = layer.read_weights()
    assert w0.abs().max() < 0.1, "measuring the response must leave the pairs RESET"
    target = torch.tensor([[0.5, -0.3, 0.2, 0.0], [-0.4, 0.1, 0.0, 0.6]])
    g = torch.Generator().manual_seed(0)
    layer.eval()
    losses = []
    for _step in range(150):
        x = torch.randn(16, 4, generator=g)
        layer.weight.grad = None
        loss = (layer(x) - x @ target.t()).pow(2).sum(-1).mean()
        loss.backward()
        layer.sgd_step(0.05)
        backend.wait(1.0)
        losses.append(loss.item())
    # from ~0.85 to the floor set by PCM's per-pulse programming noise (~0.2 here)
    assert sum(losses[-20:]) / 20 < 0.35 * losses[0]
    assert layer.weights.tally.set_pulses > 0
    # PCM's per-pulse noise is ~0.1 weight units here: the devices land near the target
    assert (layer.read_weights() - target).abs().mean() < 0.15


def test_from_digital_programs_a_float_layer_and_to_digital_reads_it_back():
    torch.manual_seed(0)
    digital = nn.Linear(6, 3)
    backend = ideal_backend()
    layer = AnalogLinear.from_digital(digital, backend, window_margin=0.02)
    g_lo, g_hi = backend.capabilities.conductance_range_s
    m = layer.weights.mapping
    assert m.g_lo_s == pytest.approx(g_lo + 0.02 * (g_hi - g_lo))
    assert m.w_max == pytest.approx(float(digital.weight.detach().abs().max()))
    assert not layer.training and torch.equal(layer.bias.detach(), digital.bias.detach())
    layer.program(tolerance_s=0.01 * (m.g_hi_s - m.g_lo_s))
    back = layer.to_digital()
    assert isinstance(back, nn.Linear)
    # the devices hold the weights within the programming tolerance (1 % of the window
    # per device, two devices per weight: 2 % of w_max)
    assert torch.allclose(back.weight, digital.weight, atol=0.021 * m.w_max)
    assert torch.equal(layer.to_digital(realistic=False).weight, layer.weight.detach())


def test_config_from_a_mapping_builds_the_same_layer_as_keywords():
    data = {"bias": False, "n_devices": 2, "w_max": 0.5, "set_pulse": [1.0, 1e-7], "seed": 4}
    cfg = from_mapping(AnalogLinearConfig, data, source="layer.yaml")
    assert cfg.set_pulse == PulseSpec(1.0, 1e-7) and isinstance(cfg.set_pulse, PulseSpec)
    a = AnalogLinear(4, 2, ideal_backend(), cfg)
    b = AnalogLinear(4, 2, ideal_backend(), **data)
    assert a.config == b.config and torch.equal(a.weight, b.weight)
    assert a.bias is None and a.weights.mapping.n_devices == 2
    # keywords override the config's fields
    assert AnalogLinear(4, 2, ideal_backend(), cfg, w_max=0.25).weights.mapping.w_max == 0.25
    with pytest.raises(ConfigError, match=r"layer.yaml: n_device: unknown key"):
        from_mapping(AnalogLinearConfig, {"n_device": 2}, source="layer.yaml")
    with pytest.raises(ConfigError, match="hwa_nosie: unknown key"):
        AnalogLinear(4, 2, ideal_backend(), hwa_nosie=0.1)
    with pytest.raises(ConfigError, match="set_pulse: expected"):
        AnalogLinearConfig(set_pulse=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="x_max: must be > 0"):
        AnalogLinear(4, 2, ideal_backend(), {"x_max": 0.0})


def test_from_digital_takes_a_config():
    digital = nn.Linear(4, 2)
    cfg = AnalogLinearConfig(n_devices=2, g_window_s=(2e-6, 8e-6))
    layer = AnalogLinear.from_digital(digital, ideal_backend(), cfg)
    m = layer.weights.mapping
    assert (m.n_devices, m.g_lo_s, m.g_hi_s) == (2, 2e-6, 8e-6)
    assert m.w_max == pytest.approx(float(digital.weight.detach().abs().max()))
    assert torch.equal(layer.weight, digital.weight) and not layer.training


def test_backend_pulses_are_the_one_pulse_type():
    caps = ideal_backend().capabilities
    assert isinstance(caps.set_pulse, PulseSpec) and isinstance(caps.reset_pulse, PulseSpec)
    amplitude_v, width_s = caps.set_pulse  # still unpacks as an (amplitude, width) pair
    assert caps.set_pulse == (amplitude_v, width_s)


def test_the_layer_encodes_through_the_read_and_decodes_to_x_at_w():
    # AnalogWeights hands its encoding to the read (the simulator runs it in its 16-bit
    # DAC's compiled pass): a batch of very different input scales comes back as x @ W.T
    # (to the DAC's 2^-15 of each input's range), and the voltages of its transpose read
    # (torch ops) span v_read per input vector
    w = AnalogLinear(64, 4, ideal_backend(rows=64, cols=8, dac_bits=16)).weights
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    x = x * torch.tensor([1e-3, 1.0, 7.0, 1e3, 0.0])[:, None]
    g = w.backend.true_conductance()[0][:, w.mapping.cols]
    want = x @ w.mapping.weights_from_conductance(g).t()
    got = w.matvec(x)
    span = x.abs() @ w.mapping.weights_from_conductance(g).abs().t()
    assert (((got - want).abs()) <= 1e-4 * span).all()
    assert bool((got[4] == 0).all())
    v, back = w._encode(x)
    assert float(v[1].abs().amax()) == pytest.approx(w.v_read, rel=1e-6)
    assert torch.equal(v[4], torch.zeros(64))
