"""The 2636B emulator survives a client's endless TSP loop: the interpreter stops it at its
instruction budget with a TSP error in ``errorqueue`` and keeps serving; its transcript
(the command log) is bounded."""

from __future__ import annotations

import socket

import pytest

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2600 import SCRIPT_LINES_MAX, Keithley2600Emulator
from memhil.mock_hw.server import TRANSCRIPT_LINES, LineServer


@pytest.fixture
def served_smu():
    emu = Keithley2600Emulator(
        MockBench(MockChip({"rows": 2, "cols": 2, "seed": 0}), lambda key: ([], [])), name="smu"
    )
    emu._interp.max_steps = 20_000  # the default (10^6) stops a loop within seconds
    server = LineServer(emu.handle, terminator="\n", name="k2600").start()
    yield emu, server
    server.stop()


def _ask(conn: socket.socket, line: str) -> str:
    conn.sendall((line + "\n").encode())
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, "connection closed"
        reply += chunk
    return reply.decode().strip()


@pytest.mark.parametrize(
    "loop",
    [
        "while true do end",
        "repeat x = 1 until false",
        "for i = 1, 1e12 do end",
        "while 1 do x = 2 end",
    ],
)
def test_endless_tsp_loop_is_a_tsp_error_and_the_emulator_keeps_serving(loop, served_smu):
    emu, server = served_smu
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall((loop + "\n").encode())
        assert _ask(conn, "print(errorqueue.count)") == "1.00000e+00"
        code, message = emu.errors[-1]
        assert code == -286 and "instruction budget of 20000" in message
        assert _ask(conn, "x = 0 for i = 1, 100 do x = x + i end print(x)") == "5.05000e+03"
        assert _ask(conn, "print(errorqueue.count)") == "1.00000e+00"  # no new error


def test_default_budget_bounds_a_loop_and_leaves_bounded_work_alone():
    emu = Keithley2600Emulator(
        MockBench(MockChip({"rows": 2, "cols": 2, "seed": 0}), lambda key: ([], [])), name="smu"
    )
    assert 10_000 <= emu._interp.max_steps <= 10_000_000
    emu.handle("x = 0 for i = 1, 50000 do x = x + 1 end")
    assert emu.errors == [] and emu.globals["x"] == 50000


def test_transcript_is_bounded():
    emu = Keithley2600Emulator(
        MockBench(MockChip({"rows": 2, "cols": 2, "seed": 0}), lambda key: ([], [])), name="smu"
    )
    for k in range(TRANSCRIPT_LINES + 100):
        emu.handle(f"y = {k}")
    assert len(emu.transcript) == TRANSCRIPT_LINES
    assert emu.transcript[-1] == f"y = {TRANSCRIPT_LINES + 99}"


def test_a_script_that_never_ends_is_abandoned_at_its_line_bound():
    emu = Keithley2600Emulator(
        MockBench(MockChip({"rows": 2, "cols": 2, "seed": 0}), lambda key: ([], [])), name="smu"
    )
    emu.handle("loadscript endless")
    for k in range(SCRIPT_LINES_MAX + 10):
        emu.handle(f"y = {k}")
    code, message = emu.errors[-1]
    assert code == -286 and "abandoned" in message
    assert not emu._loading  # out of script mode: the lines after it ran as commands
    assert emu.globals["y"] == SCRIPT_LINES_MAX + 9
