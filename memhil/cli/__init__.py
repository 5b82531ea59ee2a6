"""The ``memhil`` command: one module per subcommand group (``app`` parses and dispatches)."""

from memhil.cli.app import main

__all__ = ["main"]
