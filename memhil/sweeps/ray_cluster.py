"""The Ray instance a sweep runs on: a local one started and stopped here (no dashboard,
the CPUs of this machine, one resource per station), or an existing cluster joined at an
address, checked to offer what the trials need before any is submitted.

On a cluster, a station is a custom resource of capacity 1 offered by the node wired to
it (``ray start --address=HEAD:6379 --resources='{"station:NAME": 1}'``, docs/sweeps.md);
a station-bound trial asks for it, so Ray runs one trial at a time on that station and
the simulator trials anywhere in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from memhil.core.errors import ConfigError

__all__ = ["RaySession", "ray_session"]


class RaySession:
    """Where the trials run, in words, and the resources the instance offers."""

    def __init__(self, where: str, resources: dict[str, float]):
        self.where = where
        self.resources = resources


def _check(resources: dict[str, float], needs: dict[str, float], source: str | None) -> None:
    """Refuse a sweep whose trials ask for what the instance never offers (Ray would hold
    such a task pending forever)."""
    for name, amount in sorted(needs.items()):
        have = resources.get(name, 0.0)
        if have >= amount:
            continue
        if name.startswith("station:"):
            hint = (
                f"start the Ray node wired to that station with "
                f"ray start --address=HEAD --resources='{{\"{name}\": 1}}'"
            )
        else:
            hint = f"a trial asks for {amount:g} {name}"
        raise ConfigError(
            "resources",
            f"the Ray instance offers {have:g} {name}, {amount:g} needed: {hint}",
            source,
        )


def _check_reachable(address: str) -> None:
    """Refuse at once a ``HOST:PORT`` nobody answers on (Ray itself retries for minutes);
    ``auto`` and ``ray://`` client addresses are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except OSError as exc:
        raise ConfigError(
            "--address",
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start its head "
            f"with `ray start --head --port={port}` (docs/sweeps.md)",
        ) from None


@contextlib.contextmanager
def ray_session(
    *,
    address: str | None,
    num_cpus: int | None,
    stations: set[str],
    needs: dict[str, float],
    source: str | None = None,
) -> Iterator[RaySession]:
    """Ray for the duration of the block. ``address``: join that cluster (left running);
    else a local instance with ``num_cpus`` (default: this machine's) and each station
    of ``stations`` as a resource of capacity 1, shut down after the block. A Ray already
    initialised in this process (a test's, a notebook's) is used as it is and left
    running. ``needs``: the most of each resource one trial asks for."""
    import ray

    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if ray.is_initialized():
        res = ray.cluster_resources()
        _check(res, needs, source)
        yield RaySession("the Ray instance of this process", res)
        return
    if address is not None:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                "--address", f"cannot join the Ray cluster at {address}: {exc}"
            ) from None
        where = f"the Ray cluster at {address}"
    else:
        cpus = int(num_cpus or os.cpu_count() or 1)
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            resources={s: 1.0 for s in sorted(stations)},
            **quiet,
        )
        where = f"a local Ray instance ({cpus} CPUs)"
    try:
        res = ray.cluster_resources()
        _check(res, needs, source)
        yield RaySession(where, res)
    finally:
        ray.shutdown()
