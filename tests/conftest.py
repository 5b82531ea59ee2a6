"""Shared fixtures."""

import pytest


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
