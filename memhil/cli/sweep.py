"""``memhil sweep FILE``: run a sweep file (a run file over a grid, random points and
seeds of its keys) on Ray, every trial a run in the run store; then say what was stored
and what to look at next. Ray, torch and QCoDeS load only once the command line is
accepted."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from memhil.cli.common import DEFAULT_DB, CliError, db_option

_DESCRIPTION = (
    "Run sweep FILE (base:, grid:, seeds:, random:, resources:) on Ray: every trial "
    "pre-flighted first, then one Ray task per trial, each stored as a run tagged with the "
    "sweep and its axis values.\n\n"
    "Without --address a local Ray instance is started (no dashboard, this machine's CPUs) "
    "and stopped at the end; --address joins a running cluster (docs/sweeps.md).\n\n"
    "Exit status: 0 every trial completed; 1 some trial failed (recorded with its error; "
    "--resume SWEEP runs those again); 2 an error before any trial ran; 130 Ctrl-C."
)


@click.command("sweep", help=_DESCRIPTION)
@click.argument("sweep_file", metavar="FILE")
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="join the Ray cluster at ADDR (e.g. 10.0.0.5:6379, or 'auto' on a cluster node)",
)
@click.option(
    "--resume",
    default=None,
    type=int,
    metavar="SWEEP",
    help="run only the trials of sweep SWEEP (its run id) without a completed run",
)
@db_option("SQLite run store, created when missing")
@click.option(
    "--num-cpus",
    "num_cpus",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="CPUs of the local Ray instance (default: this machine's)",
)
@click.option("--no-progress", is_flag=True, help="no progress bar")
def command(
    sweep_file: str,
    address: str | None,
    resume: int | None,
    db: str | None,
    num_cpus: int | None,
    no_progress: bool,
) -> int:
    if address is not None and num_cpus is not None:
        raise CliError("memhil sweep: error: --num-cpus sizes a local instance; not with --address")
    from memhil.cli.run import _log_to
    from memhil.core.errors import ConfigError, LimitError

    db = db or DEFAULT_DB
    t0 = time.perf_counter()
    log_path = Path(db).with_suffix(".log")
    with _log_to(log_path):
        from memhil.sweeps import load_sweep_file, run_sweep

        try:
            sweep = load_sweep_file(sweep_file)
        except (ConfigError, LimitError) as exc:
            raise CliError(f"memhil sweep: error: {exc}") from None
        print(
            f"memhil sweep: {len(sweep.trials)} trials of {sweep.kind.name} file {sweep.base} "
            f"(axes: {', '.join(sweep.axes) or 'none'}"
            + (f"; seeds at {sweep.seed_key}" if sweep.seed_key else "")
            + f"), pre-flight ok, into {db}",
            flush=True,
        )

        def ready(sweep_id: int, where: str, n_todo: int) -> None:
            again = f", {len(sweep.trials) - n_todo} already completed" if resume else ""
            print(f"sweep {sweep_id}: {n_todo} trial(s) on {where}{again}", flush=True)

        try:
            out = run_sweep(
                sweep,
                db=db,
                address=address,
                resume=resume,
                num_cpus=num_cpus,
                progress=not no_progress,
                on_ready=ready,
            )
        except (ConfigError, LimitError) as exc:
            raise CliError(f"memhil sweep: error: {exc}") from None
        except KeyboardInterrupt as exc:
            sid = getattr(exc, "memhil_sweep_id", None)
            if sid is None:
                print("memhil sweep: interrupted before any trial ran", file=sys.stderr)
                return 130
            print(
                f"memhil sweep: interrupted; sweep {sid} in {db} keeps every finished trial; "
                f"continue it with:\n  memhil sweep {sweep_file} --db {db} --resume {sid}",
                file=sys.stderr,
            )
            return 130
    elapsed = time.perf_counter() - t0
    n_done = len(out.already_done) + len(out.completed)
    print(
        f"sweep {out.sweep_id}: {n_done}/{out.n_trials} trials completed"
        + (f", {len(out.failed)} failed" if out.failed else "")
        + f" in {elapsed:.1f} s ({out.where})"
    )
    for trial, error in out.failed.items():
        print(f"  trial {trial} failed: {error}")
    if out.failed:
        print(
            f"  (traces in {log_path}); run the failed trials again with:\n"
            f"  memhil sweep {sweep_file} --db {db} --resume {out.sweep_id}"
        )
    print(f"next: memhil runs show {out.sweep_id} --db {db}")
    return 1 if out.failed else 0


def show_sweep(store, sweep_id: int, metrics: tuple[str, ...], db: str) -> int:
    """``memhil runs show SWEEP``: the sweep in a few lines, then axis values x final
    metrics (mean ± sd over seeds), then the failed trials with their errors."""
    import click

    from memhil.core.errors import ConfigError
    from memhil.store.columns import unit_of
    from memhil.sweeps.results import sweep_definition, sweep_table, sweep_trials

    definition = sweep_definition(store, sweep_id)
    trials = sweep_trials(store, sweep_id)
    try:
        table, axes, names = sweep_table(store, sweep_id, list(metrics) or None)
    except ConfigError as exc:
        raise CliError(f"memhil runs show: error: {exc.reason}") from None
    counts = trials["status"].value_counts().to_dict()
    click.echo(
        f"sweep {sweep_id}: {definition.get('name')}, {len(trials)} trials of "
        f"{definition.get('kind')} file {definition.get('base')}; "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    click.echo(f"  file      {definition.get('file')}")
    seeds = sorted({t.get("seed") for t in definition.get("trials") or []} - {None})
    if seeds:
        click.echo(f"  seeds     {seeds} at {definition.get('seed_key')}")
    click.echo("")
    if table.empty:
        click.echo("(no completed trial yet)")
    else:
        out = table[[*axes, "n"]].copy()
        for m in names:
            unit = unit_of(m)
            head = f"{m} [{unit}]" if unit else m
            out[head] = [
                f"{mu:.4g}" if sd != sd else f"{mu:.4g} ± {sd:.2g}"  # NaN sd: one seed
                for mu, sd in zip(table[f"{m}_mean"], table[f"{m}_sd"])
            ]
        click.echo(out.to_string(index=False))
    for row in trials[trials["status"] == "failed"].itertuples():
        click.echo(f"  trial {row.trial} failed (run {row.run_id}): {row.error}")
    pending = trials[trials["status"].isin(["pending", "running", "interrupted"])]
    if len(pending):
        click.echo(
            f"  {len(pending)} trial(s) without a completed run: "
            f"memhil sweep {definition.get('file')} --db {db} --resume {sweep_id}"
        )
    return 0


def plot_sweep_command(
    store, sweep_id: int, path: str, metric: str | None, x: str | None, db: str
) -> int:
    """``memhil runs plot SWEEP PATH``: a final metric against one axis (``--x``), one
    line per value of the other axes, error bars the sd over seeds."""
    import click

    from memhil.core.errors import ConfigError
    from memhil.sweeps.plot import plot_sweep
    from memhil.sweeps.results import sweep_definition, sweep_table

    definition = sweep_definition(store, sweep_id)
    table, axes, names = sweep_table(store, sweep_id)
    if not names:
        raise CliError(f"memhil runs plot: error: sweep {sweep_id} has no completed trial in {db}")
    metric = metric or names[0]
    if metric not in names:
        raise CliError(
            f"memhil runs plot: error: sweep {sweep_id} has no metric {metric!r} "
            f"(metrics: {', '.join(names)})"
        )
    try:
        written = plot_sweep(
            table, axes, metric, path, x=x, title=f"sweep {sweep_id}: {definition.get('name')}"
        )
    except ConfigError as exc:
        raise CliError(f"memhil runs plot: error: {exc}") from None
    click.echo(str(written))
    return 0
