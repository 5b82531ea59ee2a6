"""Shared fixtures: ``but`` (each backend under test in turn) and ``make_backend``."""

import pytest

from tests.backends import BACKENDS, BackendUnderTest


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def but(request) -> BackendUnderTest:
    """Each backend of ``tests/backends.py`` in turn (the conformance and analog tests run
    over all of them)."""
    return request.param


@pytest.fixture
def make_backend():
    """``make_backend(but)`` builds ``but``'s backend and closes it after the test (the
    hardware backend's instruments, servers and mock lab are released)."""
    made = []

    def make(but):
        backend = but.make()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()
