"""Exceptions shared by every layer: bad configuration and safety-limit violations."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range.

    The message names where the value came from (file and key) and why it is rejected,
    so a bad YAML fails at load and not in the middle of a run.
    """

    def __init__(self, key: str, reason: str, source: str | None = None):
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {reason}")


class LimitError(ValueError):
    """A request exceeds a configured safety limit; raised before any state changes."""

    def __init__(self, quantity: str, value: float, limit: float, unit: str = ""):
        self.quantity = quantity
        self.value = value
        self.limit = limit
        self.unit = unit
        u = f" {unit}" if unit else ""
        super().__init__(f"{quantity} = {value:.6g}{u} exceeds the limit {limit:.6g}{u}")
