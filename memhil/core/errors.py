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
    """A request exceeds a configured safety limit; raised before any state changes.

    The facts are attributes, so callers never parse the message: ``quantity`` (what was
    checked, e.g. "pulse amplitude |V|"), ``value`` and ``limit`` (in ``unit``), ``field``
    (the request field it came from: "amplitude", "width", "count", "compliance",
    "energy" or "v_read"; None where no single request field applies) and ``param`` (the
    protocol parameter or file key that set it, once a caller knows it; it heads the
    message).
    """

    field: str | None = None  # class defaults: subclasses that word their own message
    param: str | None = None

    def __init__(
        self,
        quantity: str,
        value: float,
        limit: float,
        unit: str = "",
        *,
        field: str | None = None,
        param: str | None = None,
    ):
        self.quantity = quantity
        self.value = value
        self.limit = limit
        self.unit = unit
        self.field = field
        self.param = param
        u = f" {unit}" if unit else ""
        what = f"{param} ({quantity})" if param else quantity
        super().__init__(f"{what} = {value:.6g}{u} exceeds the limit {limit:.6g}{u}")

    def naming(self, param: str) -> LimitError:
        """The same refusal, named by ``param`` (the file key or parameter that set it)."""
        return LimitError(
            self.quantity, self.value, self.limit, self.unit, field=self.field, param=param
        )
