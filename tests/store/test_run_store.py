"""memhil.store: QCoDeS-backed run store, netCDF export, plots."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import qcodes
import xarray as xr
from PIL import Image

from memhil.store import RunStore, plots

KEYS = ["die_col", "die_row", "subsite", "step"]
VALUES = ["v", "i", "g"]
META = {
    "station_snapshot": {"instruments": {"smu": {"parameters": {"v": {"value": 0.1}}}}},
    "protocol_config": {"name": "iv", "v_max": 1.5, "steps": [0, 1, 2]},
    "calibration_versions": {"smu": "2024-05-01T12:00:00"},
    "device_model": {"g_on": 1e-3, "g_off": 1e-6},
    "note": "plain string",
}


def _points(n, die=(0, 0), subsite="A", start=0):
    for k in range(start, start + n):
        yield dict(
            die_col=die[0],
            die_row=die[1],
            subsite=subsite,
            step=k,
            v=0.1 * k,
            i=1e-6 * k,
            g=1e-5 * (k + 1),
        )


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.db")
    yield s
    s.close()


def test_round_trip_points_and_metadata(store):
    db_before = qcodes.config.core.db_location
    with store.new_run("iv", keys=KEYS, values=VALUES, metadata=META) as w:
        pts = list(_points(5)) + list(_points(2, die=(1, -2), subsite="B"))
        for p in pts:
            w.add(**p)
        w.add(die_col=3, die_row=3, subsite="C", step=0, v=1.0)  # i, g missing -> NaN
        run_id = w.run_id
    df = store.load(run_id)
    assert list(df.columns) == ["point"] + KEYS + VALUES
    assert len(df) == 8 and list(df["point"]) == list(range(8))
    assert df["die_col"].dtype == np.int64 and df["step"].dtype == np.int64
    assert list(df["subsite"][:7]) == ["A"] * 5 + ["B"] * 2
    assert df["die_row"].iloc[5] == -2
    np.testing.assert_allclose(df["v"][:5], [0.0, 0.1, 0.2, 0.3, 0.4])
    assert np.isnan(df["i"].iloc[7]) and np.isnan(df["g"].iloc[7])
    md = store.metadata(run_id)
    for k, v in META.items():
        assert md[k] == v
    assert md["memhil_status"] == "completed"
    (info,) = store.runs()
    assert (info.run_id, info.name, info.status, info.n_points) == (run_id, "iv", "completed", 8)
    assert info.started is not None and info.completed >= info.started
    assert qcodes.config.core.db_location == db_before  # global config untouched


def test_add_rejects_bad_points(store):
    w = store.new_run("x", keys=["row"], values=["g"], metadata={})
    with pytest.raises(KeyError):
        w.add(g=1.0)  # key missing
    with pytest.raises(KeyError):
        w.add(row=1, bogus=2.0)
    w.add(row=1, g=1.0)
    with pytest.raises(TypeError):
        w.add(row="a", g=1.0)  # row was inferred as int
    w.close()
    with pytest.raises(RuntimeError):
        w.add(row=2, g=1.0)
    with pytest.raises(ValueError):
        store.new_run("x", keys=["point"], values=["g"], metadata={})
    with pytest.raises(ValueError):
        store.new_run("x", keys=["a"], values=["g"], metadata={"memhil_status": "x"})


def test_unclosed_writer_in_killed_process_keeps_points(tmp_path):
    db = tmp_path / "crash.db"
    code = textwrap.dedent(f"""
        import os
        from memhil.store import RunStore
        s = RunStore({str(db)!r})
        w = s.new_run("crash", keys=["row", "col"], values=["g"], metadata={{"a": 1}})
        for k in range(7):
            w.add(row=k, col=2 * k, g=1e-6 * k)
        os._exit(3)  # killed: no close, no flush, no atexit
    """)
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 3, r.stderr
    s = RunStore(db)
    (info,) = s.runs()
    # stored "running", never closed; its writer is gone, so it is shown as died
    assert info.status == "died" and info.n_points == 7
    df = s.load(info.run_id)
    assert list(df["row"]) == list(range(7)) and list(df["col"]) == [2 * k for k in range(7)]
    assert s.metadata(info.run_id)["a"] == 1
    s.close()


def test_unclosed_writer_same_process_fresh_store(tmp_path):
    s1 = RunStore(tmp_path / "a.db")
    w = s1.new_run("open", keys=["row"], values=["g"], metadata={})
    for k in range(4):
        w.add(row=k, g=float(k))
    s2 = RunStore(tmp_path / "a.db")  # writer never closed
    assert len(s2.load(w.run_id)) == 4
    assert s2.runs()[0].status == "running"
    s1.close()
    s2.close()


def test_failed_and_interrupted_statuses(store):
    w = store.new_run("boom", keys=["row"], values=["g"], metadata={})
    with pytest.raises(ZeroDivisionError), w:
        w.add(row=0, g=1.0)
        raise ZeroDivisionError
    failed_id = w.run_id
    w2 = store.new_run("ctrl-c", keys=["row"], values=["g"], metadata={})
    with pytest.raises(KeyboardInterrupt), w2:
        w2.add(row=0, g=1.0)
        raise KeyboardInterrupt
    w3 = store.new_run("manual", keys=["row"], values=["g"], metadata={})
    w3.close("interrupted")
    with pytest.raises(ValueError):
        store.new_run("bad", keys=["row"], values=["g"], metadata={}).close("weird")
    status = {r.run_id: r.status for r in store.runs()}
    assert status[failed_id] == "failed"
    assert status[w2.run_id] == "interrupted"
    assert status[w3.run_id] == "interrupted"
    assert store.metadata(failed_id)["memhil_status"] == "failed"
    assert len(store.load(failed_id)) == 1


def test_completed_keys(store):
    w = store.new_run("grid", keys=KEYS, values=VALUES, metadata={})
    for p in _points(3, die=(0, 1)):
        w.add(**p)
    for p in _points(2, die=(2, 0), subsite="B"):
        w.add(**p)
    assert store.completed_keys(w.run_id, ["die_col", "die_row", "subsite"]) == {
        (0, 1, "A"),
        (2, 0, "B"),
    }
    ck = store.completed_keys(w.run_id, KEYS)
    assert (0, 1, "A", 2) in ck and (2, 0, "B", 1) in ck and len(ck) == 5
    assert all(type(t[0]) is int and type(t[2]) is str for t in ck)
    with pytest.raises(KeyError):
        store.completed_keys(w.run_id, ["nope"])


def test_export_netcdf(store, tmp_path):
    with store.new_run("iv", keys=KEYS, values=VALUES, metadata=META) as w:
        for p in _points(6):
            w.add(**p)
    out = store.export(w.run_id, tmp_path / "out" / "iv.nc")
    assert out.exists() and out.stat().st_size > 0
    with xr.open_dataset(out, engine="h5netcdf") as xds:
        assert xds.sizes["point"] == 6
        np.testing.assert_allclose(xds["g"].values, 1e-5 * np.arange(1, 7))
        assert list(xds["subsite"].values) == ["A"] * 6
        assert list(xds["step"].values) == list(range(6))
        assert json.loads(xds.attrs["protocol_config"]) == META["protocol_config"]
        assert xds.attrs["memhil_status"] == "completed"


def test_resume_in_place_after_crash(tmp_path):
    db = tmp_path / "r.db"
    s1 = RunStore(db)
    w = s1.new_run("campaign", keys=["row", "col"], values=["g"], metadata={"cfg": {"n": 4}})
    for k in range(3):
        w.add(row=0, col=k, g=float(k))
    run_id = w.run_id  # "process dies": never closed
    s2 = RunStore(db)
    done = s2.completed_keys(run_id, ["row", "col"])
    w2 = s2.open_run(run_id)
    assert w2.run_id == run_id  # appended to the same QCoDeS dataset
    assert s2.metadata(run_id)["memhil_status"] == "running"
    for k in range(4):
        if (0, k) not in done:
            w2.add(row=0, col=k, g=float(k))
    w2.close()
    df = s2.load(run_id)
    assert list(df["col"]) == [0, 1, 2, 3] and list(df["point"]) == [0, 1, 2, 3]
    assert [r.run_id for r in s2.runs()] == [run_id]
    assert s2.runs()[0].status == "completed"
    s1.close()
    s2.close()


def test_resume_interrupted_run_appends_in_place(store):
    w = store.new_run("c", keys=["row"], values=["g"], metadata={})
    w.add(row=0, g=0.0)
    w.close("interrupted")
    w2 = store.open_run(w.run_id)
    assert w2.run_id == w.run_id
    w2.add(row=1, g=1.0)
    w2.close()
    assert list(store.load(w.run_id)["row"]) == [0, 1]


def test_resume_completed_run_creates_continuation_chain(store):
    with store.new_run(
        "c", keys=["row", "subsite"], values=["g"], metadata={"cfg": {"n": 6}, "s": "x"}
    ) as w:
        w.add(row=0, subsite="A", g=0.0)
        w.add(row=1, subsite="A", g=1.0)
    root = w.run_id
    with store.open_run(root) as w2:
        assert w2.run_id != root
        w2.add(row=2, subsite="B", g=2.0)
    w3 = store.open_run(root)  # chain tail is completed -> another continuation
    assert w3.run_id not in (root, w2.run_id)
    w3.add(row=3, subsite="B", g=3.0)
    w3.close("interrupted")
    md2 = store.metadata(w2.run_id)
    assert md2["memhil_continues"] == root and md2["cfg"] == {"n": 6} and md2["s"] == "x"
    assert store.metadata(w3.run_id)["memhil_continues"] == w2.run_id
    assert store.chain(w2.run_id) == [root, w2.run_id, w3.run_id]
    for rid in (root, w2.run_id, w3.run_id):  # any id of the chain gives the whole chain
        df = store.load(rid)
        assert list(df["row"]) == [0, 1, 2, 3] and list(df["point"]) == [0, 1, 2, 3]
    assert store.completed_keys(root, ["row", "subsite"]) == {
        (0, "A"),
        (1, "A"),
        (2, "B"),
        (3, "B"),
    }
    # w3 is interrupted (not completed in QCoDeS): resuming appends to it in place
    w4 = store.open_run(root)
    assert w4.run_id == w3.run_id
    w4.add(row=4, subsite="C", g=4.0)
    w4.close()
    assert list(store.load(root)["point"]) == [0, 1, 2, 3, 4]
    infos = {r.run_id: r for r in store.runs()}
    assert infos[w2.run_id].continues == root and infos[root].continues is None
    assert infos[w3.run_id].n_points == 2


# ---------------------------------------------------------------- plots
def _png_ok(path):
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (int(plots.FIGSIZE[0] * plots.DPI), int(plots.FIGSIZE[1] * plots.DPI))


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    v = np.concatenate([np.linspace(0, 1, 20), np.linspace(1, -1, 40), np.linspace(-1, 0, 20)])
    iv = pd.concat(
        [pd.DataFrame({"cycle": c, "v": v, "i": 1e-6 * v * (1 + c)}) for c in range(3)],
        ignore_index=True,
    )
    pulses = pd.DataFrame(
        {
            "pulse": np.arange(100),
            "phase": ["LTP"] * 50 + ["LTD"] * 50,
            "g": np.r_[np.linspace(1e-6, 1e-4, 50), np.linspace(1e-4, 1e-6, 50)],
        }
    )
    ret = pd.DataFrame({"t_s": np.logspace(0, 4, 30), "g": 1e-4 * (1 - 0.01 * rng.random(30))})
    endu = pd.DataFrame(
        {
            "cycle": np.arange(200),
            "r_hrs": 1e6 * (1 + 0.1 * rng.random(200)),
            "r_lrs": 1e4 * (1 + 0.1 * rng.random(200)),
        }
    )
    wafer = {
        (c, r): float(c + r) for c in range(-3, 4) for r in range(-3, 4) if c * c + r * r <= 10
    }
    out = [
        plots.plot_iv(iv, tmp_path / "iv.png"),
        plots.plot_pulse_response(pulses, tmp_path / "pulse.png"),
        plots.plot_conductance_map(rng.random((8, 8)) * 1e-4, tmp_path / "map.png"),
        plots.plot_conductance_map(
            pd.DataFrame({"row": [0, 0, 1, 1], "col": [0, 1, 0, 1], "g": [1e-6, 2e-6, 3e-6, 4e-6]}),
            tmp_path / "map_df.png",
            log=True,
        ),
        plots.plot_retention(ret, tmp_path / "sub" / "ret.png"),
        plots.plot_endurance(endu, tmp_path / "endu.png"),
        plots.plot_wafer_map(wafer, tmp_path / "wafer.png"),
    ]
    for p in out:
        _png_ok(p)


def test_plot_from_store(store, tmp_path):
    with store.new_run("iv", keys=["step"], values=["v", "i"], metadata={}) as w:
        for vv in np.linspace(-1, 1, 21):
            w.add(step=0, v=vv, i=1e-6 * vv)
    _png_ok(plots.plot_iv(store.load(w.run_id), tmp_path / "iv.png"))
