"""The one error of the TSP subset: what the instrument queues in ``errorqueue``."""

from __future__ import annotations


class TspError(Exception):
    """A TSP error: queued in ``errorqueue`` (code, message) instead of a reply."""

    def __init__(self, message: str, code: int = -286):
        super().__init__(message)
        self.code = code
