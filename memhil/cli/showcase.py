"""``memhil showcase``, simulator only: program a signed weight matrix onto differential
PCM pairs, read it back, run matrix-vector products and watch drift, with and without
global drift compensation (``memhil.calibration.drift``).

Drift is judged against the MVM output right after programming, not against the ideal
``x @ W``: open-loop programming leaves ~40 % error whose outputs are inflated (the least-
squares scale to the ideal is ~0.9), so plain drift, shrinking every output, first *lowers*
the error to the ideal, and a compensation that restores the programmed scale looks worse
at 1 min and 1 h although it removes the drift it can see."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import click

from memhil.cli.common import CliError


@click.command("showcase")
@click.option("--rows", type=int, default=64, show_default=True, help="inputs (array rows)")
@click.option("--outputs", type=int, default=32, show_default=True, help="outputs (2 columns each)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--torch-device", default="cpu", show_default=True, help="cpu or cuda[:N]")
def command(rows: int, outputs: int, seed: int, torch_device: str) -> int:
    """Simulator only: program weights, read back, drift."""
    import torch

    if torch_device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(
            f"memhil showcase: error: --torch-device {torch_device}: this torch "
            f"build ({torch.__version__}) has no CUDA device; use cpu"
        )
    if rows < 1 or outputs < 1:
        raise CliError(
            f"memhil showcase: error: --rows {rows} and --outputs {outputs} must be >= 1"
        )
    run_showcase(rows=rows, outputs=outputs, seed=seed, torch_device=torch_device, out=click.echo)
    return 0


@dataclass
class DriftPoint:
    t_s: float
    g_mean_s: float
    mvm_rel_error: float  # |y(t) - y(0)| / |y(0)|: the drift since programming (+ read noise)
    mvm_rel_error_compensated: float  # the same after global drift compensation


def _fmt_time(t_s: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if t_s >= size:
            return f"{t_s / size:.3g} {unit}"
    return f"{t_s:.3g} s"


def run_showcase(
    rows: int = 64, outputs: int = 32, seed: int = 0, torch_device: str = "cpu", out=print
) -> dict:
    """Run the showcase and return its figures (also printed through ``out``)."""
    import torch

    from memhil.backends.sim import SimBackend
    from memhil.calibration.drift import DriftCompensator
    from memhil.devices.pcm import PCMDevice

    sim = SimBackend(
        {
            "rows": rows,
            "cols": 2 * outputs,
            "device": "pcm",
            "seed": seed,
            "torch_device": torch_device,
            "read": {"v_read": 0.2, "dac_bits": 8, "dac_range_v": 0.2, "adc_bits": 10},
            "limits": {"count_max": 200},
        }
    )
    model = sim.model
    assert isinstance(model, PCMDevice)  # "device": "pcm"
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(rows, outputs, generator=gen) * 2 - 1  # signed weights in [-1, 1]
    g_lo, g_hi = 0.1e-6, 8.0e-6  # usable PCM range of the mean pulse curve (S)
    target = torch.empty(1, rows, 2 * outputs)
    target[0, :, 0::2] = g_lo + w.clamp(min=0) * (g_hi - g_lo)  # G+ columns
    target[0, :, 1::2] = g_lo + (-w).clamp(min=0) * (g_hi - g_lo)  # G- columns
    target = target.to(sim.torch_device)

    out(
        f"memhil showcase: {rows}x{outputs} signed weights on {rows}x{2 * outputs} differential "
        f"PCM pairs ({model.name}, seed {seed}, {torch_device})"
    )
    sim.pulse(None, -2.5, 50e-9, 1)  # RESET every cell
    g_reset = sim.read_conductance()
    counts = model.pulses_for(g_reset, target).clamp(0, sim.limits.count_max)
    sim.pulse(None, 1.0, 100e-9, counts)  # open loop: per-cell pulse counts, one call
    g = sim.read_conductance()
    err_us = (g - target) * 1e6
    out(
        "  open-loop programming (no verify; PCM's per-pulse noise is as large as its mean "
        "step, so expect a few uS of error; program-and-verify narrows it):"
    )
    out(
        f"    {int(counts.sum())} SET pulses "
        f"(max {int(counts.max())}/cell), {_fmt_time(sim.clock.now())} of chip time"
    )
    out(
        f"    conductance error: RMS {err_us.pow(2).mean().sqrt():.3f} uS, "
        f"mean {err_us.mean():+.3f} uS (target range {g_lo * 1e6:.1f}-{g_hi * 1e6:.1f} uS)"
    )
    w_read = ((g[0, :, 0::2] - g[0, :, 1::2]) / (g_hi - g_lo)).cpu()
    corr = torch.corrcoef(torch.stack([w.flatten(), w_read.flatten()]))[0, 1]
    out(
        f"  weights read back: correlation with targets {corr:.4f}, "
        f"RMS error {(w_read - w).pow(2).mean().sqrt():.3f} (weights in [-1, 1])"
    )

    x = torch.rand(256, rows, generator=gen) * 2 - 1
    v = (x * 0.2).to(sim.torch_device)
    ideal = x @ w

    def weights_from_currents(i: torch.Tensor) -> torch.Tensor:
        return ((i[:, 0::2] - i[:, 1::2]) / (0.2 * (g_hi - g_lo))).cpu()

    def rel_err(y: torch.Tensor) -> float:
        return float((y - ideal).norm() / ideal.norm())

    y0 = weights_from_currents(sim.mvm(v, tile=0))
    noise = float((weights_from_currents(sim.mvm(v, tile=0)) - y0).norm() / y0.norm())
    # aihwkit's global compensation: one read of every row at 0.2 V (large currents, few
    # ADC steps lost to quantization), its mean |I| now against right after programming
    comp = DriftCompensator(tile=0)
    comp.reference(sim, torch.full((1, rows), 0.2))
    out(f"  MVM of 256 inputs vs x @ W: relative error {rel_err(y0):.3%}")
    out(
        f"  drift (nu = {model.p.nu}): MVM change since programming without / with global "
        f"drift compensation (read noise alone: {noise:.3%})"
    )
    points = []
    t_prog = sim.clock.now()
    for t_target in (60.0, 3600.0, 86400.0, 30 * 86400.0):
        sim.wait(t_target - (sim.clock.now() - t_prog))
        y = weights_from_currents(sim.mvm(v, tile=0))
        alpha = float(comp.factor())
        drift = float((y - y0).norm() / y0.norm())
        drift_c = float((alpha * y - y0).norm() / y0.norm())
        p = DriftPoint(t_target, float(sim.read_conductance().mean()), drift, drift_c)
        points.append(p)
        out(
            f"    after {_fmt_time(t_target):>7}: mean G {p.g_mean_s * 1e6:6.3f} uS   "
            f"change {p.mvm_rel_error:7.3%}   compensated {p.mvm_rel_error_compensated:7.3%}"
            f"   (vs x @ W: {rel_err(y):.2%} / {rel_err(alpha * y):.2%})"
        )
    result: dict[str, Any] = {
        "rms_error_us": float(err_us.pow(2).mean().sqrt()),
        "weight_corr": float(corr),
        "mvm_rel_error": rel_err(y0),
        "drift": points,
    }
    if not math.isfinite(result["rms_error_us"]):
        raise RuntimeError("showcase produced a non-finite programming error")
    return result
