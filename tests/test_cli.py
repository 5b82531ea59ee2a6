"""The ``memhil`` command as a new user meets it: every mistake is one line on stderr and
exit status 2 (no trace), options sit after the subcommand, each run ends with a summary
and the next command to try."""

from __future__ import annotations

import subprocess
import sys

import pytest
import xarray as xr

from memhil.cli import main
from memhil.store import RunStore


@pytest.fixture
def db(tmp_path):
    """A store with one iv run (no pulse train) of 5 points."""
    path = tmp_path / "runs.db"
    with (
        RunStore(path) as store,
        store.new_run(
            "iv",
            keys=["row", "col", "step"],
            values=["v", "i", "g_set", "t_s"],
            metadata={
                "protocol_config": {"protocol": "iv_sweep", "params": {"v_max": 1.0}},
                "station_identity": {"kind": "sim"},
            },
        ) as w,
    ):
        for k in range(5):
            w.add(row=0, col=1, step=k, v=0.1 * k, i=1e-6 * k, g_set=1e-5, t_s=k)
    return path


def _one_line_exit_2(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_runs_show_of_a_missing_run_names_the_runs_there(db, capsys):
    _one_line_exit_2(capsys, ["runs", "show", "99", "--db", str(db)], "no run 99", "runs 1-1")


def test_runs_plot_with_an_unknown_kind(db, capsys):
    _one_line_exit_2(
        capsys, ["runs", "plot", "1", "x.png", "--kind", "nope", "--db", str(db)], "--kind", "iv"
    )


def test_runs_plot_of_a_kind_the_run_cannot_give(db, tmp_path, capsys):
    _one_line_exit_2(
        capsys,
        ["runs", "plot", "1", str(tmp_path / "r.png"), "--kind", "retention", "--db", str(db)],
        "cannot be plotted",
    )


def test_fit_of_a_run_that_is_not_a_pulse_train(db, capsys):
    _one_line_exit_2(capsys, ["fit", "1", "--db", str(db)], "memhil fit: error:")


@pytest.mark.parametrize("fix", [["--fix"], ["--fix", "c2c_std"], ["--fix", "c2c_std=abc"]])
def test_fit_fix_without_a_value(fix, db, capsys):
    _one_line_exit_2(capsys, ["fit", "1", "--db", str(db), *fix], "--fix")


def test_showcase_on_cuda_without_cuda(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _one_line_exit_2(capsys, ["showcase", "--torch-device", "cuda"], "no CUDA device")


@pytest.mark.parametrize(
    "argv", [["runs", "show", "1"], ["runs", "list"], ["fit", "1"], ["runs", "export", "1", "x.nc"]]
)
def test_a_misspelled_database_is_refused_not_created(argv, tmp_path, capsys):
    missing = tmp_path / "tpyo.db"
    _one_line_exit_2(capsys, [*argv, "--db", str(missing)], "no run store", "tpyo.db")
    assert not missing.exists()


def test_db_goes_after_the_subcommand_and_still_before_it_for_runs(db, capsys):
    assert main(["runs", "list", "--db", str(db)]) == 0
    after = capsys.readouterr().out
    assert main(["runs", "--db", str(db), "list"]) == 0
    assert capsys.readouterr().out == after


def test_runs_list_has_date_kind_and_protocol(db, capsys):
    assert main(["runs", "list", "--db", str(db)]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    for col in ("date", "protocol", "kind"):
        assert col in header
    assert "iv_sweep" in row and "sim" in row and "-" in row.split()[1]  # YYYY-MM-DD


def test_runs_show_is_short_with_units_and_json_on_request(db, capsys):
    assert main(["runs", "show", "1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 20 and "{" not in out
    for unit in ("v [V]", "i [A]", "g_set [S]", "t_s [s]", "v_max=1.0 V"):
        assert unit in out, out
    assert main(["runs", "show", "1", "--json", "--db", str(db)]) == 0
    assert '"protocol_config"' in capsys.readouterr().out


def test_netcdf_export_carries_units(db, tmp_path):
    nc = tmp_path / "run.nc"
    assert main(["runs", "export", "1", str(nc), "--db", str(db)]) == 0
    ds = xr.open_dataset(nc, engine="h5netcdf")
    assert {n: ds[n].attrs.get("units") for n in ("v", "i", "g_set", "t_s")} == {
        "v": "V",
        "i": "A",
        "g_set": "S",
        "t_s": "s",
    }
    assert "units" not in ds["row"].attrs


def test_version_and_protocols(capsys):
    from memhil import __version__
    from memhil.protocols.registry import protocol_names

    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}:" in out for name in protocol_names())
    assert main(["protocols", "pulse_train"]) == 0
    lines = capsys.readouterr().out.splitlines()
    width = next(line for line in lines if line.split()[:1] == ["width_s"])
    assert width.split()[1:3] == ["s", "1e-07"]
    _one_line_exit_2(capsys, ["protocols", "nope"], "unknown protocol 'nope'")


def test_run_ends_with_a_summary_and_the_next_command(tmp_path, capsys):
    proto = tmp_path / "map.yaml"
    proto.write_text("protocol: conductance_map\nparams: {cells: [[0, 0, 0], [0, 1, 1]]}\n")
    db = tmp_path / "s.db"
    assert main(["run", str(proto), "--sim", "--db", str(db), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("memhil run: conductance_map") and "simulator" in out[0]
    assert "run 1 completed: 2 points stored" in out[1]
    assert out[-1] == f"next: memhil runs show 1 --db {db}"


def test_a_mistake_in_a_real_process_is_one_line_without_a_trace(tmp_path):
    """The installed command path (``python -m memhil``), not only ``main``."""
    proc = subprocess.run(
        [sys.executable, "-m", "memhil", "runs", "show", "99", "--db", str(tmp_path / "nope.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_command_line_is_parsed_before_torch_is_imported():
    code = (
        "import sys; from memhil.cli import main; main(['--help']); "
        "sys.exit(sorted({'torch', 'qcodes', 'matplotlib'} & set(sys.modules)) != [])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
