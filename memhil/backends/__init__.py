"""The Backend contract and its implementations (simulator now; hardware over a Station later)."""

from memhil.backends.base import (
    Backend,
    Capabilities,
    Clock,
    InputEncoding,
    Limits,
    Reading,
    Site,
)
from memhil.backends.clock import VirtualClock, WallClock

__all__ = [
    "Backend",
    "Capabilities",
    "Clock",
    "InputEncoding",
    "Limits",
    "Reading",
    "Site",
    "VirtualClock",
    "WallClock",
]
