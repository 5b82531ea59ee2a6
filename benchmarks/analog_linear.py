"""AnalogLinear vs torch.nn.Linear, side by side in one run (ratios).

512 -> 512, batch 1024, float32, weights on differential PCM pairs (512 x 1024 cells) with
PCM read noise and 8-bit DAC/ADC:
1. forward (no grad): AnalogLinear (one mvm of the array) vs nn.Linear;
2. one online training step: forward + backward (transpose read) + an update scheme
   writing pulses into the devices, vs nn.Linear forward + backward + SGD step; the loss
   is summed over outputs and averaged over the batch (aihwkit's "typical" row), so the
   schemes issue pulses every step.
Reference figures (aihwkit on this class of machine): forward 1.8-7x nn.Linear, pulsed
training step 13-73x (thousands when pulse trains saturate); ``benchmarks/anchors.py``
runs aihwkit 1.2.0 itself side by side (torch tile 2.0x, C++ tile 3.7x nn.Linear there).

Run: ``python benchmarks/analog_linear.py`` (``--quick`` for fewer repetitions,
``--cpu-time`` for CPU seconds instead of wall time: steadier on a shared machine).

The forward is printed for both read models of a pair (``read.pair_sensing``, see
``memhil.backends.sim.config.ReadPathConfig``): ``per_column`` (the default: each of the
2 x 512 columns through its own ADC, so the array's product is twice nn.Linear's, 2.0x
before any noise) and ``differential`` (I+ - I- sensed in the analog domain, one ADC per
pair: one product of half the columns, as aihwkit's tile reads a weight).
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import median_times  # benchmarks/timing.py (scripts run from this folder)
from torch import nn

from memhil.analog.linear import AnalogLinear
from memhil.backends.sim import SimBackend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="time CPU seconds, not wall")
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    reps = 5 if args.quick else 15
    # lr sized so that |dW| per step is about one pulse quantum: every scheme pulses densely
    n, batch, lr = 512, 1024, 0.5

    def loss_fn(y, t):  # sum over outputs, mean over the batch
        return (y - t).pow(2).sum(-1).mean()

    torch.manual_seed(0)
    x = torch.randn(batch, n)
    target = torch.randn(batch, n)

    ref = nn.Linear(n, n)
    opt = torch.optim.SGD(ref.parameters(), lr=lr)

    def ref_forward():
        with torch.no_grad():
            ref(x)

    def ref_step():
        opt.zero_grad()
        loss_fn(ref(x), target).backward()
        opt.step()

    layers = {}
    for scheme in ("mixed_precision", "sign", "stochastic"):
        backend = SimBackend(
            {
                "rows": n,
                "cols": 2 * n,
                "device": "pcm",
                "seed": 0,
                "read": {"dac_bits": 8, "adc_bits": 8},
            }
        )
        layer = AnalogLinear(n, n, backend, update=scheme)
        layer.eval()
        layers[scheme] = layer

    differential = AnalogLinear(
        n,
        n,
        SimBackend(
            {
                "rows": n,
                "cols": 2 * n,
                "device": "pcm",
                "seed": 0,
                "read": {"dac_bits": 8, "adc_bits": 8, "pair_sensing": "differential"},
            }
        ),
    )
    differential.eval()
    ideal = AnalogLinear(
        n,
        n,
        SimBackend({"rows": n, "cols": 2 * n, "device": "pcm", "seed": 0, "read": {"dac_bits": 8}}),
    )
    ideal.eval()

    def analog_forward():
        with torch.no_grad():
            layers["mixed_precision"](x)

    def differential_forward():  # one ADC on I+ - I- per pair
        with torch.no_grad():
            differential(x)

    def ideal_forward():  # ideal ADC: each pair's difference is read as one product
        with torch.no_grad():
            ideal(x)

    n_steps = {name: 0 for name in layers}

    def analog_step(layer, name):
        def step():
            n_steps[name] += 1
            layer.weight.grad = None
            loss_fn(layer(x), target).backward()
            layer.sgd_step(lr)

        return step

    fwd = median_times(
        {
            "nn.Linear": ref_forward,
            "AnalogLinear": analog_forward,
            "differential": differential_forward,
            "ideal": ideal_forward,
        },
        reps,
        clock=clock,
    )
    print(
        f"512x512, batch {batch}, float32, {torch.get_num_threads()} threads, PCM pairs, "
        f"8-bit DAC/ADC, {'CPU' if args.cpu_time else 'wall'} time"
    )
    print(
        f"  forward      nn.Linear {fwd['nn.Linear'] * 1e3:8.2f} ms   AnalogLinear "
        f"{fwd['AnalogLinear'] * 1e3:8.2f} ms   ratio {fwd['AnalogLinear'] / fwd['nn.Linear']:.2f}x"
        "   (pair_sensing per_column: an 8-bit ADC per column; aihwkit: 1.8-7x)"
    )
    print(
        f"  forward      nn.Linear {fwd['nn.Linear'] * 1e3:8.2f} ms   AnalogLinear "
        f"{fwd['differential'] * 1e3:8.2f} ms   ratio "
        f"{fwd['differential'] / fwd['nn.Linear']:.2f}x"
        "   (pair_sensing differential: one 8-bit ADC on I+ - I- per pair)"
    )
    print(
        f"  forward      nn.Linear {fwd['nn.Linear'] * 1e3:8.2f} ms   ideal ADC    "
        f"{fwd['ideal'] * 1e3:8.2f} ms   ratio {fwd['ideal'] / fwd['nn.Linear']:.2f}x"
        "   (8-bit DAC, no ADC: the pair difference read as one product)"
    )
    tally0 = {name: layer.weights.tally.total for name, layer in layers.items()}  # calibration
    steps = {"nn.Linear": ref_step, **{k: analog_step(v, k) for k, v in layers.items()}}
    t = median_times(steps, max(3, reps // 2), clock=clock)
    for name in layers:
        pulses = (layers[name].weights.tally.total - tally0[name]) / n_steps[name]
        print(
            f"  train step   nn.Linear {t['nn.Linear'] * 1e3:8.2f} ms   {name:<16}"
            f"{t[name] * 1e3:8.2f} ms   ratio {t[name] / t['nn.Linear']:.1f}x"
            f"   ({pulses:.0f} pulses/step; aihwkit: 13-73x)"
        )


if __name__ == "__main__":
    main()
