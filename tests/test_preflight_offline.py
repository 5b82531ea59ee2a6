"""Errors in a protocol file fail before any instrument is contacted: ``memhil run`` against
a served mock lab (``--station`` with its live addresses) exits 2 with one line naming the
file and key, no command reaches any served instrument (the servers' ``transactions``
counters stay 0) and no database is created."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memhil.cli.app import main as cli_main
from memhil.mock_hw.lab import MockLab

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BAD = [
    (
        "limit",
        "protocol: pulse_train\nparams: {n_pulses: 2, v_ltp: 5.0, width_s: 8.0e-8}\n",
        "p.yaml: params.v_ltp",
    ),
    (
        "cell",
        "protocol: pulse_train\nparams: {n_pulses: 2, width_s: 8.0e-8, cells: [[0, 999, 0]]}\n",
        "p.yaml: params.cells: row index 999 out of range",
    ),
    (
        "protocol",
        "protocol: pulse_trian\nparams: {n_pulses: 2}\n",
        "p.yaml: protocol: unknown protocol 'pulse_trian'",
    ),
    ("read", "protocol: conductance_map\nparams: {v_read: 2.0}\n", "p.yaml: params.v_read"),
]


@pytest.fixture(scope="module")
def served_lab(tmp_path_factory):
    """The wafer example served on free loopback ports, and its live station file."""
    lab = MockLab(EXAMPLES / "mock_wafer_station.yaml", serve_array_board_tcp=True).start()
    live = tmp_path_factory.mktemp("lab") / "live.yaml"
    live.write_text(yaml.safe_dump(lab.station_config().to_dict(), sort_keys=False))
    yield lab, live
    lab.stop()


@pytest.mark.parametrize("name, text, expect", BAD, ids=[b[0] for b in BAD])
def test_protocol_file_errors_exit_2_before_any_wire_command(
    name, text, expect, served_lab, tmp_path, capsys
):
    lab, live = served_lab
    proto = tmp_path / "p.yaml"
    proto.write_text(text)
    db = tmp_path / "runs.db"
    before = {n: s.transactions for n, s in lab.servers.items()}
    assert len(before) == 2  # prober and array board, both served over TCP
    code = cli_main(["run", str(proto), "--station", str(live), "--db", str(db), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and expect in err, err
    assert {n: s.transactions for n, s in lab.servers.items()} == before  # zero commands
    assert not db.exists()  # nothing stored, no empty database left behind
