"""A 12-trial simulator sweep run twice in one process: sequentially (the trials one after
the other in this process, ``executor="inline"``) and on a local Ray instance of 2 CPUs;
their wall times and ratio (target >= 1.7x on 2 cores), Ray's fixed start-up cost (the
instance, and its 2 workers importing memhil's run stack and pre-flighting one trial, as
the driver did) printed apart, and the driver's
time storing each trial's run (the store's one writer).

The sweep: LTP/LTD pulse trains (``pulse_train``, 60 + 60 pulses, 4 cells read after each)
on a 32 x 32 PCM array, over 2 read-noise levels x 2 pulse widths x 3 seeds. Both runs
get the same loaded and pre-flighted sweep; the pre-flight is timed apart.

Run: ``python benchmarks/sweep_scaling.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.7

BASE = """\
protocol: pulse_train
name: ltp_ltd_pcm
params: {n_pulses: N_PULSES, v_ltp: 2.0, v_ltd: -2.0, width_s: 1.0e-7, v_read: 0.2,
         cells: [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]}
backend: {sim: {rows: 32, cols: 32, device: pcm}}
"""
SWEEP = """\
base: base.yaml
name: scaling
grid:
  backend.sim.read.read_noise_rel: [0.0, 0.02]
  params.width_s: [1.0e-7, 2.0e-7]
seeds: [0, 1, 2]
resources: {num_cpus: 1}
"""


def _warm(spec) -> int:
    """Bring a worker to where the driver's process is once it has pre-flighted the sweep:
    the run stack imported and one trial's file loaded and pre-flighted (the first-call
    costs of the protocol, the device model and torch); returns the worker's pid."""
    from memhil.sweeps.run_kinds import RUN_KINDS

    kind = RUN_KINDS[spec.kind]
    kind.preflight(kind.load(spec.data, Path(spec.base)))
    time.sleep(0.5)  # hold the worker so the second task starts the second one
    return os.getpid()


def _trial_s(db: Path, sweep_id: int) -> float:
    """Mean time a trial ran (its worker's start to end), from the sweep's stored run."""
    from memhil.store import RunStore

    with RunStore(db) as store:
        df = store.load(sweep_id)
    return float((df["t_end_s"] - df["t_start_s"]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter trials (a smoke run)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()

    import ray

    from memhil.sweeps import load_sweep_file, run_sweep
    from memhil.sweeps.trial import TrialSpec

    work = Path(tempfile.mkdtemp(prefix="sweep_scaling-"))
    (work / "base.yaml").write_text(BASE.replace("N_PULSES", "10" if args.quick else "60"))
    (work / "sweep.yaml").write_text(SWEEP)
    t0 = time.perf_counter()
    sweep = load_sweep_file(work / "sweep.yaml")
    t_load = time.perf_counter() - t0
    n = len(sweep.trials)

    t0 = time.perf_counter()
    seq = run_sweep(sweep, db=work / "sequential.db", executor="inline", progress=False)
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = ray.remote(num_cpus=1)(_warm)
    first = sweep.trials[0]
    spec = TrialSpec(first.index, sweep.kind.name, str(sweep.base), sweep.trial_data(first))
    pids = ray.get([warm.remote(spec) for _ in range(2)])
    t_warm = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        par = run_sweep(sweep, db=work / "ray.db", progress=False)
        t_ray = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        t_stop = time.perf_counter() - t0
    bad = {k: v for k, v in {"sequential": seq.failed, "ray": par.failed}.items() if v}
    if bad or len(seq.completed) != n or len(par.completed) != n:
        raise SystemExit(f"trials failed: {bad}")

    startup = t_init + t_warm
    trial_s = {"sequential": _trial_s(work / "sequential.db", seq.sweep_id)}
    trial_s["ray"] = _trial_s(work / "ray.db", par.sweep_id)
    fig = {
        "trials": n,
        "preflight_s": t_load,
        "sequential_s": t_seq,
        "ray_2cpu_s": t_ray,
        "ratio": t_seq / t_ray,
        "ray_startup_s": startup,
        "ray_init_s": t_init,
        "ray_worker_warmup_s": t_warm,
        "ray_workers": len(set(pids)),
        "ratio_with_startup": t_seq / (t_ray + startup),
        "ray_shutdown_s": t_stop,
        "driver_write_ms_per_trial_ray": 1e3 * par.write_s / n,
        "driver_write_ms_per_trial_sequential": 1e3 * seq.write_s / n,
        "trial_mean_s_sequential": trial_s["sequential"],
        "trial_mean_s_ray": trial_s["ray"],
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"{n}-trial simulator sweep ({'quick' if args.quick else 'full'} trials), one run:")
    print(f"  pre-flight of every trial        {t_load:7.2f} s (once, before either run)")
    print(f"  sequential, one process          {t_seq:7.2f} s")
    print(f"  Ray, 2 CPUs (workers warm)       {t_ray:7.2f} s")
    print(f"  ratio                            {fig['ratio']:7.2f} x (target >= {TARGET_RATIO})")
    print(
        f"  Ray fixed start-up cost          {startup:7.2f} s "
        f"(instance {t_init:.2f} s, {fig['ray_workers']} workers importing {t_warm:.2f} s; "
        f"shutdown {t_stop:.2f} s)"
    )
    print(f"  ratio with the start-up          {fig['ratio_with_startup']:7.2f} x")
    print(
        f"  driver storing a trial's run     {fig['driver_write_ms_per_trial_ray']:7.1f} ms "
        f"(the one writer; 0 lock errors: every trial stored)"
    )
    print(
        f"  a trial, start to end, mean      {trial_s['sequential']:7.3f} s in one process, "
        f"{trial_s['ray']:.3f} s on a Ray worker"
    )
    print(f"  (load average {fig['load_average_1min']:.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
