"""`memhil runs list|show|export|plot` over a store with one run."""

from __future__ import annotations

import xarray as xr

from memhil.cli.app import main
from memhil.store import RunStore


def test_runs_cli(tmp_path, capsys):
    db = tmp_path / "runs.db"
    with (
        RunStore(db) as store,
        store.new_run(
            "iv",
            keys=["row", "col", "step"],
            values=["v", "i"],
            metadata={"protocol": {"name": "iv_sweep"}},
        ) as w,
    ):
        for k in range(5):
            w.add(row=0, col=1, step=k, v=0.1 * k, i=1e-6 * k)
        run_id = w.run_id
    assert main(["runs", "--db", str(db), "list"]) == 0
    assert "iv" in capsys.readouterr().out
    main(["runs", "--db", str(db), "show", str(run_id)])
    assert "iv_sweep" in capsys.readouterr().out
    nc = tmp_path / "iv.nc"
    main(["runs", "--db", str(db), "export", str(run_id), str(nc)])
    assert xr.open_dataset(nc, engine="h5netcdf")["i"].size == 5
    png = tmp_path / "iv.png"
    main(["runs", "--db", str(db), "plot", str(run_id), str(png), "--kind", "iv"])
    assert png.stat().st_size > 1000
