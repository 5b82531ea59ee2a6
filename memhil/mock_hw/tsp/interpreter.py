"""Interpreter of the TSP Lua subset: runs parsed chunks against a table of globals, with
an instruction budget so that an endless loop sent by any client cannot hang the emulator."""

from __future__ import annotations

import math
import re
from typing import Any

from memhil.mock_hw.tsp.errors import TspError
from memhil.mock_hw.tsp.parser import parse
from memhil.mock_hw.tsp.values import Fn, LuaTable, Obj, lua_tostring, num, truthy, typename


class Break(Exception):
    """``break``: unwinds to the innermost loop."""


class Return(Exception):
    """``return``: unwinds to the function (or chunk) with its values."""

    def __init__(self, values: tuple):
        self.values = values


class LuaFunction:
    """A function defined by a script: its body runs in a fresh scope of its parameters."""

    def __init__(self, params: list[str], body: list, interp: Interpreter):
        self.params, self.body, self.interp = params, body, interp

    def __call__(self, *args):
        scope = {p: (args[k] if k < len(args) else None) for k, p in enumerate(self.params)}
        try:
            self.interp.exec_block(self.body, [scope])
        except Return as r:
            return r.values if len(r.values) != 1 else r.values[0]
        return None


class Interpreter:
    """Runs parsed chunks against ``globals`` (name -> value), at most ``max_steps``
    statements and loop iterations per ``run`` (a TSP runtime error beyond: an endless
    loop sent by any client must not hang the emulator; an assumption of the emulator,
    the real instrument runs until aborted)."""

    def __init__(self, globals_: dict[str, Any], max_steps: int = 1_000_000):
        self.globals = globals_
        self.max_steps = int(max_steps)
        self._steps = 0

    def _step(self) -> None:
        self._steps += 1
        if self._steps > self.max_steps:
            raise TspError(
                f"TSP Runtime error: instruction budget of {self.max_steps} "
                f"statements exceeded (endless loop?)",
                -286,
            )

    def run(self, src: str) -> None:
        block = parse(src)
        self._steps = 0
        try:
            self.exec_block(block, [])
        except Return:
            pass
        except Break:
            raise TspError("TSP Syntax error: no loop to break", -285) from None

    # -- statements
    def exec_block(self, block: list, scopes: list[dict]) -> None:
        scopes = scopes + [{}]
        for st in block:
            self.exec_stmt(st, scopes)

    def exec_stmt(self, st: tuple, scopes: list[dict]) -> None:
        kind = st[0]
        self._step()
        try:
            if kind == "assign":
                _, targets, exprs, _line = st
                values = self.eval_list(exprs, scopes)
                for k, tg in enumerate(targets):
                    self.assign(tg, values[k] if k < len(values) else None, scopes)
            elif kind == "local":
                _, names, exprs, _line = st
                values = self.eval_list(exprs, scopes)
                for k, n in enumerate(names):
                    scopes[-1][n] = values[k] if k < len(values) else None
            elif kind == "callstat":
                self.eval_call(st[1], scopes)
            elif kind == "for":
                _, var, e0, e1, e2, body, _line = st
                start, stop, step = (self.num(self.eval(e, scopes)) for e in (e0, e1, e2))
                if step == 0:
                    raise TspError("TSP Runtime error: 'for' step is zero")
                x = start
                try:
                    while (x <= stop) if step > 0 else (x >= stop):
                        self._step()
                        self.exec_block(body, scopes + [{var: x}])
                        x += step
                except Break:
                    pass
            elif kind == "while":
                try:
                    while truthy(self.eval(st[1], scopes)):
                        self._step()
                        self.exec_block(st[2], scopes)
                except Break:
                    pass
            elif kind == "repeat":
                try:
                    while True:
                        self._step()
                        self.exec_block(st[1], scopes)
                        if truthy(self.eval(st[2], scopes)):
                            break
                except Break:
                    pass
            elif kind == "if":
                for cond, body in st[1]:
                    if truthy(self.eval(cond, scopes)):
                        self.exec_block(body, scopes)
                        break
                else:
                    self.exec_block(st[2], scopes)
            elif kind == "do":
                self.exec_block(st[1], scopes)
            elif kind == "return":
                raise Return(tuple(self.eval_list(st[1], scopes)))
            elif kind == "break":
                raise Break()
            else:  # pragma: no cover - parser produces nothing else
                raise TspError(f"TSP Runtime error: unknown statement {kind}")
        except TspError as exc:
            line = st[-1] if isinstance(st[-1], int) else None
            if line is not None and "at line" not in str(exc):
                msg = str(exc).replace("TSP Runtime error:", f"TSP Runtime error at line {line}:")
                raise TspError(msg, exc.code) from None
            raise

    def assign(self, target: tuple, value: Any, scopes: list[dict]) -> None:
        if target[0] == "name":
            name = target[1]
            for scope in reversed(scopes):
                if name in scope:
                    scope[name] = value
                    return
            self.globals[name] = value
            return
        obj = self.eval(target[1], scopes)
        key = self.eval(target[2], scopes)
        if not hasattr(obj, "tsp_set"):
            raise TspError(f"TSP Runtime error: attempt to index a {typename(obj)} value")
        obj.tsp_set(key, value)

    # -- expressions
    def eval_list(self, exprs: list, scopes: list[dict]) -> list:
        out: list = []
        for k, e in enumerate(exprs):
            if e[0] == "call":
                v = self.eval_call(e, scopes)
                if isinstance(v, tuple):
                    if k == len(exprs) - 1:
                        out.extend(v)
                        continue
                    v = v[0] if v else None
                out.append(v)
            else:
                out.append(self.eval(e, scopes))
        return out

    def eval(self, e: tuple, scopes: list[dict]) -> Any:
        kind = e[0]
        if kind == "num" or kind == "str" or kind == "const":
            return e[1]
        if kind == "name":
            name = e[1]
            for scope in reversed(scopes):
                if name in scope:
                    return scope[name]
            return self.globals.get(name)
        if kind == "index":
            obj = self.eval(e[1], scopes)
            key = self.eval(e[2], scopes)
            if hasattr(obj, "tsp_get"):
                return obj.tsp_get(key)
            raise TspError(f"TSP Runtime error: attempt to index a {typename(obj)} value")
        if kind == "call":
            v = self.eval_call(e, scopes)
            return (v[0] if v else None) if isinstance(v, tuple) else v
        if kind == "paren":
            return self.eval(e[1], scopes)
        if kind == "un":
            v = self.eval(e[2], scopes)
            if e[1] == "not":
                return not truthy(v)
            if e[1] == "-":
                return -self.num(v)
            if isinstance(v, str):
                return float(len(v))
            if hasattr(v, "__len__"):
                return float(len(v))
            raise TspError(f"TSP Runtime error: attempt to get length of a {typename(v)} value")
        if kind == "bin":
            return self.binary(e[1], e[2], e[3], scopes)
        if kind == "table":
            return LuaTable(self.eval_list(e[1], scopes))
        if kind == "function":
            return LuaFunction(e[1], e[2], self)
        raise TspError(f"TSP Runtime error: cannot evaluate {kind}")  # pragma: no cover

    def eval_call(self, e: tuple, scopes: list[dict]) -> Any:
        fn = self.eval(e[1], scopes)
        args = self.eval_list(e[2], scopes)
        if not callable(fn):
            raise TspError(f"TSP Runtime error: attempt to call a {typename(fn)} value")
        return fn(*args)

    def binary(self, op: str, le: tuple, re_: tuple, scopes: list[dict]) -> Any:
        if op == "and":
            a = self.eval(le, scopes)
            return self.eval(re_, scopes) if truthy(a) else a
        if op == "or":
            a = self.eval(le, scopes)
            return a if truthy(a) else self.eval(re_, scopes)
        a, b = self.eval(le, scopes), self.eval(re_, scopes)
        if op == "==":
            return a == b
        if op == "~=":
            return a != b
        if op == "..":
            return lua_tostring(a) + lua_tostring(b)
        if op in ("<", ">", "<=", ">="):
            if type(a) is not type(b) and not all(isinstance(x, (int, float)) for x in (a, b)):
                raise TspError("TSP Runtime error: attempt to compare incompatible values")
            return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
        x, y = self.num(a), self.num(b)
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y if y != 0 else (math.copysign(math.inf, x) if x else math.nan)
        if op == "%":
            return x - math.floor(x / y) * y
        if op == "^":
            return x**y
        raise TspError(f"TSP Runtime error: unknown operator {op}")  # pragma: no cover

    num = staticmethod(num)


class Script(Obj):
    """A named script (``loadscript name`` ... ``endscript``): callable as ``name()`` and as
    ``name.run()``; ``name.source`` is its text."""

    def __init__(self, name: str, source: str, interp: Interpreter):
        self._fn = LuaFunction([], parse(source), interp)
        super().__init__(name, {"run": Fn(self._fn, f"{name}.run"), "source": source})

    def __call__(self, *args):
        return self._fn(*args)


def tonumber(v: Any) -> float | None:
    """Lua's ``tonumber``: nil (None) where ``v`` is not a number."""
    try:
        return num(v)
    except TspError:
        return None


def standard_library() -> dict[str, Any]:
    """The part of Lua 5.0's standard library (the 2600B's Lua) that lab scripts use:
    ``math``, ``string``, ``table``, ``type``, ``tostring``, ``tonumber`` (Ierusalimschy
    et al., Lua 5.0 Reference Manual, 2003, section 5)."""

    def unary(f):
        return Fn(lambda x: float(f(num(x))))

    math_ = Obj(
        "math",
        {
            "abs": Fn(lambda x: abs(num(x))),
            "min": Fn(lambda *x: min(num(v) for v in x)),
            "max": Fn(lambda *x: max(num(v) for v in x)),
            "floor": unary(math.floor),
            "ceil": unary(math.ceil),
            "sqrt": unary(math.sqrt),
            "exp": unary(math.exp),
            "log": unary(math.log),
            "log10": unary(math.log10),
            "sin": unary(math.sin),
            "cos": unary(math.cos),
            "tan": unary(math.tan),
            "asin": unary(math.asin),
            "acos": unary(math.acos),
            "atan": unary(math.atan),
            "rad": unary(math.radians),
            "deg": unary(math.degrees),
            "pow": Fn(lambda x, y: num(x) ** num(y)),
            "mod": Fn(lambda x, y: math.fmod(num(x), num(y))),
            "fmod": Fn(lambda x, y: math.fmod(num(x), num(y))),
            "huge": math.inf,
            "pi": math.pi,
        },
    )
    string_ = Obj(
        "string",
        {
            "format": Fn(_string_format, "string.format"),
            "len": Fn(lambda s: float(len(_string(s))), "string.len"),
            "sub": Fn(_string_sub, "string.sub"),
            "upper": Fn(lambda s: _string(s).upper(), "string.upper"),
            "lower": Fn(lambda s: _string(s).lower(), "string.lower"),
            "rep": Fn(lambda s, n: _string(s) * int(num(n)), "string.rep"),
        },
    )
    table_ = Obj(
        "table",
        {
            "insert": Fn(_table_insert, "table.insert"),
            "remove": Fn(_table_remove, "table.remove"),
            "getn": Fn(lambda t: float(len(_table(t))), "table.getn"),
            "concat": Fn(_table_concat, "table.concat"),
        },
    )
    return {
        "math": math_,
        "string": string_,
        "table": table_,
        "type": Fn(typename, "type"),
        "tostring": Fn(lua_tostring, "tostring"),
        "tonumber": Fn(tonumber, "tonumber"),
    }


def _string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return lua_tostring(v)
    raise TspError(f"TSP Runtime error: bad argument (string expected, got {typename(v)})")


def _table(v: Any) -> LuaTable:
    if not isinstance(v, LuaTable):
        raise TspError(f"TSP Runtime error: bad argument (table expected, got {typename(v)})")
    return v


def _string_format(fmt: Any, *args: Any) -> str:
    """``string.format``: C printf conversions (``%d`` takes a Lua number)."""
    spec = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?([diouxXeEfgGqsc%])")
    values = list(args)
    out: list[str] = []
    pos = 0
    for m in spec.finditer(_string(fmt)):
        out.append(_string(fmt)[pos : m.start()])
        pos = m.end()
        conv = m.group(1)
        if conv == "%":
            out.append("%")
            continue
        if not values:
            raise TspError("TSP Runtime error: bad argument to 'format' (no value)")
        v = values.pop(0)
        text = m.group(0)
        if conv in "diouxXc":
            out.append(text.replace("i", "d").replace("u", "d") % int(num(v)))
        elif conv in "eEfgG":
            out.append(text % num(v))
        else:  # s, q
            out.append(text.replace("q", "s") % lua_tostring(v))
    out.append(_string(fmt)[pos:])
    return "".join(out)


def _string_sub(s: Any, i: Any, j: Any = -1) -> str:
    text = _string(s)
    n = len(text)
    a, b = int(num(i)), int(num(j))
    a = a + n + 1 if a < 0 else max(a, 1)
    b = b + n + 1 if b < 0 else min(b, n)
    return text[a - 1 : b] if a <= b else ""


def _table_insert(t: Any, *args: Any) -> None:
    tab = _table(t)
    n = len(tab)
    if len(args) == 1:
        tab.tsp_set(float(n + 1), args[0])
        return
    pos, value = int(num(args[0])), args[1]
    for k in range(n, pos - 1, -1):
        tab.tsp_set(float(k + 1), tab.tsp_get(float(k)))
    tab.tsp_set(float(pos), value)


def _table_remove(t: Any, pos: Any = None) -> Any:
    tab = _table(t)
    n = len(tab)
    if n == 0:
        return None
    k = n if pos is None else int(num(pos))
    value = tab.tsp_get(float(k))
    for m in range(k, n):
        tab.tsp_set(float(m), tab.tsp_get(float(m + 1)))
    tab.d.pop(float(n), None)
    return value


def _table_concat(t: Any, sep: Any = "") -> str:
    tab = _table(t)
    return _string(sep).join(_string(tab.tsp_get(float(k))) for k in range(1, len(tab) + 1))
