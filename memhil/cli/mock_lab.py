"""``memhil mock-lab serve STATION``: serve every instrument of a station on loopback."""

from __future__ import annotations

import click

from memhil.cli.common import CliError


@click.group("mock-lab")
def command() -> None:
    """The emulated bench."""


@command.command("serve")
@click.argument("station", metavar="STATION.yaml")
@click.option(
    "--write-station",
    default=None,
    metavar="PATH",
    help="write the live station (actual addresses) to this YAML file",
)
def serve(station: str, write_station: str | None) -> int:
    """Serve every instrument of a station (with a mock: section) on loopback."""
    from memhil.core.errors import ConfigError
    from memhil.mock_hw.lab import serve as serve_lab

    try:
        serve_lab(station, ready_file=write_station)
    except ConfigError as exc:  # a bad station file, a port already in use
        raise CliError(f"memhil mock-lab serve: error: {exc}") from None
    return 0
