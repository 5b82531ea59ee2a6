"""The Lua subset of Keithley's Test Script Processor (TSP) that the 2600B emulator runs:
lexer, parser and an interpreter with an instruction budget. What an instrument exposes to
scripts is built from ``Obj``/``Prop``/``Fn`` (``memhil.mock_hw.tsp.values``).

Implemented: assignments (multiple targets and values), calls, ``local``, ``function``,
numeric ``for``, ``while``, ``repeat``, ``if``/``elseif``/``else``, ``do``, ``break``,
``return`` with multiple values, table constructors, arithmetic, comparisons, ``and``/``or``/
``not``, ``..``, ``#``; ``math``, ``string`` (format, len, sub, upper, lower, rep),
``table`` (insert, remove, getn, concat), ``type``, ``tostring``, ``tonumber``. Not
implemented: generic ``for ... in``, metatables, coroutines, ``s:method()`` calls,
string patterns (``find``, ``gsub``).
"""

from memhil.mock_hw.tsp.errors import TspError
from memhil.mock_hw.tsp.interpreter import (
    Interpreter,
    LuaFunction,
    Script,
    standard_library,
    tonumber,
)
from memhil.mock_hw.tsp.parser import parse
from memhil.mock_hw.tsp.values import (
    Fn,
    LuaTable,
    Obj,
    Prop,
    fmt_number,
    lua_tostring,
    num,
    tostring,
    truthy,
    typename,
)

__all__ = [
    "Fn",
    "Interpreter",
    "LuaFunction",
    "LuaTable",
    "Obj",
    "Prop",
    "Script",
    "TspError",
    "fmt_number",
    "lua_tostring",
    "num",
    "parse",
    "standard_library",
    "tonumber",
    "tostring",
    "truthy",
    "typename",
]
