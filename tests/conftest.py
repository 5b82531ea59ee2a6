"""Shared pytest options: ``--bench station.yaml`` enables tests that need a real bench."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench", action="store", default=None,
                     help="Station YAML of a real bench; enables tests marked 'bench'")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench"):
        return
    skip = pytest.mark.skip(reason="needs a real bench: pass --bench station.yaml")
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip)


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
