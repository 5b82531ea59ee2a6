"""Mock-lab overhead: round-trip time per instrument transaction over loopback, and the
transactions (and wall time) a full 16x16 array read costs per strategy.

Side by side in one run: a raw socket echo (the transport floor), then each driver's
query through pyvisa-py / pyserial to its emulator; then a 16x16 conductance map read
cell by cell through the SMU + switch matrix, and line-parallel through the array board.

Run: ``python benchmarks/mock_lab_overhead.py``.
"""

from __future__ import annotations

import socket
import statistics
import time

import numpy as np
from qcodes.instrument import Instrument

from memhil.instruments.station import Station
from memhil.mock_hw.lab import MockLab
from memhil.mock_hw.server import LineServer

N = 16


def station_config() -> dict:
    return {
        "name": "overhead",
        "chip": {"rows": N, "cols": N},
        "limits": {
            "v_pulse_max_v": 2.0,
            "v_read_max_v": 0.3,
            "compliance_max_a": 1e-3,
            "compliance_default_a": 1e-4,
        },
        "instruments": {
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "matrix": {"type": "keysight_b2201", "address": "TCPIP0::127.0.0.1::0::SOCKET"},
            "board": {"type": "memhil_array_board", "address": "memhilboard://bench16"},
        },
        "wiring": {
            "smu_ports": {"smu.smua": 1},
            "rows": list(range(1, N + 1)),
            "cols": list(range(N + 1, 2 * N + 1)),
        },
        "mock": {
            "device": {"model": "neurosim"},
            "sneak_paths": True,
            "ground_ports": [12],
            "read": {"read_noise_rel": 0.01},
        },
    }


def median_ms(fn, reps: int = 50) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def raw_echo_ms() -> float:
    with LineServer(lambda line: line, name="echo") as server:
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def once():
            s.sendall(b"ping\n")
            buf = b""
            while not buf.endswith(b"\n"):
                buf += s.recv(64)

        ms = median_ms(once)
        s.close()
        return ms


def main() -> None:
    echo = raw_echo_ms()
    with MockLab(station_config()) as lab, Station.from_config(lab.station_config()) as station:
        smu = station.smus["smu.smua"]
        qc_smu = Instrument.find_instrument("smu")
        qc_matrix = Instrument.find_instrument("matrix")
        print("round trip per transaction over loopback (median of 50):")
        print(f"  {'raw socket echo (transport floor)':<48}{echo:7.3f} ms   1.0x")
        zeros = [0.0] * N
        for label, fn in (
            ("Keithley 2636B query (QCoDeS, pyvisa-py)", lambda: qc_smu.ask("localnode.model")),
            ("B2201 *IDN? (QCoDeS, pyvisa-py)", lambda: qc_matrix.ask("*IDN?")),
            (
                "array board READC, 16 lines (own driver, URL)",
                lambda: station.array.read_columns(zeros),
            ),
        ):
            ms = median_ms(fn)
            print(f"  {label:<48}{ms:7.3f} ms   {ms / echo:.1f}x")

        # 16 x 16 map, cell by cell: route, measure, unroute.
        smu.set_source_mode("voltage")
        smu.set_compliance(1e-4)
        smu.set_level(0.1)
        servers = lab.servers
        before = {k: s.transactions for k, s in servers.items()}
        t0 = time.perf_counter()
        g_cell = np.zeros((N, N))
        smu.output(True)
        for i in range(N):
            for j in range(N):
                pairs = [(1, 1 + i), (12, N + 1 + j)]
                station.matrix.connect_many(pairs)
                g_cell[i, j] = smu.measure().current_a / 0.1
                station.matrix.open_all()
        smu.output(False)
        wall_cell = time.perf_counter() - t0
        n_cell = sum(s.transactions - before[k] for k, s in servers.items())

        board = lab.emulators["board"]
        b0 = board.transactions
        t0 = time.perf_counter()
        g_board = (
            np.stack(
                [
                    station.array.read_columns([0.1 if r == i else 0.0 for r in range(N)])
                    for i in range(N)
                ]
            )
            / 0.1
        )
        wall_board = time.perf_counter() - t0
        n_board = board.transactions - b0
        g_true = lab.chip.sim.true_conductance()[0].numpy()

        def err(g):
            return float(np.sqrt(np.mean((g - g_true) ** 2)) / np.sqrt(np.mean(g_true**2)))

        print(f"full {N}x{N} conductance map:")
        print(
            f"  cell-wise, SMU + switch matrix: {n_cell:5d} transactions  {wall_cell:7.2f} s wall"
            f"   rel. RMS error {err(g_cell):.3f} (floating lines: sneak paths)"
        )
        print(
            f"  line-parallel, array board:     {n_board:5d} transactions  {wall_board:7.2f} s wall"
            f"   rel. RMS error {err(g_board):.3f}"
        )
        print(
            f"  ratio cell-wise / board: {n_cell / max(n_board, 1):.0f}x transactions, "
            f"{wall_cell / max(wall_board, 1e-9):.0f}x wall time"
        )
    Instrument.close_all()


if __name__ == "__main__":
    main()
