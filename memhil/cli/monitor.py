"""``memhil monitor``: the live web view of a run store (read-only), in a browser."""

from __future__ import annotations

import click

from memhil.cli.common import CliError, db_option, existing_db

__all__ = ["command"]


@click.command("monitor")
@db_option("SQLite run store to watch (must exist; opened read-only)")
@click.option(
    "--port", default=0, type=click.IntRange(0, 65535), help="TCP port (default 0: a free one)"
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to bind; any but loopback also needs the token for every read",
)
def command(db: str | None, port: int, host: str) -> int:
    """Watch running and finished runs live in a browser: the run list, each run's plots,
    sweeps; stop a running protocol after its unit in flight. Prints the URL (with the
    access token that every stop request needs) and serves until Ctrl-C."""
    import asyncio

    from memhil.monitor.server import is_loopback, new_token, serve

    path = existing_db(db)
    token = new_token()

    def ready(url: str) -> None:
        where = "" if is_loopback(host) else " (not loopback: keep the token private)"
        click.echo(f"memhil monitor of {path}{where}:\n  {url}\nCtrl-C stops it.", err=False)

    try:
        asyncio.run(serve(path, host, port, token, ready))
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise CliError(f"memhil monitor: error: cannot serve on {host}:{port}: {exc}") from None
    except KeyboardInterrupt:
        click.echo("memhil monitor: stopped")
    return 0
