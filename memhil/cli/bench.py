"""``memhil bench check STATION.yaml``: the bring-up checklist of a bench (docs/bench-bringup.md)."""

from __future__ import annotations

import click

from memhil.cli.common import CliError


@click.group("bench")
def command() -> None:
    """A real bench: bring-up checks."""


@command.command("check")
@click.argument("station", metavar="STATION.yaml")
@click.option(
    "--mock",
    is_flag=True,
    help="check the station's mock lab (served in this process) instead of the bench",
)
@click.option(
    "--visa-library",
    default=None,
    metavar="PATH",
    help="the VISA library of the bench (a path to a native library: command line only)",
)
def check(station: str, mock: bool, visa_library: str | None) -> int:
    """Identity, confirmed safe state, prober contact, a read of the declared test
    structure within its tolerance and a compliance clamp on it; prints a table (check,
    pass, value, tolerance). Exit 0 when every check passes, 1 when one fails."""
    from memhil.core.errors import ConfigError
    from memhil.instruments.station import load_station_config
    from memhil.runs.bench_check import check_bench, format_table

    try:
        cfg = load_station_config(station)
    except (ConfigError, OSError) as exc:
        raise CliError(f"memhil bench check: error: {exc}") from None
    if cfg.test_structure is None:
        raise CliError(
            f"memhil bench check: error: {station} declares no test_structure (a resistor "
            f"or a sacrificial device the check may drive); refusing to touch the chip"
        )
    try:
        if mock:
            from memhil.mock_hw.lab import MockLab

            backend = MockLab.open_backend(station)
        else:
            from memhil.runs.backend_config import open_backend

            backend = open_backend({"station": station}, visa_library=visa_library)
    except Exception as exc:  # noqa: BLE001 - an instrument that cannot be reached: one line
        text = " ".join(str(exc).split())
        raise CliError(
            f"memhil bench check: error: cannot open {station}: {type(exc).__name__}: {text}"
        ) from None
    try:
        results = check_bench(backend)
    finally:
        backend.close()
    click.echo(format_table(results))
    failed = [r for r in results if r.passed is False]
    for r in failed:
        click.echo(f"bench check FAILED: {r.name}: {r.value} (expected {r.tolerance})", err=True)
    if not failed:
        click.echo(f"bench check passed: {cfg.name}")
    return 1 if failed else 0
