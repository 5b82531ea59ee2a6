"""``memhil models``: the device models selectable by name."""

from __future__ import annotations

import click


@click.command("models")
def command() -> int:
    """List the device models selectable by name."""
    from memhil.devices import device_model_names

    click.echo("\n".join(device_model_names()))
    return 0
