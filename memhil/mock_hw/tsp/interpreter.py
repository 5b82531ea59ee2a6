"""Interpreter of the TSP Lua subset: runs parsed chunks against a table of globals, with
an instruction budget so that an endless loop sent by any client cannot hang the emulator."""

from __future__ import annotations

import math
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
    """The part of Lua's standard library TSP scripts use: ``math``, ``tostring``,
    ``tonumber``."""
    math_ = Obj(
        "math",
        {
            "abs": Fn(lambda x: abs(num(x))),
            "min": Fn(lambda *x: min(num(v) for v in x)),
            "max": Fn(lambda *x: max(num(v) for v in x)),
            "floor": Fn(lambda x: float(math.floor(num(x)))),
            "ceil": Fn(lambda x: float(math.ceil(num(x)))),
            "sqrt": Fn(lambda x: math.sqrt(num(x))),
            "huge": math.inf,
            "pi": math.pi,
        },
    )
    return {
        "math": math_,
        "tostring": Fn(lua_tostring, "tostring"),
        "tonumber": Fn(tonumber, "tonumber"),
    }
