"""The monitor's data: the run list, points since a cursor, sweep tables, read-only."""

from __future__ import annotations

import sqlite3

import pytest

from memhil.monitor import StoreView
from memhil.monitor.plot_kinds import TALLY, plots_for


def test_run_list_has_one_entry_per_chain_with_kind_status_progress_and_backend(store_db):
    db, ids = store_db
    view = StoreView(db)
    runs = {r["id"]: r for r in view.runs(now_s=None)}
    assert set(runs) == {v for k, v in ids.items() if k != "continuation"}
    iv, running, chained = runs[ids["iv"]], runs[ids["running"]], runs[ids["chained"]]
    assert (iv["kind"], iv["protocol"], iv["status"], iv["backend"]) == (
        "protocol",
        "iv_sweep",
        "completed",
        "sim",
    )
    assert iv["n_points"] == 6 and iv["progress"] == 1.0 and iv["eta_s"] is None
    assert running["status"] == "running" and running["backend"] == "mock_lab"
    assert running["progress"] == pytest.approx(10 / 40)
    assert running["eta_s"] is not None and running["eta_s"] >= 0
    # a continued run shows once, its points summed, its status the last run's; no unit
    # in flight: a protocol run stopped cleanly between units is resumable
    assert chained["chain"] == [ids["chained"], ids["continuation"]]
    assert chained["n_points"] == 2 and chained["status"] == "resumable"
    assert runs[ids["sweep"]]["kind"] == runs[ids["tagged_sweep"]]["kind"] == "sweep"
    assert runs[ids["experiment"]]["kind"] == "experiment"


def test_points_since_a_cursor_continue_across_the_chain_and_nan_travels_as_null(store_db):
    db, ids = store_db
    view = StoreView(db)
    cols, cursor = view.points(ids["chained"])
    assert cols["point"] == [0, 1] and cols["index_"] == [0, 1]
    assert cols["g"] == [None, 2e-6]  # NaN is not JSON
    again, cursor2 = view.points(ids["chained"], cursor)
    assert again["point"] == [] and cursor2.n == 2
    tail, _ = view.points(ids["iv"], view.cursor_at(ids["iv"], 4))
    assert tail["point"] == [4, 5] and tail["v"] == [1.0, 1.0]
    assert view.cursor_at(ids["chained"], 1).n == 1
    later, _ = view.points(ids["continuation"], view.cursor_at(ids["continuation"], 1))
    assert later["t_s"] == [10.0]


def test_new_points_committed_by_a_writer_appear_after_the_cursor(store_db):
    from memhil.store import RunStore

    db, ids = store_db
    view = StoreView(db)
    v0 = view.data_version()
    _, cursor = view.points(ids["running"])
    with RunStore(db) as store:
        w = store.open_run(ids["running"])
        w.add(phase="ltp", n=10, tile=0, row=0, col=0, g=1e-5)
    assert view.data_version() != v0
    cols, cursor = view.points(ids["running"], cursor)
    assert cols["point"] == [10] and cols["n"] == [10] and cursor.n == 11


def test_sweep_table_lists_each_trial_with_its_axis_metric_and_status(store_db):
    db, ids = store_db
    sweep = StoreView(db).sweep(ids["sweep"])
    assert sweep["axes"] == ["v_ltp_v"] and sweep["metrics"] == ["accuracy"]
    assert [t["status"] for t in sweep["trials"]] == ["completed", "completed", "running"]
    assert [t["param.v_ltp_v"] for t in sweep["trials"]] == [1.0, 1.5, 2.0]
    assert [t["metric.accuracy"] for t in sweep["trials"]] == [0.8, 0.9, None]


def test_a_sweep_of_tagged_trial_runs_lists_each_trial_run(store_db):
    db, ids = store_db
    sweep = StoreView(db).sweep(ids["tagged_sweep"])
    assert sweep["axes"] == ["lr"] and sweep["metrics"] == ["accuracy"]
    rows = [(t["trial"], t["run_id"], t["status"], t["param.lr"]) for t in sweep["trials"]]
    assert rows == [(0, ids["trial0"], "completed", 0.1), (1, ids["trial1"], "failed", 0.01)]


def test_the_view_cannot_write_to_the_store(store_db):
    db, _ = store_db
    view = StoreView(db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        view.conn.execute("DELETE FROM runs")


def test_plot_definitions_follow_the_run_kind_with_units_in_every_label(store_db):
    db, ids = store_db
    run = StoreView(db).run(ids["iv"])
    (iv,) = run["plots"]
    assert iv["x"] == "v" and iv["y"] == ["i"] and iv["logy"] and iv["abs"]
    assert iv["group"] == ["tile", "row", "col", "cycle"] and iv["color"] == "cycle"
    assert (iv["xlabel"], iv["ylabel"]) == ("V (V)", "|I (A)|")
    (end,) = plots_for("endurance", ["cycle", "tile", "row", "col"], ["g_hrs", "g_lrs"])
    assert end["y"] == ["g_lrs", "g_hrs"] and "G HRS (S)" in end["ylabel"]
    learn, tally = StoreView(db).run(ids["experiment"])["plots"]
    assert learn["x"] == "epoch" and learn["y"] == ["value"] and learn["group"] == ["metric"]
    assert ["metric", TALLY, False] in learn["filter"] and ["metric", TALLY, True] in tally[
        "filter"
    ]
    assert ["phase", "^epoch$", True] in learn["filter"] and tally["logy"]
    (heat,) = plots_for("conductance_map", ["tile", "row", "col"], ["g"])
    assert heat["zlabel"] == "G (S)"
