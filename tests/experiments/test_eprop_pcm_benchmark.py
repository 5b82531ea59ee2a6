"""benchmarks/eprop_pcm.py prints its table from the run store: the table printed after a
(tiny, inline) sweep is the one ``--from-db DB --sweep ID`` reprints without training."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark imports its sibling modules

import eprop_pcm  # noqa: E402  # benchmarks/eprop_pcm.py


def _table(out: str) -> str:
    """The printed table (its 'sweep ...' header line to the last arm row)."""
    start = out.index("\nsweep ")
    return out[start : out.index("\n\nreprint:", start) if "\n\nreprint:" in out else None].strip()


def test_the_table_reprinted_from_the_store_is_the_one_printed_after_running(tmp_path, capsys):
    args = ["--quick", "--schemes", "ideal", "mixed_precision", "--seeds", "0", "--out"]
    assert eprop_pcm.main([*args, str(tmp_path)]) == 0
    printed = _table(capsys.readouterr().out)
    rows = printed.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["float", "mixed_precision"]
    assert " 1.00 ± " in rows[0]  # float divided by itself, the same seed

    db = tmp_path / "runs.db"
    assert eprop_pcm.main(["--from-db", str(db), "--sweep", "1"]) == 0
    assert _table("\n" + capsys.readouterr().out) == printed


def test_a_store_without_that_sweep_is_one_line_and_exit_2(tmp_path, capsys):
    from memhil.store import RunStore

    with RunStore(tmp_path / "empty.db"):
        pass
    assert eprop_pcm.main(["--from-db", str(tmp_path / "empty.db"), "--sweep", "7"]) == 2
    assert "has no run 7" in capsys.readouterr().err
