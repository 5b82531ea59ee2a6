"""The ``memhil`` command: the click group, the subcommands (one module each) and ``main``,
which turns every mistake into one line on stderr and exit status 2."""

from __future__ import annotations

import sys

import click

from memhil.cli.common import EXIT_UNSAFE, EXIT_USAGE, CliError


def _version() -> str:
    from memhil import __version__

    return __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="memhil")
def cli() -> None:
    """memhil: memristive hardware-in-the-loop. Try `memhil demo`, `memhil protocols`,
    then `memhil run FILE --sim`."""


def _register() -> None:
    from memhil.cli import (
        bench,
        demo,
        fit,
        mock_lab,
        models,
        monitor,
        protocols,
        run,
        runs,
        showcase,
        sweep,
        twin,
    )

    for cmd in (
        demo.command,
        showcase.command,
        run.command,
        sweep.command,
        fit.command,
        runs.command,
        protocols.command,
        models.command,
        mock_lab.command,
        monitor.command,
        twin.command,
        bench.command,
    ):
        cli.add_command(cmd)


_register()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the ``memhil`` command on ``argv`` (default ``sys.argv[1:]``); returns the exit
    status: 0 done, 2 a mistake (one line on stderr, no trace), ``EXIT_UNSAFE`` (3) an
    instrument's safe state not confirmed, 1 a failure during a run, 130 Ctrl-C."""
    from memhil.core.errors import ConfigError, LimitError

    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        rv = cli.main(args=args, prog_name="memhil", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:  # a wrong option, a missing value, a bad choice
        where = exc.ctx.command_path if exc.ctx else "memhil"
        hint = f" (see {where} --help)" if exc.ctx else ""
        click.echo(f"{where}: error: {_one_line(exc.format_message())}{hint}", err=True)
        return EXIT_USAGE
    except CliError as exc:
        msg = _one_line(exc.format_message())
        click.echo(msg if msg.startswith("memhil") else f"memhil: error: {msg}", err=True)
        return EXIT_USAGE
    except (ConfigError, LimitError) as exc:  # a file or a parameter, before any run
        click.echo(f"memhil: error: {_one_line(str(exc))}", err=True)
        return EXIT_USAGE
    except click.Abort:
        click.echo("memhil: interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


__all__ = ["EXIT_UNSAFE", "cli", "main"]

if __name__ == "__main__":
    sys.exit(main())
