"""Simulator speed, side by side in one run (ratios against plain torch on the same shapes).

1. Noisy MVM (device read noise + 8-bit DAC/ADC) vs ``torch.matmul``: batch 1024, 512x512.
   Target: ratio <= 1.5 (noise per read), <= 2 (noise per sample).
2. Pulse-update throughput on a 1024x1024 array, PCM and VTEAM, in device-updates/s
   (one update = one pulse applied to one device), for the device model's ``step`` alone
   and through ``SimBackend.pulse`` (limit checks, compliance, clock). Target >= 1e8/s.
3. Memory: bytes per simulated cell of each device model (state, D2D parameters, fault
   masks, the cached read state) and the process's peak resident memory.

Run: ``python benchmarks/sim_throughput.py`` (add ``--quick`` for fewer repetitions,
``--cpu-time`` to time CPU seconds of this process instead of wall time: steadier on a
shared machine, and with ``OMP_NUM_THREADS=1`` the one-thread figures).
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import median_times  # benchmarks/timing.py (scripts run from this folder)

from memhil.backends.sim import SimBackend


def bench_mvm(reps: int, clock=time.perf_counter) -> None:
    batch, n = 1024, 512
    sim = SimBackend(
        {
            "rows": n,
            "cols": n,
            "device": "pcm",
            "seed": 0,
            "read": {"dac_bits": 8, "dac_range_v": 0.2, "adc_bits": 8},
        }
    )
    counts = torch.randint(0, 8, sim.shape, generator=torch.Generator().manual_seed(0))
    sim.pulse(None, 1.0, 100e-9, counts)  # a spread of programmed states
    sim.wait(3600.0)  # an hour of drift
    v = (torch.rand(batch, n, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.2
    g = sim.true_conductance()[0]
    sim_ps = SimBackend(
        {
            "rows": n,
            "cols": n,
            "device": "pcm",
            "seed": 0,
            "read": {"dac_bits": 8, "adc_bits": 8, "noise_mode": "per_sample"},
        }
    )
    t = median_times(
        {
            "plain": lambda: torch.matmul(v, g),
            "noisy": lambda: sim.mvm(v, tile=0),
            "per_sample": lambda: sim_ps.mvm(v, tile=0),
        },
        reps,
        clock=clock,
    )
    t_plain, t_noisy, t_ps = t["plain"], t["noisy"], t["per_sample"]
    from memhil.backends.sim.backend import bf16_dot_products

    print(
        f"MVM  batch {batch}, {n}x{n}, float32, {torch.get_num_threads()} threads, "
        f"{'CPU' if clock is time.process_time else 'wall'} time"
    )
    print(f"  {'torch.matmul':<46}{t_plain * 1e3:8.2f} ms   1.00x")
    print(
        f"  {'SimBackend.mvm (PCM read noise per read, 8b DAC/ADC)':<46}"
        f"{t_noisy * 1e3:8.2f} ms   {t_noisy / t_plain:.2f}x   (target <= 1.5x)"
    )
    print(
        f"  {'SimBackend.mvm (noise per sample, 8b DAC/ADC)':<46}"
        f"{t_ps * 1e3:8.2f} ms   {t_ps / t_plain:.2f}x   (target <= 2x; the variance "
        f"product in {'bfloat16' if bf16_dot_products() else 'float32'}, Philox draws)"
    )


def bench_pulses(reps: int, clock=time.perf_counter) -> None:
    n = 1024
    print(f"Pulse updates, {n}x{n} array (1 update = 1 pulse on 1 device)")
    for name, amp, width in (("pcm", 1.0, 100e-9), ("vteam", 1.0, 1e-6)):
        sim = SimBackend(
            {"rows": n, "cols": n, "device": name, "seed": 0, "limits": {"count_max": 1000}}
        )
        cells = n * n
        for count in (1, 10):
            v = torch.full(sim.shape, amp)
            w = torch.full(sim.shape, width)
            c = torch.full(sim.shape, count, dtype=torch.int64)

            # the model steps its own copy of the state: a state written by model.step
            # (another memory layout) would make each SimBackend.pulse copy it back first
            own = {"state": sim.state.clone()}

            def step():
                own["state"] = sim.model.step(own["state"], sim.d2d, v, w, c, 1.0, sim._gen_program)

            t = median_times(
                {"step": step, "pulse": lambda: sim.pulse(None, amp, width, count)},
                reps,
                clock=clock,
            )
            t_step, t_pulse = t["step"], t["pulse"]
            print(
                f"  {name:<6} count {count:<3} model.step {cells * count / t_step:10.3g} /s"
                f"   SimBackend.pulse {cells * count / t_pulse:10.3g} /s   (target >= 1e8/s)"
            )


def bytes_per_cell() -> None:
    """Bytes held per cell by each registered device model on a 256 x 256 array: the
    state and D2D tensors, the stuck-at masks and the cached conductance and noise std."""
    import resource

    from memhil.devices.base import device_model_names

    n = 256
    print(f"Memory per simulated cell ({n}x{n}, float32)")
    for name in device_model_names():
        sim = SimBackend({"rows": n, "cols": n, "device": name, "seed": 0})
        sim.mvm(torch.zeros(1, n), tile=0)  # fills the read cache
        tensors = [sim.state, *sim.d2d.values(), sim.stuck_on, sim.stuck_off]
        g, std = sim._read_state()
        tensors += [g] + ([] if std is None else [std])
        total = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
        print(
            f"  {name:<14}{total / (n * n):6.1f} B/cell   (state {tuple(sim.state.shape[3:])} "
            f"x {sim.state.element_size()} B, {len(sim.d2d)} D2D tensors)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak resident memory of this process: {peak:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--cpu-time", action="store_true", help="time CPU seconds, not wall")
    args = ap.parse_args()
    reps = 5 if args.quick else 20
    clock = time.process_time if args.cpu_time else time.perf_counter
    bench_mvm(reps, clock)
    bench_pulses(reps, clock)
    bytes_per_cell()


if __name__ == "__main__":
    main()
