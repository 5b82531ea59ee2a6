"""``memhil fit RUN_ID...``: fit a device model to stored pulse_train run(s) and write it
as a versioned device YAML."""

from __future__ import annotations

import math

import click

from memhil.cli.common import CliError, check_run_id, db_option, existing_db


def _fixed(ctx, param, items: tuple[str, ...]) -> dict[str, float]:
    """``--fix NAME=VALUE`` (repeatable) -> {name: value}."""
    out: dict[str, float] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE (e.g. c2c_std=0.005)")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: the value {value!r} is not a number") from None
    return out


@click.command("fit")
@click.argument("run_ids", metavar="RUN_ID...", type=int, nargs=-1, required=True)
@click.option(
    "--model",
    type=click.Choice(["neurosim", "vteam", "forming", "pcm"]),
    default="neurosim",
    show_default=True,
    help="neurosim: LTP/LTD law, one pulse_train run; vteam: threshold ODE, pulse trains at "
    "several amplitudes; forming: breakdown-voltage distribution, one forming run; pcm: "
    "drift (retention runs) and read noise (read_noise runs)",
)
@db_option("SQLite run store to read (must exist)")
@click.option(
    "--out", default="fitted.yaml", show_default=True, help="versioned device YAML to write"
)
@click.option(
    "--fix",
    "fixed",
    multiple=True,
    callback=_fixed,
    metavar="NAME=VALUE",
    help="a held parameter (e.g. c2c_std=0.005; vteam: d_m, *_dtod, or a fitted "
    "name to hold it); repeatable",
)
def command(
    run_ids: tuple[int, ...], model: str, db: str | None, out: str, fixed: dict[str, float]
) -> int:
    """Fit a device model to stored run(s) and write it as a versioned device YAML."""
    from memhil.core.errors import ConfigError
    from memhil.runs.fit import fit_run
    from memhil.store import RunStore

    db = existing_db(db)
    with RunStore(db) as store:
        for rid in run_ids:
            check_run_id(store, rid, db)
    try:
        fit = fit_run(db, list(run_ids), fixed=fixed or None, model=model)
    except ConfigError as exc:  # not a pulse train, a parameter that does not exist ...
        raise CliError(f"memhil fit: error: {exc}") from None
    for name, value in fit.params.items():
        err = fit.stderr.get(name)
        click.echo(f"{name:<10} {value:.6g}" + (f" +/- {err:.2g}" if err is not None else ""))
    if math.isfinite(fit.residual_rms):
        unit = "(of ln G)" if model == "pcm" else "S"
        click.echo(f"residual rms {fit.residual_rms:.3g} {unit} over {fit.n_points} points")
    else:
        click.echo(f"{fit.n_points} cells")
    click.echo(f"{fit.to_yaml(out)} (version {fit.version})")
    return 0
