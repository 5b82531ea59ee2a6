"""Fixtures for the Station and guard tests: a fresh recording fake per capability (the
classes are in ``tests/instruments/fakes.py`` for tests that subclass them or register
them as instrument types)."""

from __future__ import annotations

import pytest

from tests.instruments.fakes import FakeArray, FakeMatrix, FakeProber, FakeSMU


@pytest.fixture
def fake_smu() -> FakeSMU:
    """One SMU channel that accepts anything and records every call."""
    return FakeSMU()


@pytest.fixture
def fake_matrix() -> FakeMatrix:
    """A switch matrix that records every relay operation."""
    return FakeMatrix()


@pytest.fixture
def fake_prober() -> FakeProber:
    """A prober that would happily move in contact (the guard must refuse)."""
    return FakeProber()


@pytest.fixture
def fake_array() -> FakeArray:
    """A 4 x 3 array board that records every read and pulse."""
    return FakeArray(rows=4, cols=3)
