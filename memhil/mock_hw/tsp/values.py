"""Values of the TSP Lua subset: the object model that exposes an instrument to scripts
(``Obj`` tables of constants, ``Prop`` attributes and ``Fn`` built-ins), tables built by
scripts, and Lua's conversions (truth, type names, ``tostring``, numbers as TSP prints them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from memhil.mock_hw.tsp.errors import TspError


class Prop:
    """An attribute with a getter and (optionally) a setter."""

    def __init__(self, get: Callable[[], Any], set: Callable[[Any], None] | None = None):
        self.get, self.set = get, set


class Fn:
    """A built-in function; a tuple result is a Lua multiple return."""

    def __init__(self, fn: Callable[..., Any], name: str = ""):
        self.fn, self.name = fn, name or getattr(fn, "__name__", "function")

    def __call__(self, *args):
        return self.fn(*args)


class Obj:
    """A TSP table of built-in attributes (constants, Props, Fns, sub-objects)."""

    def __init__(self, name: str, members: dict[str, Any] | None = None):
        self._name = name
        self._m: dict[str, Any] = dict(members or {})

    def add(self, **members: Any) -> Obj:
        self._m.update(members)
        return self

    def tsp_get(self, key: Any) -> Any:
        if key not in self._m:
            raise TspError(
                f"TSP Runtime error: attempt to index field '{key}' of '{self._name}' (a nil value)"
            )
        m = self._m[key]
        return m.get() if isinstance(m, Prop) else m

    def tsp_set(self, key: Any, value: Any) -> None:
        m = self._m.get(key)
        if isinstance(m, Prop) and m.set is not None:
            m.set(value)
            return
        if m is None and isinstance(key, str) and key not in self._m:
            raise TspError(f"TSP Runtime error: '{self._name}.{key}' is not an attribute")
        raise TspError(f"TSP Runtime error: '{self._name}.{key}' is read-only")

    def __repr__(self) -> str:
        return f"table: {self._name}"


class LuaTable:
    """A Lua table built by a script (``{...}`` or a global namespace)."""

    def __init__(self, items: Sequence[Any] = ()):
        self.d: dict[Any, Any] = {float(k + 1): v for k, v in enumerate(items)}

    def tsp_get(self, key: Any) -> Any:
        return self.d.get(table_key(key))

    def tsp_set(self, key: Any, value: Any) -> None:
        if value is None:
            self.d.pop(table_key(key), None)
        else:
            self.d[table_key(key)] = value

    def __len__(self) -> int:
        """``#t``: the border of the array part (1..n all set)."""
        n = 0
        while float(n + 1) in self.d:
            n += 1
        return n


def table_key(k: Any) -> Any:
    """Lua has one number type: keys 1 and 1.0 are the same slot."""
    return float(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else k


def truthy(v: Any) -> bool:
    """Lua truth: everything but nil and false."""
    return v is not None and v is not False


def typename(v: Any) -> str:
    """Lua's ``type(v)`` name, for error messages."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if callable(v):
        return "function"
    return "table"


def tostring(v: Any, precision: int = 0) -> str:
    """A value as ``print`` shows it (numbers with ``format.asciiprecision`` digits)."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return fmt_number(float(v), precision)
    if isinstance(v, str):
        return v
    if callable(v):
        return f"function: {getattr(v, 'name', 'lua')}"
    return repr(v)


def lua_tostring(v: Any) -> str:
    """Lua's own ``tostring`` (``%.14g`` numbers), used by ``..`` and ``tostring``."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{float(v):.14g}"
    return tostring(v)


def fmt_number(x: float, precision: int) -> str:
    """TSP ASCII numbers: ``format.asciiprecision`` significant digits in exponent form;
    precision 0 (the instrument default, "automatic") prints 6 digits as the 2600B does."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    digits = precision if precision > 0 else 6
    return f"{x:.{digits - 1}e}"


def num(v: Any) -> float:
    """A TSP value as a number (Lua coerces numeric strings); anything else is a TSP error."""
    if isinstance(v, bool) or v is None:
        raise TspError(f"TSP Runtime error: attempt to perform arithmetic on a {typename(v)} value")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise TspError(f"TSP Runtime error: attempt to perform arithmetic on a {typename(v)} value")
