"""memhil next to IBM aihwkit on the same shapes and noise settings, in one process (ratios).

512 -> 512, batch 1024, float32, PCM read noise, 8-bit DAC/ADC:
1. inference forward: memhil ``AnalogLinear`` (differential PCM pairs on ``SimBackend``,
   both pair read models: ``per_column`` and ``differential`` sensing, see
   docs/devices.md; the ``differential`` layer, the inference one, programmed and drifted
   to 60 s) vs aihwkit ``AnalogLinear`` with ``TorchInferenceRPUConfig`` (its
   pure-torch tile, PCM noise model ``PCMLikeNoiseModel``, programmed and drifted to 60 s)
   and with ``InferenceRPUConfig`` (its C++ tile), each as a ratio to ``nn.Linear``;
2. pulsed training step (forward, backward, update), memhil's ``mixed_precision`` scheme
   vs aihwkit ``SingleRPUConfig(device=ConstantStepDevice())`` with ``AnalogSGD``.
Targets: memhil forward >= 2x faster than aihwkit's fastest path, training >= 4x faster.
aihwkit applies its PCM read noise to the weights once (at ``drift_analog_weights``) and
adds its default output noise per sample; memhil draws a per-device read-noise realization
on every read (``noise_mode: per_read``).

Installing the anchor (aihwkit 1.2.0). There is no wheel for CPython 3.11 (PyPI has
cp312-cp314 Linux wheels, built against their own torch), and every aihwkit module,
its pure-torch tile included, imports the compiled ``aihwkit.simulator.rpu_base`` (no
guard for a missing extension), so it has to be built against the installed torch:
    apt-get install -y libopenblas-dev g++              # BLAS and a C++ compiler
    curl -LO https://files.pythonhosted.org/packages/cf/69/a2c61897eae27dca5fcb62e55dad93edad1bdebdffd67e0e000e41fd768e/aihwkit-1.2.0.tar.gz
    tar xzf aihwkit-1.2.0.tar.gz       # sha256 288b00ae...8cba; the link of pypi.org/simple/aihwkit
    pip install --target /tmp/aihwkit-build "scikit-build>=0.18.1" "pybind11>=3.0.1" \
        "cmake>=4.2.1" ninja setuptools wheel
    cd aihwkit-1.2.0 && PYTHONPATH=/tmp/aihwkit-build PATH=/tmp/aihwkit-build/bin:$PATH \
        CMAKE_BUILD_PARALLEL_LEVEL=2 python setup.py build_ext --inplace -DRPU_BLAS=OpenBLAS
    export MEMHIL_AIHWKIT_SRC=$PWD/src                   # this script imports aihwkit from there
(``pip install 'memhil[anchors]'`` does the same build where pip may install aihwkit's
dependencies; it needs torchvision matching the installed torch.) An installed aihwkit is
used when ``MEMHIL_AIHWKIT_SRC`` is unset. When aihwkit does not import, the memhil rows
are still printed and the script says what it skipped.

Run: ``python benchmarks/anchors.py`` (``--quick`` for fewer repetitions, ``--cpu-time``
for CPU seconds instead of wall time: steadier on a shared machine, ``--lr 0.01`` for the
training rows at a sparse update).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch
from timing import median_times  # benchmarks/timing.py (scripts run from this folder)
from torch import nn

from memhil.analog.linear import AnalogLinear
from memhil.backends.sim import SimBackend

N, BATCH, LR = 512, 1024, 0.5
#: A directory holding a built ``aihwkit`` package (its ``rpu_base`` compiled in place).
AIHWKIT_SRC_ENV = "MEMHIL_AIHWKIT_SRC"


def loss_fn(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (y - t).pow(2).sum(-1).mean()


def memhil_layer(
    pair_sensing: str = "per_column", update: str | None = None, *, programmed: bool = False
) -> AnalogLinear:
    """memhil's layer on a 512 x 1024 PCM array; ``programmed``: its initial weights
    (uniform within 1/sqrt(N), as ``nn.Linear`` and aihwkit's layer draw them) mapped with
    w_max = max |w| and written by program-and-verify, then left to drift for 60 s, as
    the aihwkit inference layers are (``drift_analog_weights(60)``)."""
    backend = SimBackend(
        {
            "rows": N,
            "cols": 2 * N,
            "device": "pcm",
            "seed": 0,
            "read": {"dac_bits": 8, "adc_bits": 8, "pair_sensing": pair_sensing},
        }
    )
    if not programmed:
        layer = AnalogLinear(N, N, backend, update=update)
        layer.eval()
        return layer
    digital = nn.Linear(N, N)
    layer = AnalogLinear.from_digital(digital, backend, update=update)
    layer.program()
    backend.wait(60.0)
    return layer


def aihwkit_layers() -> tuple[dict[str, Callable[[], nn.Module]], str | None]:
    """Builders of the aihwkit layers, or the reason they are skipped."""
    src = os.environ.get(AIHWKIT_SRC_ENV)
    if src:
        if not os.path.isdir(os.path.join(src, "aihwkit")):
            return {}, f"{AIHWKIT_SRC_ENV}={src} holds no aihwkit package"
        sys.path.insert(0, src)
    try:
        from aihwkit.inference import PCMLikeNoiseModel
        from aihwkit.nn import AnalogLinear as AihwLinear
        from aihwkit.simulator.configs import (
            BoundManagementType,
            ConstantStepDevice,
            InferenceRPUConfig,
            NoiseManagementType,
            SingleRPUConfig,
            TorchInferenceRPUConfig,
        )
    except ImportError as exc:
        return {}, f"aihwkit not importable ({exc})"

    def inference(cfg_cls: type) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            cfg = cfg_cls()
            cfg.noise_model = PCMLikeNoiseModel()
            cfg.forward.inp_res = 1 / 127  # 8-bit DAC
            cfg.forward.out_res = 1 / 127  # 8-bit ADC
            cfg.forward.noise_management = NoiseManagementType.ABS_MAX
            cfg.forward.bound_management = BoundManagementType.NONE
            layer = AihwLinear(N, N, rpu_config=cfg)
            layer.eval()
            layer.drift_analog_weights(60.0)  # programming + drift + read noise, once
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
    ap.add_argument("--cpu-time", action="store_true", help="time CPU seconds, not wall")
    ap.add_argument(
        "--lr",
        type=float,
        default=LR,
        help=f"learning rate of the training rows (default {LR}: |dW| per step about one "
        "pulse quantum, aihwkit's pulse trains saturate; 0.01: a sparse update)",
    )
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    reps = 5 if args.quick else 15
    torch.manual_seed(0)
    x, target = torch.randn(BATCH, N), torch.randn(BATCH, N)
    ref = nn.Linear(N, N)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=args.lr)
    ours = memhil_layer(update="mixed_precision")
    ours_differential = memhil_layer("differential", programmed=True)
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
        ours.sgd_step(args.lr)

    forwards = {
        "nn.Linear": forward_of(ref),
        "memhil AnalogLinear": forward_of(ours),
        "memhil differential": forward_of(ours_differential),
    }
    steps = {"nn.Linear": ref_step, "memhil mixed_precision": ours_step}
    for name, build in builders.items():
        if name == "aihwkit train":
            from aihwkit.optim import AnalogSGD

            layer = build()
            opt = AnalogSGD(layer.parameters(), lr=args.lr)
            opt.regroup_param_groups(layer)

            def aihw_step(layer: nn.Module = layer, opt: AnalogSGD = opt) -> None:
                opt.zero_grad()
                loss_fn(layer(x), target).backward()
                opt.step()

            steps[name] = aihw_step
        else:
            forwards[name] = forward_of(build())
    print(
        f"{N}x{N}, batch {BATCH}, float32, {torch.get_num_threads()} threads, "
        f"{'CPU' if args.cpu_time else 'wall'} time; memhil AnalogLinear: pair_sensing "
        "per_column (an ADC per column), memhil differential: one ADC on I+ - I- per pair"
    )
    fwd = median_times(forwards, reps, clock=clock)
    base = fwd["nn.Linear"]
    print("inference forward (ratio to nn.Linear)")
    for name, t in fwd.items():
        print(f"  {name:<24}{t * 1e3:9.2f} ms   {t / base:6.2f}x")
    trn = median_times(steps, max(3, reps // 2), clock=clock)
    base = trn["nn.Linear"]
    print(f"pulsed training step, lr {args.lr} (ratio to nn.Linear)")
    for name, t in trn.items():
        print(f"  {name:<24}{t * 1e3:9.2f} ms   {t / base:6.2f}x")
    aihw_fwd = [t for k, t in fwd.items() if k.startswith("aihwkit")]
    if aihw_fwd:
        for name in ("memhil AnalogLinear", "memhil differential"):
            print(
                f"{name} forward vs aihwkit's fastest: {min(aihw_fwd) / fwd[name]:.2f}x"
                " faster (target >= 2x)"
            )
    if "aihwkit train" in trn:
        print(
            f"memhil training step vs aihwkit: "
            f"{trn['aihwkit train'] / trn['memhil mixed_precision']:.2f}x faster (target >= 4x)"
        )
    if skipped:
        print(
            f"skipped: every aihwkit row: {skipped}; build it as this script's docstring says "
            f"and set {AIHWKIT_SRC_ENV}, or pip install 'memhil[anchors]'"
        )


if __name__ == "__main__":
    main()
