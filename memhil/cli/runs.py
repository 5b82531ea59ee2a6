"""``memhil runs list|show|export|plot``: look at what the run store holds."""

from __future__ import annotations

import argparse
import json

DEFAULT_DB = "memhil.db"


def add_parser(sub) -> None:
    runs = sub.add_parser("runs", help="list, show, export or plot stored runs")
    runs.add_argument("--db", default=DEFAULT_DB, help=f"SQLite run store (default {DEFAULT_DB})")
    rs = runs.add_subparsers(dest="runs_command", required=True)
    rs.add_parser("list", help="every run: id, name, status, points")
    show = rs.add_parser("show", help="a run's metadata and first points")
    show.add_argument("run_id", type=int)
    export = rs.add_parser("export", help="a run (with its continuations) to netCDF")
    export.add_argument("run_id", type=int)
    export.add_argument("path")
    plot = rs.add_parser("plot", help="a run as a PNG")
    plot.add_argument("run_id", type=int)
    plot.add_argument("path")
    plot.add_argument("--kind", required=True,
                      choices=["iv", "pulse_response", "conductance_map", "retention", "endurance"])


def run(args: argparse.Namespace, out=print) -> int:
    from memhil.store import RunStore

    with RunStore(args.db) as store:
        if args.runs_command == "list":
            out(f"{'id':>4}  {'name':<24}{'status':<12}{'points':>8}")
            for r in store.runs():
                out(f"{r.run_id:>4}  {r.name:<24}{r.status:<12}{r.n_points:>8}")
        elif args.runs_command == "show":
            out(json.dumps(store.metadata(args.run_id), indent=2, default=str))
            out(store.load(args.run_id).head(20).to_string())
        elif args.runs_command == "export":
            out(str(store.export(args.run_id, args.path)))
        elif args.runs_command == "plot":
            from memhil.store import plots
            df = store.load(args.run_id)
            if args.kind == "conductance_map":
                out(str(plots.plot_conductance_map(df, args.path)))
            else:
                out(str(getattr(plots, f"plot_{args.kind}")(df, args.path)))
    return 0
