"""``memhil twin build RUN_ID... --out twin.yaml`` and ``memhil twin check MODEL RUN_ID...``:
a data-driven device model from stored pulse trains, and any device model checked against
held-out runs of the chip (docs/twin.md)."""

from __future__ import annotations

import click

from memhil.cli.common import CliError, check_run_id, db_option, existing_db


@click.group("twin")
def command() -> None:
    """Digital twins: build a device model from measured pulse trains, check models against
    held-out runs."""


def _check_ids(db: str, run_ids: tuple[int, ...]) -> None:
    from memhil.store import RunStore

    with RunStore(db) as store:
        for rid in run_ids:
            check_run_id(store, rid, db)


@command.command("build")
@click.argument("run_ids", metavar="RUN_ID...", type=int, nargs=-1, required=True)
@db_option("SQLite run store to read (must exist)")
@click.option("--out", default="twin.yaml", show_default=True, help="device YAML to write")
@click.option(
    "--knots",
    type=click.IntRange(2, 200),
    default=16,
    show_default=True,
    help="conductance knots of the step tables",
)
@click.option(
    "--read-noise",
    "read_noise_run",
    type=int,
    default=None,
    metavar="RUN_ID",
    help="a read_noise run to take the read noise from (else estimated from the trains)",
)
@click.option(
    "--stuck",
    "stuck_runs",
    type=int,
    multiple=True,
    metavar="RUN_ID",
    help="a forming or conductance_map run whose unformed / open cells the twin keeps stuck; "
    "repeatable",
)
@click.option(
    "--drift",
    "drift_runs",
    type=int,
    multiple=True,
    metavar="RUN_ID",
    help="a retention run to fit the twin's conductance drift from; repeatable",
)
def build(
    run_ids: tuple[int, ...],
    db: str | None,
    out: str,
    knots: int,
    read_noise_run: int | None,
    stuck_runs: tuple[int, ...],
    drift_runs: tuple[int, ...],
) -> int:
    """Build an empirical device model from stored pulse_train run(s)."""
    import numpy as np

    from memhil.core.errors import ConfigError
    from memhil.runs.twin import build_twin

    db = existing_db(db)
    extra = ((read_noise_run,) if read_noise_run is not None else ()) + stuck_runs + drift_runs
    _check_ids(db, run_ids + extra)
    try:
        fit = build_twin(
            db,
            list(run_ids),
            n_knots=knots,
            read_noise_run=read_noise_run,
            stuck_runs=stuck_runs,
            drift_runs=drift_runs,
        )
    except (ConfigError, ValueError) as exc:
        raise CliError(f"memhil twin build: error: {exc}") from None
    p = fit.params
    classes = ", ".join(f"{v:+g} V/{w:g} s" for v, w in zip(p["pulse_v"], p["pulse_width_s"]))
    click.echo(f"pulse classes     {classes}")
    click.echo(f"conductance       {p['g_min_s'] * 1e6:.4g} - {p['g_max_s'] * 1e6:.4g} µS")
    click.echo(
        f"read noise        {p['read_noise_rel']:.3%} of G + {p['read_noise_floor_s'] * 1e9:.3g} nS"
    )
    scales = np.array(p["device_step_scale"]) if p["device_step_scale"] else np.ones((1, 1))
    axis = np.log(p["device_axis_scale"]) if p["device_axis_scale"] else np.zeros(1)
    dtod = ", ".join(f"{d:.1%}" for d in scales.std(0))
    click.echo(
        f"device-to-device  step scale sd {dtod} (per pulse class), conductance axis sd "
        f"{axis.std():.1%}, {len(p['device_axis_scale'])} measured devices"
    )
    click.echo(f"step axis         {p['step_axis']} (what each device's own step scale scales)")
    if p.get("stuck_fraction"):
        click.echo(
            f"stuck cells       {p['stuck_fraction']:.1%} (at {len(p['stuck_g_s'])} measured "
            "conductances)"
        )
    if p.get("drift_g_levels_s"):  # one exponent per programmed level
        per_level = ", ".join(
            f"{nu:.4f} ± {fit.stderr[f'drift_nu_levels[{k}]']:.4f} at {g * 1e6:.3g} uS"
            for k, (g, nu) in enumerate(zip(p["drift_g_levels_s"], p["drift_nu_levels"]))
        )
        click.echo(
            f"drift             G (t / {p['drift_t0_s']:g} s)^-nu(level), nu {per_level}, "
            f"device-to-device {p['drift_nu_dtod']:.1%}"
        )
    elif p.get("drift_nu"):
        click.echo(
            f"drift             G (t / {p['drift_t0_s']:g} s)^-nu, nu {p['drift_nu']:.4f} "
            f"± {fit.stderr['drift_nu']:.4f}, device-to-device {p['drift_nu_dtod']:.1%}"
        )
    click.echo(f"steps used        {fit.n_points}")
    click.echo(f"{fit.to_yaml(out)} (version {fit.version})")
    return 0


@command.command("check")
@click.argument("model", metavar="MODEL")
@click.argument("run_ids", metavar="RUN_ID...", type=int, nargs=-1, required=True)
@db_option("SQLite run store to read (must exist)")
@click.option(
    "--compare",
    "others",
    multiple=True,
    metavar="MODEL",
    help="another device model (YAML or name) to rank against MODEL; repeatable",
)
@click.option("--plot", "plot_path", default=None, metavar="PNG", help="measured vs predicted")
@click.option("--seed", type=int, default=0, show_default=True)
def check(
    model: str,
    run_ids: tuple[int, ...],
    db: str | None,
    others: tuple[str, ...],
    plot_path: str | None,
    seed: int,
) -> int:
    """Replay held-out pulse_train run(s) on MODEL (a device YAML or a model name) and
    report how well it predicts them; exit 1 when MODEL is not consistent with the data."""
    from memhil.calibration.twin import KS_ALPHA, MEAN_ERROR_MAX
    from memhil.core.errors import ConfigError
    from memhil.runs.twin import check_twin, plot_twin_check

    db = existing_db(db)
    _check_ids(db, run_ids)
    try:
        checks, trace = check_twin(db, [model, *others], list(run_ids), seed=seed)
    except (ConfigError, ValueError) as exc:
        raise CliError(f"memhil twin check: error: {exc}") from None
    click.echo(f"held out: {trace.source} ({trace.cells} cells, {trace.v.size} pulses)")
    click.echo(
        f"{'model':<28} {'mean err':>9} {'spread err':>10} {'KS D':>6} {'KS p':>8} "
        f"{'LL/step':>8}  verdict"
    )
    for c in sorted(checks, key=lambda c: c.mean_error_rel + c.ks_distance):
        verdict = "consistent" if c.consistent else "inconsistent"
        click.echo(
            f"{str(c.model)[-28:]:<28} {c.mean_error_rel:>9.2%} {c.spread_error_rel:>10.2%} "
            f"{c.ks_distance:>6.3f} {c.ks_p:>8.2g} {c.log_likelihood:>8.2f}  {verdict}"
        )
    click.echo(
        "LL/step: mean log-likelihood of each held-out step given the conductance before it "
        "(nats; steps in units of the span; per class: "
        + ", ".join(f"{k.v:+g} V {k.log_likelihood:.2f}" for k in checks[0].classes)
        + f" for {str(checks[0].model)[-28:]})"
    )
    click.echo(
        f"(errors relative to the measured conductance span; consistent: every pulse class's "
        f"KS p >= {KS_ALPHA} and mean error <= {MEAN_ERROR_MAX:.0%})"
    )
    if plot_path:
        click.echo(str(plot_twin_check(checks, trace, plot_path)))
    return 0 if checks[0].consistent else 1
