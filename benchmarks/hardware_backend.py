"""HardwareBackend over the mock lab, per read strategy, side by side in one run: instrument
transactions and wall time for a full 32x32 conductance read and for an MVM batch of 64
inputs, against the simulator doing the same work (the floor).

Goal: a full-array read in at most ``rows`` transactions with the array board (not
rows x cols). The SMU + matrix bench is limited to 24 x 24 by one B2201 card (48 output
lines); its per-cell cost is printed so the 32 x 32 figure can be scaled.
Run: ``python benchmarks/hardware_backend.py`` (``--size 16`` for a quicker run).
"""

from __future__ import annotations

import argparse
import time

import torch

from memhil.backends.sim import SimBackend
from memhil.mock_hw.lab import MockLab


def station(strategy: str, n: int, bench: str = "") -> dict:
    """``bench``: ``arc2`` (ArC TWO, parallel), ``b1500`` (B1500A SMUs, cell) or ``k4200``
    (4200A-SCS SMUs, the drive through a 4225-RPM, cell) instead of the array board / the
    2636B."""
    width_min_s = {"arc2": 4e-8, "b1500": 5e-4, "k4200": 4e-8}.get(bench, 1e-9)
    chip_extra = {"b1500": {"set_pulse": [2.0, 1e-3], "reset_pulse": [-2.0, 1e-3]}}.get(bench, {})
    if strategy == "parallel" and bench == "arc2":
        instruments = {
            "arc": {"type": "arc2", "address": "arc2://0", "options": {"rows": n, "cols": n}}
        }
        wiring = {}
    elif strategy == "parallel":
        instruments = {"board": {"type": "memhil_array_board", "address": "memhilboard://bench"}}
        wiring = {}
    else:
        loopback = "TCPIP0::127.0.0.1::0::SOCKET"
        smu = {
            "b1500": {"spa": {"type": "keysight_b1500a", "address": loopback}},
            "k4200": {
                "spa": {
                    "type": "keithley4200a",
                    "address": loopback,
                    "options": {"rpm": {"smu1": "PMU1-1"}},
                }
            },
        }.get(bench, {"smu": {"type": "keithley2636b", "address": loopback}})
        instruments = {
            **smu,
            "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
        }
        ports = ["spa.smu1", "spa.smu2"] if bench else ["smu.smua", "smu.smub"]
        wiring = {
            "smu_ports": {ports[0]: 1, ports[1]: 2},
            "rows": list(range(1, n + 1)),
            "cols": list(range(n + 1, 2 * n + 1)),
            "ground_ports": [12],
        }
    return {
        "chip": {"rows": n, "cols": n, "device": "neurosim", **chip_extra},
        "limits": {"v_pulse_max_v": 3.0, "v_read_max_v": 0.5, "width_min_s": width_min_s},
        "instruments": instruments,
        "wiring": wiring,
        "mock": {"device": {"model": "neurosim"}, "read": {"read_noise_rel": 0.01}},
    }


def measure(backend, n: int) -> tuple[int, float, int, float]:
    t0, n0 = time.perf_counter(), getattr(backend, "transactions", 0)
    backend.read_conductance()
    t1, n1 = time.perf_counter(), getattr(backend, "transactions", 0)
    backend.mvm(torch.rand(64, n, generator=torch.Generator().manual_seed(0)) * 0.2, tile=0)
    t2, n2 = time.perf_counter(), getattr(backend, "transactions", 0)
    return n1 - n0, t1 - t0, n2 - n1, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    n = ap.parse_args().size
    sim = SimBackend({"rows": n, "cols": n, "device": "neurosim"})
    n_cell = min(n, 24)  # one B2201 card: 48 output lines for rows + columns
    rows = {f"simulator (floor) {n}x{n}": measure(sim, n)}  # no instrument transactions
    for strategy, size, bench in (
        ("parallel", n, ""),
        ("parallel", n, "arc2"),
        ("cell", n_cell, ""),
        ("cell", n_cell, "b1500"),
        ("cell", n_cell, "k4200"),
    ):
        backend = MockLab.open_backend(station(strategy, size, bench), strategy=strategy)
        label = {"": "", "arc2": " ArC TWO", "b1500": " B1500A", "k4200": " 4200A"}[bench]
        try:
            rows[f"hardware {strategy}{label} {size}x{size}"] = measure(backend, size)
        finally:
            backend.close()
    print("array over the mock lab (virtual clock; wall time is the framework's)")
    print(f"  {'strategy':<36}{'full read':>26}{'MVM batch of 64':>30}")
    for name, (n_read, t_read, n_mvm, t_mvm) in rows.items():
        print(
            f"  {name:<36}{n_read:8d} transactions {t_read:7.3f} s"
            f"{n_mvm:10d} transactions {t_mvm:7.3f} s"
        )
    par = rows[f"hardware parallel {n}x{n}"]
    cell = rows[f"hardware cell {n_cell}x{n_cell}"]
    per_cell_n, per_cell_t = cell[0] / n_cell**2, cell[1] / n_cell**2
    print(
        f"  array board full read: {par[0]} transactions for {n} rows "
        f"({'meets' if par[0] <= n else 'misses'} the <= rows goal)"
    )
    print(
        f"  cell-wise: {per_cell_n:.1f} transactions and {per_cell_t * 1e3:.1f} ms per cell -> "
        f"{n}x{n}: ~{per_cell_n * n * n:.0f} transactions, ~{per_cell_t * n * n:.1f} s "
        f"({per_cell_n * n * n / max(par[0], 1):.0f}x the board's transactions)"
    )


if __name__ == "__main__":
    main()
