"""``memhil protocols [NAME]``: the registered protocols, their parameters with units and
defaults (from the registry's parameter dataclasses), and a protocol file to start from."""

from __future__ import annotations

import dataclasses

import click

from memhil.cli.common import CliError


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "all cells" if f.name == "cells" and f.default is None else repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


@click.command("protocols")
@click.argument("name", required=False)
def command(name: str | None) -> int:
    """List the protocols (name, description, parameters: unit, default); with NAME, that
    protocol alone and an example file."""
    from memhil.protocols.registry import protocol_specs
    from memhil.store.columns import unit_of

    specs = protocol_specs()
    if name is not None:
        if name not in specs:
            raise CliError(
                f"memhil protocols: error: unknown protocol {name!r} "
                f"(known: {', '.join(sorted(specs))})"
            )
        specs = {name: specs[name]}
    for i, (pname, spec) in enumerate(sorted(specs.items())):
        if i:
            click.echo("")
        click.echo(f"{pname}: {spec.description}")
        for f in dataclasses.fields(spec.params_cls):
            unit = unit_of(f.name)
            click.echo(
                f"  {f.name:<20}{unit or '-':<4}{_default(f):<16}"
                f"{str(f.type).replace('typing.', '')}"
            )
    if name is not None:
        click.echo(
            f"\nexample file (memhil run FILE --sim):\n  protocol: {name}\n"
            f"  params: {{}}        # the defaults above\n  backend: sim"
        )
    else:
        click.echo(
            "\nA protocol file: protocol: NAME, params: {...}, backend: sim | "
            "{mock_lab: station.yaml} | {station: station.yaml}; memhil protocols NAME "
            "for one."
        )
    return 0
