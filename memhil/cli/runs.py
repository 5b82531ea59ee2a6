"""``memhil runs list|show|export|plot|stop``: look at what the run store holds, or ask a
running run to stop. ``--db`` goes
after the subcommand (as for every command) or, as before, right after ``runs``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from memhil.cli.common import DEFAULT_DB, CliError, check_run_id, db_option, existing_db

__all__ = ["DEFAULT_DB", "PLOT_KINDS", "command"]

PLOT_KINDS: tuple[str, ...] = ("iv", "pulse_response", "conductance_map", "retention", "endurance")
# the characterization library's plots (memhil.store.plots)
PLOT_KINDS += (
    "switch_seeker",
    "multistate",
    "stdp",
    "volatility",
    "chronoamperometry",
    "multi_bias",
    "sequence",
)
#: Plots of training runs (experiment files): ``memhil.store.training_plots``.
TRAINING_PLOT_KINDS = ("learning_curve", "pulse_counts", "conductance")
#: Rows of points ``runs show`` prints (the rest: ``runs export``).
SHOW_ROWS = 8


@click.group("runs")
@db_option("SQLite run store to read (must exist)")
@click.pass_context
def command(ctx: click.Context, db: str | None) -> None:
    """List, show, export or plot stored runs."""
    ctx.obj = {"db": db}


def _db(ctx: click.Context, db: str | None) -> str:
    return existing_db(db or (ctx.obj or {}).get("db"))


def _protocol(md: dict) -> str:
    """The protocol of a run: a protocol file's ``protocol``, else a ``protocol`` entry;
    for a training run its algorithm."""
    from memhil.store.run_facts import protocol_of  # the store loads QCoDeS: not at startup

    return protocol_of(md)


def _kind(md: dict) -> str:
    """Where the run was measured: sim, mock_lab or station (a sweep's own run: sweep)."""
    from memhil.store.run_facts import measured_on

    return "sweep" if "sweep" in md else measured_on(md)


def _date(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@command.command("list")
@db_option("SQLite run store to read (must exist)")
@click.pass_context
def list_runs(ctx: click.Context, db: str | None) -> int:
    """Every run: id, date, name, protocol, kind, status, points."""
    from memhil.store import RunStore

    db = _db(ctx, db)
    with RunStore(db) as store:
        infos = store.runs()
        mds = {r.run_id: store.metadata(r.run_id) for r in infos}
    click.echo(
        f"{'id':>4}  {'date':<17}{'name':<24} {'protocol':<16} {'kind':<9} "
        f"{'status':<12}{'points':>8}"
    )
    for r in infos:
        md = mds[r.run_id]
        name = r.name if r.continues is None else f"{r.name} (cont. {r.continues})"
        click.echo(
            f"{r.run_id:>4}  {_date(r.started):<17}{name:<24} {_protocol(md):<16} "
            f"{_kind(md):<9} {r.status:<12}{r.n_points:>8}"
        )
    if not infos:
        click.echo(f"(no runs in {db})")
    return 0


@command.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="all metadata as JSON instead")
@click.option(
    "--metric", "metrics", multiple=True, metavar="NAME", help="a sweep: only these metrics"
)
@db_option("SQLite run store to read (must exist)")
@click.pass_context
def show(
    ctx: click.Context, run_id: int, as_json: bool, metrics: tuple[str, ...], db: str | None
) -> int:
    """A run in short: protocol, parameters, where, status, columns with units, first
    points (``--json``: every metadata entry). A sweep (RUN_ID its sweep id): axis values
    x final metrics, mean ± sd over seeds."""
    from memhil.store import RunStore
    from memhil.store.columns import unit_of
    from memhil.store.run_records import META_SWEEP

    db = _db(ctx, db)
    with RunStore(db) as store:
        check_run_id(store, run_id, db)
        md = store.metadata(run_id)
        if as_json:
            click.echo(json.dumps(md, indent=2, default=str))
            return 0
        if META_SWEEP in md:
            from memhil.cli.sweep import show_sweep

            return show_sweep(store, run_id, metrics, db)
        info = {r.run_id: r for r in store.runs()}
        chain = store.chain(run_id)
        df = store.load(run_id)
    root = info[chain[0]]
    if md.get("memhil_kind") == "experiment":
        from memhil.runs.experiment_run import training_summary

        click.echo(
            f"run {run_id}: {root.name}, {_protocol(md)} on {_kind(md)}, "
            f"{info[chain[-1]].status}; {len(df)} points"
            + (f" in runs {', '.join(map(str, chain))}" if len(chain) > 1 else "")
        )
        click.echo(f"  file      {md.get('protocol_file', '-')}")
        for line in training_summary(df, md):
            click.echo(line)
        click.echo(
            f"plots: memhil runs plot {run_id} FILE.png --kind "
            f"{{{','.join(TRAINING_PLOT_KINDS)}}} --db {db}"
        )
        return 0
    raw_cfg = md.get("protocol_config")
    cfg: dict[str, Any] = raw_cfg if isinstance(raw_cfg, dict) else {}
    params = cfg.get("params") or {}
    click.echo(
        f"run {run_id}: {root.name}, protocol {_protocol(md)} on {_kind(md)}, "
        f"{info[chain[-1]].status}"
    )
    click.echo(
        f"  started   {_date(root.started)}, finished "
        f"{_date(info[chain[-1]].completed)}; {len(df)} points"
        + (f" in runs {', '.join(map(str, chain))}" if len(chain) > 1 else "")
    )
    if cfg.get("file"):
        click.echo(f"  file      {cfg['file']}")
    if params:
        click.echo("  params    " + ", ".join(f"{k}={_with_unit(k, v)}" for k, v in params.items()))
    if md.get("device_model") not in (None, ""):
        dm = md["device_model"]
        click.echo(f"  device    {dm.get('model', dm) if isinstance(dm, dict) else dm}")
    if "open_circuit" in df and (df["open_circuit"] > 0.5).any():
        click.echo(
            f"  flag      {int((df['open_circuit'] > 0.5).sum())} point(s) read an "
            "open circuit (open_circuit = 1)"
        )
    units = {c: unit_of(c) for c in df.columns}
    head = df.head(SHOW_ROWS).rename(columns={c: f"{c} [{u}]" for c, u in units.items() if u})
    click.echo("")
    click.echo(head.to_string(index=False))
    if len(df) > SHOW_ROWS:
        click.echo(
            f"... {len(df) - SHOW_ROWS} more (memhil runs export {run_id} FILE.nc "
            f"--db {db}); metadata: memhil runs show {run_id} --json --db {db}"
        )
    return 0


def _with_unit(name: str, value) -> str:
    from memhil.store.columns import unit_of

    unit = unit_of(name)
    return f"{value} {unit}" if unit and isinstance(value, (int, float)) else f"{value}"


@command.command("stop")
@click.argument("run_id", type=int)
@db_option("SQLite run store of the running run (must exist)")
@click.pass_context
def stop(ctx: click.Context, run_id: int, db: str | None) -> int:
    """Ask a running run to stop: a protocol after its unit in flight, a training run
    after its epoch in flight; it enters its confirmed safe state and stays resumable
    (docs/monitor.md). Nothing is killed."""
    from memhil.store import RunStore
    from memhil.store.stop_request import request_stop

    db = _db(ctx, db)
    with RunStore(db) as store:
        check_run_id(store, run_id, db)
        info = {r.run_id: r for r in store.runs()}
        chain = store.chain(run_id)
    status = info[chain[-1]].status
    if status != "running":
        raise CliError(f"run {run_id} in {db} is {status}, not running: nothing to stop")
    path = request_stop(db, chain[0], by="memhil runs stop")
    click.echo(
        f"stop requested ({path}): run {chain[0]} stops after its unit or epoch in flight, "
        f"in its safe state; continue it with memhil run FILE --db {db} --resume {chain[0]}"
    )
    return 0


@command.command("export")
@click.argument("run_id", type=int)
@click.argument("path")
@db_option("SQLite run store to read (must exist)")
@click.pass_context
def export(ctx: click.Context, run_id: int, path: str, db: str | None) -> int:
    """A run (with its continuations) to netCDF, each column with its ``units``."""
    from memhil.store import RunStore

    db = _db(ctx, db)
    with RunStore(db) as store:
        check_run_id(store, run_id, db)
        click.echo(str(store.export(run_id, path)))
    return 0


@command.command("plot")
@click.argument("run_id", type=int)
@click.argument("path")
@click.option(
    "--kind",
    type=click.Choice(PLOT_KINDS + TRAINING_PLOT_KINDS),
    help="what to plot (a run)",
)
@click.option("--metric", default=None, metavar="NAME", help="a sweep: the final metric")
@click.option("--x", "x_axis", default=None, metavar="AXIS", help="a sweep: the axis along x")
@db_option("SQLite run store to read (must exist)")
@click.pass_context
def plot(
    ctx: click.Context,
    run_id: int,
    path: str,
    kind: str | None,
    metric: str | None,
    x_axis: str | None,
    db: str | None,
) -> int:
    """A run as a PNG; a sweep (RUN_ID its sweep id): a final metric against one axis,
    one line per value of the other axes, the sd over seeds as error bars."""
    from memhil.store import RunStore
    from memhil.store.run_records import META_SWEEP

    db = _db(ctx, db)
    with RunStore(db) as store:
        check_run_id(store, run_id, db)
        if META_SWEEP in store.metadata(run_id):
            from memhil.cli.sweep import plot_sweep_command

            return plot_sweep_command(store, run_id, path, metric, x_axis, db)
        if kind is None:
            raise CliError("memhil runs plot: error: missing option --kind (what to plot)")
        df = store.load(run_id)
        arrays = store.arrays(run_id) if kind == "conductance" else []
    from memhil.store import plots, training_plots

    try:
        if kind == "conductance":
            written = training_plots.plot_conductance(arrays, path)
        elif kind in TRAINING_PLOT_KINDS:
            written = getattr(training_plots, f"plot_{kind}")(df, path)
        else:
            written = getattr(plots, f"plot_{kind}")(df, path)
    except (KeyError, ValueError) as exc:  # the run lacks a column this plot needs
        raise CliError(
            f"memhil runs plot: error: run {run_id} cannot be plotted as --kind "
            f"{kind}: {type(exc).__name__} {exc} (columns: "
            f"{', '.join(map(str, df.columns))})"
        ) from None
    click.echo(str(written))
    return 0
