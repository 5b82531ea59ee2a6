"""Every example protocol on the bench station file (examples/bench_station.yaml: 2636B on
VXI-11, B2201 and Velox on GPIB, array board on a USB serial port, VTEAM devices at RRAM
resistances) with only the VISA library changed to the mock lab's: the pre-flight of each
file, and the nanosecond-pulse and conductance-target examples run end to end through the
bench addresses (in-process lab; fewer pulses, cells or levels than the examples where
noted, for time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvisa
import yaml

from memhil.mock_hw import visa as mock_visa
from memhil.runs.protocol_file import load_protocol_file, protocol_file_from_mapping
from memhil.runs.protocol_run import preflight_offline, run_protocol_file
from memhil.store import RunStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BENCH = EXAMPLES / "bench_station.yaml"
LIB = f"{BENCH}@memhil"
# Run below instead of dry-run here: the nanosecond examples (fewer pulses) and the two
# with conductance targets (converge_to_state as written, multistate_seeker on fewer cells
# and levels: 170 s as written, 64 cells x 11 levels x 3 trials).
RUN_HERE = {
    "pulse_train",
    "vteam_amplitudes",
    "wafer_campaign",
    "converge_to_state",
    "multistate_seeker",
}
# A dry run of ~1.4 s (1428 operations) of an example in microseconds that an SMU bench
# always accepted; it ran in full on this station by hand (`memhil run ...
# --visa-library examples/bench_station.yaml@memhil`, see docs/mock-lab.md).
DRY_RUN_TOO_LONG = {"volatility"}
PROTOCOLS = [
    p
    for p in sorted((EXAMPLES / "protocols").glob("*.yaml"))
    if p.stem not in RUN_HERE | DRY_RUN_TOO_LONG
]


@pytest.fixture(scope="module")
def bench():
    from memhil.runs.backend_config import open_backend

    be = open_backend({"station": str(BENCH)}, visa_library=LIB)
    yield be
    be.close()
    mock_visa.stop_in_process_labs()


def test_the_bench_station_lists_every_instrument_by_its_bench_address():
    rm = pyvisa.ResourceManager(LIB)
    assert set(rm.list_resources()) == {
        "GPIB0::22::INSTR",
        "GPIB0::28::INSTR",
        "TCPIP0::10.0.0.5::inst0::INSTR",
        "ASRL/dev/ttyACM0::INSTR",
    }
    board = rm.open_resource(
        "ASRL/dev/ttyACM0::INSTR", baud_rate=115200, read_termination="\n", write_termination="\n"
    )
    assert board.baud_rate == 115200  # a serial line setting is kept (no line to set)
    assert board.query("*IDN?").startswith("MEMHIL,ARRAYBOARD,board,")
    assert board.query("PULSE 1,0.25,1e-9,1") == "OK"  # a 1 ns pulse: the board makes it
    board.close()


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_every_example_protocol_passes_the_preflight_on_the_bench_station(path):
    """Widths, amplitudes, compliance, cells and the prober checked against the bench's
    limits and instruments (what refused the sub-microsecond examples on an SMU bench)."""
    pf = load_protocol_file(path)
    assert preflight_offline(pf, {"station": str(BENCH)}).ops > 0


def test_a_conductance_target_outside_the_bench_chips_window_is_still_refused():
    """The bench chip's window (1 .. 100 uS) holds the examples' targets; one beyond it
    is refused by the pre-flight, before any instrument is touched."""
    data = yaml.safe_load((EXAMPLES / "protocols" / "converge_to_state.yaml").read_text())
    data["params"]["g_targets_s"] = [3.0e-6, 2.0e-4]
    pf = protocol_file_from_mapping(data, EXAMPLES / "protocols" / "converge_to_state.yaml")
    with pytest.raises(
        ValueError,
        match=r"target 0\.0002 S for cell \(0, 1, 1\) lies outside the device window \[1e-06, 0\.0001\] S",
    ):
        preflight_offline(pf, {"station": str(BENCH)})


@pytest.mark.parametrize(
    ("name", "fewer"),
    [  # converge_to_state first: on the chip as fabricated, as the example was run by hand
        ("converge_to_state", {}),
        ("pulse_train", {"n_pulses": 2}),
        ("vteam_amplitudes", {"n_pulses": 2, "v_ltp": [0.25], "v_ltd": [-0.09]}),
        ("wafer_campaign", {"dies": [[0, 0], [2, 0]]}),
        (
            "multistate_seeker",
            {
                "cells": [[0, 1, 1]],
                "n_targets": 2,
                "trials": 1,
                "n_reads": 2,
                "n_verify_reads": 1,
                "max_iterations": 5,
            },
        ),
    ],
)
def test_examples_run_on_the_bench_through_its_addresses(bench, tmp_path, name, fewer):
    data = yaml.safe_load((EXAMPLES / "protocols" / f"{name}.yaml").read_text())
    if name == "wafer_campaign":
        data["params"]["inner_params"]["n_pulses"] = 2
    data["params"].update(fewer)
    pf = protocol_file_from_mapping(data, EXAMPLES / "protocols" / f"{name}.yaml")
    run_id = run_protocol_file(pf, backend=bench, db=tmp_path / "r.db", progress=False)
    (info,) = [r for r in RunStore(tmp_path / "r.db").runs() if r.run_id == run_id]
    assert info.status == "completed" and info.n_points > 0
    if name == "converge_to_state":  # both targets (3 and 6 uS) reached within 0.2 uS
        report = RunStore(tmp_path / "r.db").load(run_id)
        assert report["within"].tolist() == [1.0, 1.0], report
    _assert_error_queues_empty()


def _assert_error_queues_empty() -> None:
    """No instrument of the bench queued an error (asked over their bench addresses)."""
    rm = pyvisa.ResourceManager(LIB)
    kw = {"read_termination": "\n", "write_termination": "\n"}
    smu = rm.open_resource("TCPIP0::10.0.0.5::inst0::INSTR", **kw)
    matrix = rm.open_resource("GPIB0::22::INSTR", **kw)
    try:
        assert float(smu.query("print(errorqueue.count)")) == 0
        assert matrix.query(":SYST:ERR?") == '+0,"No error"'
    finally:  # not rm.close(): pyvisa shares one manager per library with the backend's
        smu.close()
        matrix.close()
