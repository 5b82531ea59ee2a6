"""Device characterization protocols and their runner.

A protocol is a plan (``memhil.protocols.plan``): a generator of operation messages, built
by name with ``build_protocol(name, params)`` and executed by ``Runner(backend)`` with a
pre-flight limit check, progress, checkpoints/resume and a guaranteed safe state.
"""

from memhil.protocols.journal import JournalFile, ListSink, MemoryJournal
from memhil.protocols.library.switching import switching_stats
from memhil.protocols.registry import ProtocolPlan, build_protocol, protocol_names
from memhil.protocols.runner import (
    ProtocolError,
    ProtocolLimitError,
    Runner,
    StopRequested,
    Summary,
)

__all__ = [
    "JournalFile",
    "ListSink",
    "MemoryJournal",
    "ProtocolPlan",
    "build_protocol",
    "protocol_names",
    "ProtocolError",
    "StopRequested",
    "ProtocolLimitError",
    "Runner",
    "Summary",
    "switching_stats",
]
