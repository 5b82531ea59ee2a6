"""memhil next to IBM aihwkit on the same shapes and noise settings, in one process (ratios).

512 -> 512, batch 1024, float32, PCM read noise, 8-bit DAC/ADC:
1. inference forward: memhil ``AnalogLinear`` (differential PCM pairs on ``SimBackend``)
   vs aihwkit ``AnalogLinear`` with ``TorchInferenceRPUConfig`` (its torch tile, PCM noise
   model ``PCMLikeNoiseModel``) and with ``InferenceRPUConfig`` (its C++ tile), each as a
   ratio to ``nn.Linear``;
2. pulsed training step (forward, backward, update), memhil's ``mixed_precision`` scheme
   vs aihwkit ``SingleRPUConfig(device=ConstantStepDevice())`` with ``AnalogSGD``.
Targets: memhil forward >= 2x faster than aihwkit's fastest path, training >= 4x faster.

aihwkit is optional (``pip install 'memhil[anchors]'``). Version 1.2.0 ships only a
source archive for CPython 3.11 on Linux: pip builds it with cmake and pybind11 against
the installed torch, which needs a C++ compiler and a BLAS (``apt-get install
libopenblas-dev``) and a torch release it supports. When aihwkit does not import, the
memhil rows are still printed and the script says what it skipped.

Run: ``python benchmarks/anchors.py`` (``--quick`` for fewer repetitions).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from timing import median_times  # benchmarks/timing.py (scripts run from this folder)
from torch import nn

from memhil.analog.linear import AnalogLinear
from memhil.backends.sim import SimBackend

N, BATCH, LR = 512, 1024, 0.5


def loss_fn(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (y - t).pow(2).sum(-1).mean()


def memhil_layer() -> AnalogLinear:
    backend = SimBackend(
        {
            "rows": N,
            "cols": 2 * N,
            "device": "pcm",
            "seed": 0,
            "read": {"dac_bits": 8, "adc_bits": 8},
        }
    )
    layer = AnalogLinear(N, N, backend, update="mixed_precision")
    layer.eval()
    return layer


def aihwkit_layers() -> tuple[dict[str, Callable[[], nn.Module]], str | None]:
    """Builders of the aihwkit layers, or the reason they are skipped."""
    try:
        from aihwkit.inference import PCMLikeNoiseModel
        from aihwkit.nn import AnalogLinear as AihwLinear
        from aihwkit.simulator.configs import (
            InferenceRPUConfig,
            SingleRPUConfig,
            TorchInferenceRPUConfig,
        )
        from aihwkit.simulator.configs.devices import ConstantStepDevice
        from aihwkit.simulator.configs.utils import BoundManagementType, NoiseManagementType
    except ImportError as exc:
        return {}, f"aihwkit not importable ({exc})"

    def inference(cfg_cls):  # type: ignore[no-untyped-def]
        def build() -> nn.Module:
            cfg = cfg_cls()
            cfg.noise_model = PCMLikeNoiseModel()
            cfg.forward.inp_res = 1 / 127  # 8-bit DAC
            cfg.forward.out_res = 1 / 127  # 8-bit ADC
            cfg.forward.noise_management = NoiseManagementType.ABS_MAX
            cfg.forward.bound_management = BoundManagementType.NONE
            layer = AihwLinear(N, N, rpu_config=cfg)
            layer.eval()
            return layer

        return build

    def training() -> nn.Module:
        return AihwLinear(N, N, rpu_config=SingleRPUConfig(device=ConstantStepDevice()))

    return {
        "aihwkit torch tile": inference(TorchInferenceRPUConfig),
        "aihwkit C++ tile": inference(InferenceRPUConfig),
        "aihwkit train": training,
    }, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 5 if args.quick else 15
    torch.manual_seed(0)
    x, target = torch.randn(BATCH, N), torch.randn(BATCH, N)
    ref = nn.Linear(N, N)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=LR)
    ours = memhil_layer()
    builders, skipped = aihwkit_layers()

    def forward_of(layer: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                layer(x)

        return run

    def ref_step() -> None:
        ref_opt.zero_grad()
        loss_fn(ref(x), target).backward()
        ref_opt.step()

    def ours_step() -> None:
        ours.weight.grad = None
        loss_fn(ours(x), target).backward()
        ours.sgd_step(LR)

    forwards = {"nn.Linear": forward_of(ref), "memhil AnalogLinear": forward_of(ours)}
    steps = {"nn.Linear": ref_step, "memhil mixed_precision": ours_step}
    for name, build in builders.items():
        if name == "aihwkit train":
            from aihwkit.optim import AnalogSGD

            layer = build()
            opt = AnalogSGD(layer.parameters(), lr=LR)
            opt.regroup_param_groups(layer)

            def aihw_step(layer: nn.Module = layer, opt: AnalogSGD = opt) -> None:
                opt.zero_grad()
                loss_fn(layer(x), target).backward()
                opt.step()

            steps[name] = aihw_step
        else:
            forwards[name] = forward_of(build())
    print(f"{N}x{N}, batch {BATCH}, float32, {torch.get_num_threads()} threads")
    fwd = median_times(forwards, reps)
    base = fwd["nn.Linear"]
    print("inference forward (ratio to nn.Linear)")
    for name, t in fwd.items():
        print(f"  {name:<24}{t * 1e3:9.2f} ms   {t / base:6.2f}x")
    trn = median_times(steps, max(3, reps // 2))
    base = trn["nn.Linear"]
    print("pulsed training step (ratio to nn.Linear)")
    for name, t in trn.items():
        print(f"  {name:<24}{t * 1e3:9.2f} ms   {t / base:6.2f}x")
    aihw_fwd = [t for k, t in fwd.items() if k.startswith("aihwkit")]
    if aihw_fwd:
        print(
            f"memhil forward vs aihwkit's fastest: {min(aihw_fwd) / fwd['memhil AnalogLinear']:.2f}x"
            " faster (target >= 2x)"
        )
    if "aihwkit train" in trn:
        print(
            f"memhil training step vs aihwkit: "
            f"{trn['aihwkit train'] / trn['memhil mixed_precision']:.2f}x faster (target >= 4x)"
        )
    if skipped:
        print(f"skipped: every aihwkit row: {skipped}; install with pip install 'memhil[anchors]'")


if __name__ == "__main__":
    main()
