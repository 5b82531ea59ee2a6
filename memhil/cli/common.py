"""What every subcommand shares: the one-line error (exit 2), the ``--db`` option and the
check that a database to read exists. Light on purpose: nothing here imports torch,
QCoDeS or matplotlib, so ``memhil --help`` and every mistake answer at once."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_DB = "memhil.db"

#: ``memhil run`` exit status when an instrument's safe state could not be confirmed.
EXIT_UNSAFE = 3
#: A mistake on the command line or in a file, found before any instrument command.
EXIT_USAGE = 2


class CliError(click.ClickException):
    """A user's mistake: printed as one line on stderr, exit status 2, no trace."""

    exit_code = EXIT_USAGE


def db_option(help_text: str = "SQLite run store"):
    """``--db PATH`` (after the subcommand; ``runs`` also takes it before its own)."""
    return click.option(
        "--db", "db", default=None, metavar="PATH", help=f"{help_text} (default {DEFAULT_DB})"
    )


def existing_db(db: str | None) -> str:
    """``db`` (or the default) when it exists: a command that reads runs never creates an
    empty database from a misspelled name."""
    path = db or DEFAULT_DB
    if not Path(path).is_file():
        raise CliError(
            f"no run store {path!r} (a read command never creates one; "
            f"`memhil run` writes runs, `--db PATH` names another store)"
        )
    return path


def check_run_id(store, run_id: int, db: str) -> None:
    """Refuse a run id the store does not hold, naming the ids it does."""
    ids = store.run_ids()
    if run_id not in ids:
        have = f"runs {ids[0]}-{ids[-1]}" if ids else "no runs"
        raise CliError(f"{db} has no run {run_id} ({have}; see memhil runs list --db {db})")
