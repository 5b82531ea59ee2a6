"""Keithley 2600B (TSP) emulator over the mock lab's chip: the subset the QCoDeS driver
(``qcodes.instrument_drivers.Keithley.Keithley2636B``) sends, answered from device physics.

Served by ``LineServer(emu.handle, terminator="\\n")``; the driver connects unmodified
through pyvisa-py. Every line is a TSP chunk run by a small Lua-subset interpreter
(assignments, calls, numeric ``for``/``while``/``if``, arithmetic, comparisons, ``..``,
multiple return values), so the driver's queries (``print(...)``), settings
(``smua.source.levelv=0.5``) and Lua programs (``loadandrunscript`` ... ``endscript``: the
fast sweep, the time trace, memhil's pulse scripts) all go through one path.

Implemented TSP subset (anything else is a TSP error: queued in ``errorqueue``, no reply,
as on the instrument):

* IEEE-488: ``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``, ``*WAI``, ``*TRG``, ``*ESR?``, ``*STB?``
* chunks: ``loadandrunscript`` [name] ... ``endscript``; ``loadscript`` name ... ``endscript``
  then ``name()`` / ``name.run()``; ``abort`` (nothing runs between commands here: a
  no-op). A script being loaded belongs to its connection (see ``session_closed``).
* globals: ``print``, ``printbuffer``, ``printnumber``, ``delay``, ``waitcomplete``,
  ``reset``, ``tostring``, ``tonumber``, ``math.abs/min/max/floor/ceil/sqrt``,
  ``timer.reset()``/``timer.measure.t()`` (virtual time), ``beeper.beep``, ``opc``
* ``localnode.model/linefreq/serialno/revision/description/autolinefreq/prompts/showerrors``
* ``format.data`` (ASCII / REAL32=SREAL / REAL64=REAL), ``format.byteorder``
  (NORMAL=BIGENDIAN=NETWORK / SWAPPED=LITTLEENDIAN), ``format.asciiprecision``
* ``errorqueue.count/next()/clear()``, ``status.measurement.instrument.smuX.condition``
  (bit 0 = voltage limit, bit 1 = current limit, as the QCoDeS driver parses it),
  ``status.reset()``, ``display.clear/settext/screen/sendkey``
* per channel ``smuX``: ``reset()``, ``abort()``, ``sense``, constants (``OUTPUT_DCVOLTS`` ...);
  ``source.func/levelv/leveli/limitv/limiti/output/rangev/rangei/autorangev/autorangei/
  delay/offmode/compliance``; ``measure.nplc/count/interval/rangev/rangei/autorangev/
  autorangei/autozero/delay`` and ``measure.i/v/r/p/iv([buffer])``; ``nvbuffer1/2``:
  ``clear()``, ``n``, ``appendmode``, ``collectsourcevalues``, ``collecttimestamps``,
  ``readings``, ``statuses``, ``timestamps``, ``sourcevalues`` (1-based indexing).

Physics. The source level goes to the channel's bench terminal (``"<name>.<smuX>"``). A
measurement with the output on holds the present drive for the integration time
``nplc / localnode.linefreq`` on the virtual clock (``bench.hold``: the cell switches),
then reads ``bench.current``. Compliance: in voltage mode, when ``|I| > limiti`` the
terminal voltage is lowered (scaled by ``limiti / |I|`` and re-solved, a few iterations) so
that the chip never sees more than the limit, the reading is clamped at ``limiti`` and the
current-limit bit is set; in current mode the voltage is solved for the programmed current
and clamped at ``limitv`` (voltage-limit bit). The operating point is re-solved whenever
the level, limit or output changes and before and after every integration, so the drive
held on the chip is always the compliant one. ``measure.count > 1`` takes readings
``measure.interval`` apart on the virtual clock (the time trace); ``delay(t)`` holds the
drive for ``t``. Nothing here sleeps in wall time.

Readings stored in a buffer carry a status word: bit 0x40 marks a reading taken in
compliance (the 2600B ``bufferVar.statuses`` compliance bit, as recalled from the
reference manual; check against the manual before relying on it on a bench).
Binary ``printbuffer`` output is ``#0`` + IEEE-754 values + newline; REAL32 values are
rounded towards zero so that a clamped reading never exceeds the limit after rounding.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.server import TRANSCRIPT_LINES, current_session

log = logging.getLogger(__name__)

#: bufferVar.statuses bit for a reading taken in compliance (see the module docstring).
BUFFER_STATUS_COMPLIANCE = 0x40
#: status.measurement.instrument.smuX.condition bits (as the QCoDeS driver decodes them).
CONDITION_VOLTAGE_LIMIT = 0x01
CONDITION_CURRENT_LIMIT = 0x02
#: what the 2600 returns for an overflowed / undefined reading (e.g. R at 0 A).
OVERFLOW = 9.91e37

_COMPLIANCE_ITERATIONS = 12
_COMPLIANCE_RTOL = 1e-6


class TspError(Exception):
    """A TSP error: queued in ``errorqueue`` (code, message) instead of a reply."""

    def __init__(self, message: str, code: int = -286):
        super().__init__(message)
        self.code = code


# ============================================================================================
# A Lua-subset interpreter
# ============================================================================================

_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>--[^\n]*)
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\.\.|==|~=|<=|>=|[-+*/%^#<>=(){}\[\];:,.])
""", re.VERBOSE)

_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if",
             "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until",
             "while"}

_BINARY_PRIORITY = {  # (left, right) binding power, Lua 5.x
    "or": (1, 1), "and": (2, 2),
    "<": (3, 3), ">": (3, 3), "<=": (3, 3), ">=": (3, 3), "~=": (3, 3), "==": (3, 3),
    "..": (5, 4), "+": (6, 6), "-": (6, 6), "*": (7, 7), "/": (7, 7), "%": (7, 7),
    "^": (10, 9),
}
_UNARY_PRIORITY = 8


@dataclass
class _Tok:
    kind: str
    value: Any
    line: int


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if m is None:
            raise TspError(f"TSP Syntax error at line {line}: unexpected symbol near "
                           f"{src[pos:pos + 10]!r}", -285)
        kind, text = m.lastgroup, m.group()
        if kind == "num":
            toks.append(_Tok("num", float(int(text, 16)) if text[:2].lower() == "0x"
                             else float(text), line))
        elif kind == "str":
            toks.append(_Tok("str", bytes(text[1:-1], "utf-8").decode("unicode_escape"), line))
        elif kind == "name":
            toks.append(_Tok("kw" if text in _KEYWORDS else "name", text, line))
        elif kind == "op":
            toks.append(_Tok("op", text, line))
        line += text.count("\n")
        pos = m.end()
    toks.append(_Tok("eof", None, line))
    return toks


class _Parser:
    """Recursive descent over the token list; statements and expressions as tuples."""

    def __init__(self, src: str):
        self.toks = _tokenize(src)
        self.i = 0

    # -- helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def check(self, kind: str, value: Any = None) -> bool:
        t = self.peek()
        return t.kind == kind and (value is None or t.value == value)

    def accept(self, kind: str, value: Any = None) -> _Tok | None:
        if self.check(kind, value):
            return self.next()
        return None

    def expect(self, kind: str, value: Any = None) -> _Tok:
        t = self.accept(kind, value)
        if t is None:
            got = self.peek()
            raise TspError(f"TSP Syntax error at line {got.line}: '{value or kind}' expected "
                           f"near '{got.value if got.value is not None else '<eof>'}'", -285)
        return t

    # -- statements
    def chunk(self) -> list:
        block = self.block()
        if not self.check("eof"):
            t = self.peek()
            raise TspError(f"TSP Syntax error at line {t.line}: unexpected '{t.value}'", -285)
        return block

    def block(self) -> list:
        stmts = []
        while not (self.check("eof") or self.check("kw", "end") or self.check("kw", "else")
                   or self.check("kw", "elseif") or self.check("kw", "until")):
            if self.accept("op", ";"):
                continue
            if self.check("kw", "return"):
                line = self.next().line
                exprs = [] if (self.check("eof") or self.check("kw", "end")
                               or self.check("op", ";")) else self.exprlist()
                stmts.append(("return", exprs, line))
                self.accept("op", ";")
                break
            if self.check("kw", "break"):
                stmts.append(("break", self.next().line))
                continue
            stmts.append(self.statement())
        return stmts

    def statement(self) -> tuple:
        t = self.peek()
        line = t.line
        if self.accept("kw", "for"):
            var = self.expect("name").value
            self.expect("op", "=")
            start = self.expr()
            self.expect("op", ",")
            stop = self.expr()
            step = self.expr() if self.accept("op", ",") else ("num", 1.0)
            self.expect("kw", "do")
            body = self.block()
            self.expect("kw", "end")
            return ("for", var, start, stop, step, body, line)
        if self.accept("kw", "while"):
            cond = self.expr()
            self.expect("kw", "do")
            body = self.block()
            self.expect("kw", "end")
            return ("while", cond, body, line)
        if self.accept("kw", "repeat"):
            body = self.block()
            self.expect("kw", "until")
            return ("repeat", body, self.expr(), line)
        if self.accept("kw", "if"):
            arms = []
            cond = self.expr()
            self.expect("kw", "then")
            arms.append((cond, self.block()))
            other: list = []
            while True:
                if self.accept("kw", "elseif"):
                    cond = self.expr()
                    self.expect("kw", "then")
                    arms.append((cond, self.block()))
                    continue
                if self.accept("kw", "else"):
                    other = self.block()
                self.expect("kw", "end")
                break
            return ("if", arms, other, line)
        if self.accept("kw", "do"):
            body = self.block()
            self.expect("kw", "end")
            return ("do", body, line)
        if self.accept("kw", "function"):
            name = [self.expect("name").value]
            while self.accept("op", "."):
                name.append(self.expect("name").value)
            params, body = self.funcbody()
            target: tuple = ("name", name[0])
            for key in name[1:]:
                target = ("index", target, ("str", key))
            return ("assign", [target], [("function", params, body)], line)
        if self.accept("kw", "local"):
            if self.accept("kw", "function"):
                name = self.expect("name").value
                params, body = self.funcbody()
                return ("local", [name], [("function", params, body)], line)
            names = [self.expect("name").value]
            while self.accept("op", ","):
                names.append(self.expect("name").value)
            exprs = self.exprlist() if self.accept("op", "=") else []
            return ("local", names, exprs, line)
        # assignment or call
        target = self.suffixedexp()
        if self.check("op", "=") or self.check("op", ","):
            targets = [target]
            while self.accept("op", ","):
                targets.append(self.suffixedexp())
            self.expect("op", "=")
            for tg in targets:
                if tg[0] not in ("name", "index"):
                    raise TspError(f"TSP Syntax error at line {line}: cannot assign", -285)
            return ("assign", targets, self.exprlist(), line)
        if target[0] != "call":
            raise TspError(f"TSP Syntax error at line {line}: '=' expected", -285)
        return ("callstat", target, line)

    def funcbody(self) -> tuple[list[str], list]:
        self.expect("op", "(")
        params = []
        if not self.check("op", ")"):
            params.append(self.expect("name").value)
            while self.accept("op", ","):
                params.append(self.expect("name").value)
        self.expect("op", ")")
        body = self.block()
        self.expect("kw", "end")
        return params, body

    # -- expressions
    def exprlist(self) -> list:
        exprs = [self.expr()]
        while self.accept("op", ","):
            exprs.append(self.expr())
        return exprs

    def expr(self, limit: int = 0) -> tuple:
        t = self.peek()
        if (t.kind == "kw" and t.value == "not") or (t.kind == "op" and t.value in ("-", "#")):
            self.next()
            left: tuple = ("un", t.value, self.expr(_UNARY_PRIORITY))
        else:
            left = self.simpleexp()
        while True:
            t = self.peek()
            op = t.value if t.kind in ("op", "kw") else None
            if op not in _BINARY_PRIORITY or _BINARY_PRIORITY[op][0] <= limit:
                return left
            self.next()
            right = self.expr(_BINARY_PRIORITY[op][1])
            left = ("bin", op, left, right)

    def simpleexp(self) -> tuple:
        t = self.peek()
        if t.kind == "num":
            self.next()
            return ("num", t.value)
        if t.kind == "str":
            self.next()
            return ("str", t.value)
        if t.kind == "kw":
            if t.value in ("nil", "true", "false"):
                self.next()
                return ("const", {"nil": None, "true": True, "false": False}[t.value])
            if t.value == "function":
                self.next()
                params, body = self.funcbody()
                return ("function", params, body)
        if t.kind == "op" and t.value == "{":
            return self.table()
        return self.suffixedexp()

    def table(self) -> tuple:
        self.expect("op", "{")
        items = []
        while not self.check("op", "}"):
            items.append(self.expr())
            if not (self.accept("op", ",") or self.accept("op", ";")):
                break
        self.expect("op", "}")
        return ("table", items)

    def primaryexp(self) -> tuple:
        t = self.peek()
        if t.kind == "name":
            self.next()
            return ("name", t.value)
        if self.accept("op", "("):
            e = self.expr()
            self.expect("op", ")")
            return ("paren", e)
        raise TspError(f"TSP Syntax error at line {t.line}: unexpected symbol near "
                       f"'{t.value if t.value is not None else '<eof>'}'", -285)

    def suffixedexp(self) -> tuple:
        e = self.primaryexp()
        while True:
            if self.accept("op", "."):
                e = ("index", e, ("str", self.expect("name").value))
            elif self.accept("op", "["):
                key = self.expr()
                self.expect("op", "]")
                e = ("index", e, key)
            elif self.check("op", "("):
                line = self.next().line
                args = [] if self.check("op", ")") else self.exprlist()
                self.expect("op", ")")
                e = ("call", e, args, line)
            elif self.check("str"):
                e = ("call", e, [("str", self.next().value)], self.peek().line)
            else:
                return e


class _Break(Exception):
    pass


class _Return(Exception):
    def __init__(self, values: tuple):
        self.values = values


# -- TSP object model -----------------------------------------------------------------------

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
            raise TspError(f"TSP Runtime error: attempt to index field '{key}' of "
                           f"'{self._name}' (a nil value)")
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


class _Table:
    """A Lua table built by a script (``{...}`` or a global namespace)."""

    def __init__(self, items: Sequence[Any] = ()):
        self.d: dict[Any, Any] = {float(k + 1): v for k, v in enumerate(items)}

    def tsp_get(self, key: Any) -> Any:
        return self.d.get(_key(key))

    def tsp_set(self, key: Any, value: Any) -> None:
        self.d[_key(key)] = value


def _key(k: Any) -> Any:
    return float(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else k


class _LuaFunction:
    def __init__(self, params: list[str], body: list, interp: Interpreter):
        self.params, self.body, self.interp = params, body, interp

    def __call__(self, *args):
        scope = {p: (args[k] if k < len(args) else None) for k, p in enumerate(self.params)}
        try:
            self.interp.exec_block(self.body, [scope])
        except _Return as r:
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
            raise TspError(f"TSP Runtime error: instruction budget of {self.max_steps} "
                           f"statements exceeded (endless loop?)", -286)

    def run(self, src: str) -> None:
        block = _Parser(src).chunk()
        self._steps = 0
        try:
            self.exec_block(block, [])
        except _Return:
            pass
        except _Break:
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
                except _Break:
                    pass
            elif kind == "while":
                try:
                    while _truthy(self.eval(st[1], scopes)):
                        self._step()
                        self.exec_block(st[2], scopes)
                except _Break:
                    pass
            elif kind == "repeat":
                try:
                    while True:
                        self._step()
                        self.exec_block(st[1], scopes)
                        if _truthy(self.eval(st[2], scopes)):
                            break
                except _Break:
                    pass
            elif kind == "if":
                for cond, body in st[1]:
                    if _truthy(self.eval(cond, scopes)):
                        self.exec_block(body, scopes)
                        break
                else:
                    self.exec_block(st[2], scopes)
            elif kind == "do":
                self.exec_block(st[1], scopes)
            elif kind == "return":
                raise _Return(tuple(self.eval_list(st[1], scopes)))
            elif kind == "break":
                raise _Break()
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
            raise TspError(f"TSP Runtime error: attempt to index a {_typename(obj)} value")
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
            raise TspError(f"TSP Runtime error: attempt to index a {_typename(obj)} value")
        if kind == "call":
            v = self.eval_call(e, scopes)
            return (v[0] if v else None) if isinstance(v, tuple) else v
        if kind == "paren":
            return self.eval(e[1], scopes)
        if kind == "un":
            v = self.eval(e[2], scopes)
            if e[1] == "not":
                return not _truthy(v)
            if e[1] == "-":
                return -self.num(v)
            if isinstance(v, str):
                return float(len(v))
            if hasattr(v, "__len__"):
                return float(len(v))
            raise TspError(f"TSP Runtime error: attempt to get length of a {_typename(v)} value")
        if kind == "bin":
            return self.binary(e[1], e[2], e[3], scopes)
        if kind == "table":
            return _Table(self.eval_list(e[1], scopes))
        if kind == "function":
            return _LuaFunction(e[1], e[2], self)
        raise TspError(f"TSP Runtime error: cannot evaluate {kind}")  # pragma: no cover

    def eval_call(self, e: tuple, scopes: list[dict]) -> Any:
        fn = self.eval(e[1], scopes)
        args = self.eval_list(e[2], scopes)
        if not callable(fn):
            raise TspError(f"TSP Runtime error: attempt to call a {_typename(fn)} value")
        return fn(*args)

    def binary(self, op: str, le: tuple, re_: tuple, scopes: list[dict]) -> Any:
        if op == "and":
            a = self.eval(le, scopes)
            return self.eval(re_, scopes) if _truthy(a) else a
        if op == "or":
            a = self.eval(le, scopes)
            return a if _truthy(a) else self.eval(re_, scopes)
        a, b = self.eval(le, scopes), self.eval(re_, scopes)
        if op == "==":
            return a == b
        if op == "~=":
            return a != b
        if op == "..":
            return _lua_tostring(a) + _lua_tostring(b)
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
            return x ** y
        raise TspError(f"TSP Runtime error: unknown operator {op}")  # pragma: no cover

    @staticmethod
    def num(v: Any) -> float:
        if isinstance(v, bool) or v is None:
            raise TspError(f"TSP Runtime error: attempt to perform arithmetic on a "
                           f"{_typename(v)} value")
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise TspError(f"TSP Runtime error: attempt to perform arithmetic on a "
                       f"{_typename(v)} value")


def _truthy(v: Any) -> bool:
    return v is not None and v is not False


def _typename(v: Any) -> str:
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


def _tostring(v: Any, precision: int = 0) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _fmt_number(float(v), precision)
    if isinstance(v, str):
        return v
    if callable(v):
        return f"function: {getattr(v, 'name', 'lua')}"
    return repr(v)


def _lua_tostring(v: Any) -> str:
    """Lua's own ``tostring`` (``%.14g`` numbers), used by ``..`` and ``tostring``."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{float(v):.14g}"
    return _tostring(v)


def _fmt_number(x: float, precision: int) -> str:
    """TSP ASCII numbers: ``format.asciiprecision`` significant digits in exponent form;
    precision 0 (the instrument default, "automatic") prints 6 digits as the 2600B does."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    digits = precision if precision > 0 else 6
    return f"{x:.{digits - 1}e}"



# ============================================================================================
# Source physics shared by the SMU emulators
# ============================================================================================

def solve_voltage_source(current_at: Callable[[float], float], level: float,
                         limit: float) -> tuple[float, float, int]:
    """Operating point of a voltage source at ``level`` (V) with current limit ``limit`` (A)
    into a load whose current at a terminal voltage is ``current_at(v)``.

    Returns (terminal voltage, reported current, condition bits). In compliance the source
    lowers its voltage until ``|I| = limit`` (scale by ``limit / |I|`` and re-solve the
    network, a few iterations: exact for a linear load, converging for the sinh-like and
    sneak-path loads of the chip) and the reported current is clamped at the limit, so
    the current returned never exceeds it.
    """
    v = level
    i = current_at(v)
    if abs(i) <= limit:
        return v, i, 0
    for _ in range(_COMPLIANCE_ITERATIONS):
        if i == 0.0:
            break
        v = v * limit / abs(i)
        i = current_at(v)
        if abs(abs(i) - limit) <= _COMPLIANCE_RTOL * limit:
            break
    return v, math.copysign(limit, i if i != 0 else level), CONDITION_CURRENT_LIMIT


def solve_current_source(current_at: Callable[[float], float], level: float,
                         limit: float) -> tuple[float, float, int]:
    """Operating point of a current source at ``level`` (A) with voltage limit ``limit``
    (V): the voltage is solved for the current (Illinois regula falsi on [0, ±limit],
    |I| monotonic in |V|); when even the limit cannot push the current the voltage sits at
    the limit and the voltage-limit bit is set. Returns (voltage, current, condition)."""
    if level == 0.0:
        return 0.0, current_at(0.0), 0
    sign = 1.0 if level > 0 else -1.0
    v_hi = sign * limit
    i_hi = current_at(v_hi)
    if abs(i_hi) < abs(level) or i_hi * sign <= 0:
        return v_hi, i_hi, CONDITION_VOLTAGE_LIMIT
    a, fa = 0.0, current_at(0.0) - level
    b, fb = v_hi, i_hi - level
    side = 0
    v, fv = b, fb
    for _ in range(80):
        v = (a * fb - b * fa) / (fb - fa) if fb != fa else 0.5 * (a + b)
        fv = current_at(v) - level
        if abs(fv) <= 1e-9 * abs(level):
            break
        if fv * fb > 0:
            b, fb = v, fv
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = v, fv
            if side == 1:
                fb *= 0.5
            side = 1
    return v, fv + level, 0


# ============================================================================================
# The instrument
# ============================================================================================

@dataclass
class _Buffer:
    """A dedicated reading buffer (``smuX.nvbuffer1``)."""

    readings: list[float] = field(default_factory=list)
    statuses: list[float] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    sourcevalues: list[float] = field(default_factory=list)
    appendmode: int = 0
    collectsourcevalues: int = 0
    collecttimestamps: int = 1
    basetimestamp: float = 0.0
    capacity: int = 60000

    def clear(self, now: float) -> None:
        for lst in (self.readings, self.statuses, self.timestamps, self.sourcevalues):
            lst.clear()
        self.basetimestamp = now

    def append(self, reading: float, status: int, t: float, source: float) -> None:
        if len(self.readings) >= self.capacity:
            raise TspError("TSP Runtime error: reading buffer full", -1003)
        self.readings.append(reading)
        self.statuses.append(float(status))
        self.timestamps.append(t - self.basetimestamp)
        self.sourcevalues.append(source)


class _Field:
    """``bufferVar.readings`` etc.: a 1-based, read-only view that printbuffer accepts."""

    def __init__(self, buf: _Buffer, name: str):
        self.buf, self.name = buf, name

    @property
    def values(self) -> list[float]:
        if self.name == "sourcevalues" and not self.buf.collectsourcevalues:
            raise TspError("TSP Runtime error: source values were not collected "
                           "(collectsourcevalues = 0)")
        if self.name == "timestamps" and not self.buf.collecttimestamps:
            raise TspError("TSP Runtime error: timestamps were not collected")
        return getattr(self.buf, self.name)

    def __len__(self) -> int:
        return len(getattr(self.buf, self.name))

    def tsp_get(self, key: Any) -> Any:
        vals = self.values
        if isinstance(key, (int, float)) and not isinstance(key, bool) and key == int(key):
            k = int(key)
            if 1 <= k <= len(vals):
                return vals[k - 1]
            return None
        raise TspError(f"TSP Runtime error: invalid buffer index {key!r}")

    def tsp_set(self, key: Any, value: Any) -> None:
        raise TspError("TSP Runtime error: buffer readings are read-only")


@dataclass
class _ChannelState:
    func: int = 1            # 0 = OUTPUT_DCAMPS, 1 = OUTPUT_DCVOLTS
    levelv: float = 0.0
    leveli: float = 0.0
    limitv: float = 20.0
    limiti: float = 0.1
    output: int = 0
    offmode: int = 0
    rangev: float = 0.2
    rangei: float = 1e-6
    autorangev: int = 1
    autorangei: int = 1
    source_delay: float = 0.0
    nplc: float = 1.0
    count: int = 1
    interval: float = 0.0
    m_rangev: float = 0.2
    m_rangei: float = 1e-6
    m_autorangev: int = 1
    m_autorangei: int = 1
    autozero: int = 2
    m_delay: float = 0.0
    sense: int = 0
    condition: int = 0       # status.measurement.instrument.smuX.condition
    v_actual: float = 0.0    # the voltage the terminal holds now (after compliance)
    i_actual: float = 0.0


class _Smu:
    """One SMU channel: its settings, its bench terminal and its physics."""

    def __init__(self, emu: Keithley2600Emulator, channel: str):
        self.emu = emu
        self.channel = channel
        self.key = f"{emu.name}.{channel}"
        self.terminal = emu.bench.terminal(self.key)
        self.s = _ChannelState()
        self.buffers = {"nvbuffer1": _Buffer(), "nvbuffer2": _Buffer()}
        self.obj = self._build()

    # -- settings ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.s = _ChannelState()
        now = self.emu.clock.now()
        for b in self.buffers.values():
            b.clear(now)
            b.appendmode, b.collectsourcevalues, b.collecttimestamps = 0, 0, 1
        self.terminal.output_on = False
        self.terminal.voltage_v = 0.0

    def _setter(self, attr: str, kind: type = float, lo: float | None = None,
                hi: float | None = None, choices: Sequence[float] | None = None,
                resolve: bool = False) -> Callable[[Any], None]:
        def set_(value: Any) -> None:
            x = Interpreter.num(value)
            if choices is not None and x not in choices:
                raise TspError(f"TSP Runtime error: parameter value {x:g} out of range for "
                               f"{self.channel}.{attr}", -1110)
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                raise TspError(f"TSP Runtime error: parameter value {x:g} out of range "
                               f"[{lo:g}, {hi:g}] for {self.channel}.{attr}", -1110)
            setattr(self.s, attr, kind(x))
            if resolve:
                self.operating_point()
        return set_

    def _prop(self, attr: str, **kw: Any) -> Prop:
        return Prop(lambda: float(getattr(self.s, attr)), self._setter(attr, **kw))

    def _build(self) -> Obj:
        model = self.emu.model
        vmax = 200.0 if model.startswith("26") and model[2] in "13" else 40.0
        imax = 1.5 if vmax == 200.0 else 3.0
        buffers = {name: self._buffer_obj(name, b) for name, b in self.buffers.items()}
        source = Obj(f"{self.channel}.source", {
            "func": self._prop("func", kind=int, choices=(0, 1), resolve=True),
            "levelv": self._prop("levelv", lo=-vmax, hi=vmax, resolve=True),
            "leveli": self._prop("leveli", lo=-imax, hi=imax, resolve=True),
            "limitv": self._prop("limitv", lo=0.0, hi=vmax, resolve=True),
            "limiti": self._prop("limiti", lo=0.0, hi=imax, resolve=True),
            "output": self._prop("output", kind=int, choices=(0, 1, 2), resolve=True),
            "offmode": self._prop("offmode", kind=int, choices=(0, 1, 2, 3)),
            "rangev": self._prop("rangev", lo=0.0, hi=vmax),
            "rangei": self._prop("rangei", lo=0.0, hi=imax),
            "autorangev": self._prop("autorangev", kind=int, choices=(0, 1)),
            "autorangei": self._prop("autorangei", kind=int, choices=(0, 1)),
            "delay": self._prop("source_delay", lo=-1.0),
            "compliance": Prop(self._compliance),
            "settling": Prop(lambda: 0.0, lambda v: None),
            "highc": Prop(lambda: 0.0, lambda v: None),
            "sink": Prop(lambda: 0.0, lambda v: None),
        })
        measure = Obj(f"{self.channel}.measure", {
            "nplc": self._prop("nplc", lo=0.001, hi=25.0),
            "count": self._prop("count", kind=int, lo=1, hi=60000),
            "interval": self._prop("interval", lo=0.0, hi=1.0e6),
            "rangev": self._prop("m_rangev", lo=0.0, hi=vmax),
            "rangei": self._prop("m_rangei", lo=0.0, hi=imax),
            "autorangev": self._prop("m_autorangev", kind=int, choices=(0, 1)),
            "autorangei": self._prop("m_autorangei", kind=int, choices=(0, 1, 2)),
            "autozero": self._prop("autozero", kind=int, choices=(0, 1, 2)),
            "delay": self._prop("m_delay", lo=-1.0),
            "i": Fn(lambda buf=None: self.measure("i", buf), "measure.i"),
            "v": Fn(lambda buf=None: self.measure("v", buf), "measure.v"),
            "r": Fn(lambda buf=None: self.measure("r", buf), "measure.r"),
            "p": Fn(lambda buf=None: self.measure("p", buf), "measure.p"),
            "iv": Fn(lambda ib=None, vb=None: self.measure("iv", ib, vb), "measure.iv"),
        })
        return Obj(self.channel, {
            "source": source, "measure": measure, **buffers,
            "sense": self._prop("sense", kind=int, choices=(0, 1, 3)),
            "reset": Fn(self.reset, "reset"),
            "abort": Fn(lambda: None, "abort"),
            "OUTPUT_DCAMPS": 0.0, "OUTPUT_DCVOLTS": 1.0, "OUTPUT_OFF": 0.0,
            "OUTPUT_ON": 1.0, "OUTPUT_HIGH_Z": 2.0, "SENSE_LOCAL": 0.0, "SENSE_REMOTE": 1.0,
            "SENSE_CALA": 3.0, "AUTORANGE_OFF": 0.0, "AUTORANGE_ON": 1.0,
            "AUTORANGE_FOLLOW_LIMIT": 2.0, "AUTOZERO_OFF": 0.0, "AUTOZERO_ONCE": 1.0,
            "AUTOZERO_AUTO": 2.0, "OUTPUT_NORMAL": 0.0, "OUTPUT_ZERO": 2.0,
        })

    def _buffer_obj(self, name: str, b: _Buffer) -> Obj:
        def flag(attr: str) -> Prop:
            return Prop(lambda: float(getattr(b, attr)),
                        lambda v: setattr(b, attr, int(Interpreter.num(v))))
        return Obj(f"{self.channel}.{name}", {
            "clear": Fn(lambda: b.clear(self.emu.clock.now()), "clear"),
            "n": Prop(lambda: float(len(b.readings))),
            "capacity": Prop(lambda: float(b.capacity)),
            "appendmode": flag("appendmode"),
            "collectsourcevalues": flag("collectsourcevalues"),
            "collecttimestamps": flag("collecttimestamps"),
            "basetimestamp": Prop(lambda: b.basetimestamp),
            "readings": _Field(b, "readings"),
            "statuses": _Field(b, "statuses"),
            "timestamps": _Field(b, "timestamps"),
            "sourcevalues": _Field(b, "sourcevalues"),
        })

    def _compliance(self) -> bool:
        self.operating_point()
        return self.s.condition != 0

    # -- physics ------------------------------------------------------------------------------
    def operating_point(self) -> tuple[float, float]:
        """Solve the present operating point (no time passes): set the terminal to the
        compliant voltage, update the condition register; returns (V, I) as reported."""
        bench, term, s = self.emu.bench, self.terminal, self.s
        with bench.lock:
            on = s.output == 1
            term.output_on = on
            if not on:
                term.voltage_v = 0.0
                s.condition, s.v_actual, s.i_actual = 0, 0.0, 0.0
                return 0.0, 0.0
            if s.func == 1:
                v, i, cond = self._solve_voltage_mode(s.levelv, s.limiti)
            else:
                v, i, cond = self._solve_current_mode(s.leveli, s.limitv)
            term.voltage_v = v
            s.condition, s.v_actual, s.i_actual = cond, v, i
            return v, i

    def _current_at(self, v: float) -> float:
        return self.emu.bench.current(self.key, override={self.key: v})

    def _solve_voltage_mode(self, level: float, limit: float) -> tuple[float, float, int]:
        return solve_voltage_source(self._current_at, level, limit)

    def _solve_current_mode(self, level: float, limit: float) -> tuple[float, float, int]:
        return solve_current_source(self._current_at, level, limit)

    def measure(self, kind: str, buf: Any = None, buf2: Any = None) -> Any:
        """``smuX.measure.<kind>([buffer])``: ``count`` readings ``interval`` apart, each
        integrating for nplc / linefreq with the drive held on the chip."""
        emu, s = self.emu, self.s
        bufs = [self._resolve_buffer(b) for b in (buf, buf2)]
        for b in bufs:
            if b is not None and not b.appendmode:
                b.clear(emu.clock.now())
        t_int = s.nplc / emu.linefreq
        n = int(s.count)  # without a buffer the last of the readings is returned
        result: Any = None
        t_start = emu.clock.now()
        for k in range(n):
            with emu.bench.lock:
                self.operating_point()
                emu.bench.hold(t_int)
                v, i = self.operating_point()
            status = BUFFER_STATUS_COMPLIANCE if s.condition else 0
            values = {"i": i, "v": v, "p": v * i,
                      "r": (v / i) if i != 0 else OVERFLOW}
            source = v if s.func == 1 else i
            t = emu.clock.now()
            if kind == "iv":
                for b, x in zip(bufs, (i, v)):
                    if b is not None:
                        b.append(x, status, t, source)
                result = (i, v)
            else:
                if bufs[0] is not None:
                    bufs[0].append(values[kind], status, t, source)
                result = values[kind]
            if k < n - 1:
                # reading k + 1 starts at t_start + (k + 1) * interval: anchored to the
                # start, so the rounding of each hold's duration does not accumulate
                wait = t_start + (k + 1) * s.interval - emu.clock.now()
                if wait > 0:
                    emu.bench.hold(wait)
        return result

    def _resolve_buffer(self, b: Any) -> _Buffer | None:
        if b is None:
            return None
        if isinstance(b, Obj):
            for name, buf in self.buffers.items():
                if b._name == f"{self.channel}.{name}":
                    return buf
        raise TspError("TSP Runtime error: bad argument (reading buffer expected)")


#: Lines a script being loaded may hold: past it the script is abandoned with a TSP error
#: (a client that never sends ``endscript`` cannot grow the emulator without bound).
SCRIPT_LINES_MAX = 100_000


@dataclass
class _Loading:
    """A script a connection is loading (``loadscript``/``loadandrunscript`` so far)."""

    name: str | None
    run: bool
    lines: list[str] = field(default_factory=list)


class Keithley2600Emulator:
    """A Keithley 2600B SMU on a mock bench; ``handle`` answers one received line.

    ``name`` prefixes the bench terminal keys (``"<name>.smua"``); ``linefreq`` is the
    power-line frequency used for NPLC integration times.
    """

    def __init__(self, bench: MockBench, name: str = "smu", model: str = "2636B",
                 channels: Sequence[str] = ("smua", "smub"), *, linefreq: float = 60.0,
                 serial: str = "4242424"):
        self.bench = bench
        self.name = name
        self.model = model
        self.serial = serial
        self.linefreq = float(linefreq)
        self.clock = bench.chip.clock
        self._lock = threading.RLock()
        self.errors: list[tuple[int, str]] = []
        self.format_data = 1        # ASCII
        self.format_byteorder = 0   # NORMAL (big endian)
        self.ascii_precision = 0
        self._loading: dict[int | None, _Loading] = {}  # connection -> script being loaded
        self._out: list[bytes] = []
        self.smus = {ch: _Smu(self, ch) for ch in channels}
        self.globals: dict[str, Any] = {}
        self._interp = Interpreter(self.globals)
        self._timer_t0 = 0.0
        # the last lines received (for tests / debugging), bounded like any command log
        self.transcript: deque[str] = deque(maxlen=TRANSCRIPT_LINES)
        self._install_globals()

    # -- wire ---------------------------------------------------------------------------------
    def handle(self, line: str) -> str | bytes | None:
        """Run one received line; returns what the instrument prints (None: nothing)."""
        with self._lock:
            self.transcript.append(line)
            text = line.strip()
            session = current_session()
            loading = self._loading.get(session)
            if loading is not None:
                if text == "endscript":
                    del self._loading[session]
                    return self._end_script(loading)
                if len(loading.lines) >= SCRIPT_LINES_MAX:
                    del self._loading[session]
                    self._error(-286, f"TSP Runtime error: script longer than "
                                      f"{SCRIPT_LINES_MAX} lines abandoned (no endscript)")
                    return None
                loading.lines.append(line)
                return None
            head = text.split(None, 1)
            if head and head[0] in ("loadandrunscript", "loadscript"):
                self._loading[session] = _Loading(
                    name=head[1].strip() if len(head) > 1 else None,
                    run=head[0] == "loadandrunscript")
                return None
            if text == "abort":  # stops a running script: none runs between commands here
                return None
            if text.startswith("*"):
                return self._common(text)
            return self._run(text)

    def _common(self, cmd: str) -> str | None:
        c = cmd.upper()
        if c == "*IDN?":
            return f"Keithley Instruments Inc., Model {self.model}, {self.serial}, 4.0.5"
        if c == "*RST":
            self.reset()
            return None
        if c == "*CLS":
            self.errors.clear()
            return None
        if c == "*OPC?":
            return "1"
        if c in ("*ESR?", "*STB?"):
            return "0"
        if c in ("*WAI", "*TRG", "*OPC"):
            return None
        self._error(-113, f"Undefined header {cmd}")
        return None

    @property
    def loading_script(self) -> bool:
        """Whether any connection is in the middle of loading a script."""
        with self._lock:
            return bool(self._loading)

    def session_closed(self, session: int) -> None:
        """A connection ended: a script it was loading is discarded, neither compiled nor
        run; outputs, levels and loaded scripts stay as they are. The 2600B reference
        manual describes script loading per command interface and says nothing about a
        LAN connection that closes mid-load; we assume the half-received chunk dies with
        its connection (it cannot be completed by anyone else) and that the source state
        is untouched (the instrument does not switch its outputs off on a disconnect),
        so recovery must still put the outputs in their safe state itself."""
        with self._lock:
            if self._loading.pop(session, None) is not None:
                log.warning("%s: connection closed while loading a script: discarded",
                            self.name)

    def _end_script(self, loading: "_Loading") -> bytes | None:
        src = "\n".join(loading.lines)
        name, run = loading.name, loading.run
        if name:
            try:
                block = _Parser(src).chunk()
            except TspError as exc:
                self._error(exc.code, str(exc))
                return None
            fn = _LuaFunction([], block, self._interp)
            script = Obj(name, {"run": Fn(fn, f"{name}.run"), "source": src})
            self.globals[name] = _ScriptObj(script, fn)
        if not run:
            return None
        return self._run(src)

    def _run(self, src: str) -> bytes | None:
        self._out = []
        try:
            self._interp.run(src)
        except TspError as exc:
            self._error(exc.code, str(exc))
        except (ArithmeticError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            self._error(-286, f"TSP Runtime error: {exc}")
        out, self._out = self._out, []
        return b"".join(out) if out else None

    def _error(self, code: int, message: str) -> None:
        log.warning("%s: %s (code %d)", self.name, message, code)
        self.errors.append((code, message))

    def _emit(self, data: bytes) -> None:
        self._out.append(data)

    # -- instrument-wide actions ---------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            for smu in self.smus.values():
                smu.reset()
            self.format_data, self.format_byteorder, self.ascii_precision = 1, 0, 0

    # -- globals -----------------------------------------------------------------------------
    def _install_globals(self) -> None:
        g = self.globals

        def setter(attr: str, choices: Sequence[float]) -> Callable[[Any], None]:
            def set_(v: Any) -> None:
                x = int(Interpreter.num(v))
                if x not in choices:
                    raise TspError(f"TSP Runtime error: parameter value {x} out of range", -1110)
                setattr(self, attr, x)
            return set_

        def set_linefreq(v: Any) -> None:
            x = Interpreter.num(v)
            if x not in (50.0, 60.0):
                raise TspError("TSP Runtime error: line frequency must be 50 or 60", -1110)
            self.linefreq = x

        fmt = Obj("format", {
            "data": Prop(lambda: float(self.format_data), setter("format_data", (1, 2, 3))),
            "byteorder": Prop(lambda: float(self.format_byteorder),
                              setter("format_byteorder", (0, 1))),
            "asciiprecision": Prop(lambda: float(self.ascii_precision),
                                   setter("ascii_precision", tuple(range(17)))),
            "ASCII": 1.0, "SREAL": 2.0, "REAL32": 2.0, "REAL": 3.0, "REAL64": 3.0,
            "NORMAL": 0.0, "BIGENDIAN": 0.0, "NETWORK": 0.0, "SWAPPED": 1.0,
            "LITTLEENDIAN": 1.0,
        })
        localnode = Obj("localnode", {
            "model": self.model,
            "serialno": self.serial,
            "revision": "4.0.5",
            "description": f"Keithley Instruments SMU {self.model} - {self.serial} (memhil mock)",
            "linefreq": Prop(lambda: self.linefreq, set_linefreq),
            "autolinefreq": Prop(lambda: False, lambda v: None),
            "prompts": Prop(lambda: 0.0, lambda v: None),
            "prompts4882": Prop(lambda: 0.0, lambda v: None),
            "showerrors": Prop(lambda: 0.0, lambda v: None),
        })

        def err_next():
            if not self.errors:
                return (0.0, "Queue Is Empty", 0.0, 0.0)
            code, msg = self.errors.pop(0)
            return (float(code), msg, 30.0, 0.0)

        errorqueue = Obj("errorqueue", {
            "count": Prop(lambda: float(len(self.errors))),
            "next": Fn(err_next, "errorqueue.next"),
            "clear": Fn(lambda: self.errors.clear(), "errorqueue.clear"),
        })
        instrument = Obj("status.measurement.instrument", {
            ch: Obj(f"status.measurement.instrument.{ch}", {
                "condition": Prop(lambda smu=smu: float(smu.s.condition)),
                "event": Prop(lambda smu=smu: float(smu.s.condition)),
                "enable": Prop(lambda: 0.0, lambda v: None),
            }) for ch, smu in self.smus.items()})
        status = Obj("status", {
            "measurement": Obj("status.measurement", {
                "instrument": instrument,
                "condition": Prop(lambda: float(any(s.s.condition for s in self.smus.values()))),
            }),
            "condition": Prop(lambda: 0.0),
            "reset": Fn(lambda: None, "status.reset"),
        })
        display = Obj("display", {
            "clear": Fn(lambda: None, "display.clear"),
            "settext": Fn(lambda text="": None, "display.settext"),
            "sendkey": Fn(lambda key=0: None, "display.sendkey"),
            "screen": Prop(lambda: 2.0, lambda v: None),
            "SMUA": 0.0, "SMUB": 1.0, "SMUA_SMUB": 2.0, "USER": 3.0,
        })
        timer = Obj("timer", {
            "reset": Fn(lambda: setattr(self, "_timer_t0", self.clock.now()), "timer.reset"),
            "measure": Obj("timer.measure", {
                "t": Fn(lambda: self.clock.now() - self._timer_t0, "timer.measure.t")}),
        })
        math_ = Obj("math", {
            "abs": Fn(lambda x: abs(Interpreter.num(x))),
            "min": Fn(lambda *x: min(Interpreter.num(v) for v in x)),
            "max": Fn(lambda *x: max(Interpreter.num(v) for v in x)),
            "floor": Fn(lambda x: float(math.floor(Interpreter.num(x)))),
            "ceil": Fn(lambda x: float(math.ceil(Interpreter.num(x)))),
            "sqrt": Fn(lambda x: math.sqrt(Interpreter.num(x))),
            "huge": math.inf, "pi": math.pi,
        })
        g.update(self.smus_objs())
        g.update({
            "format": fmt, "localnode": localnode, "errorqueue": errorqueue,
            "status": status, "display": display, "timer": timer, "math": math_,
            "beeper": Obj("beeper", {"beep": Fn(lambda *a: None, "beeper.beep"),
                                     "enable": Prop(lambda: 0.0, lambda v: None)}),
            "print": Fn(self._print, "print"),
            "printbuffer": Fn(self._printbuffer, "printbuffer"),
            "printnumber": Fn(self._printnumber, "printnumber"),
            "delay": Fn(self._delay, "delay"),
            "waitcomplete": Fn(lambda *a: None, "waitcomplete"),
            "opc": Fn(lambda: None, "opc"),
            "reset": Fn(lambda *a: self.reset(), "reset"),
            "tostring": Fn(_lua_tostring, "tostring"),
            "tonumber": Fn(_tonumber, "tonumber"),
        })

    def smus_objs(self) -> dict[str, Obj]:
        return {ch: smu.obj for ch, smu in self.smus.items()}

    def _print(self, *args: Any) -> None:
        self._emit(("\t".join(_tostring(a, self.ascii_precision) for a in args) + "\n").encode())

    def _delay(self, seconds: Any = 0.0) -> None:
        t = Interpreter.num(seconds)
        if t < 0:
            raise TspError("TSP Runtime error: delay must be >= 0", -1110)
        with self.bench.lock:
            for smu in self.smus.values():
                smu.operating_point()
            self.bench.hold(t)
            for smu in self.smus.values():
                smu.operating_point()

    def _pack(self, values: Sequence[float]) -> bytes:
        arr = np.asarray(values, dtype=np.float64)
        order = "<" if self.format_byteorder == 1 else ">"
        if self.format_data == 2:
            f32 = arr.astype(np.float32)
            # round towards zero: a reading clamped at a limit never exceeds it after rounding
            over = np.abs(f32.astype(np.float64)) > np.abs(arr)
            f32[over] = np.nextafter(f32[over], np.float32(0.0))
            return f32.astype(order + "f4").tobytes()
        return arr.astype(order + "f8").tobytes()

    def _printnumber(self, *values: Any) -> None:
        nums = [Interpreter.num(v) for v in values]
        if self.format_data == 1:
            self._emit((", ".join(_fmt_number(x, self.ascii_precision) for x in nums)
                        + "\n").encode())
        else:
            self._emit(b"#0" + self._pack(nums) + b"\n")

    def _printbuffer(self, start: Any, end: Any, *fields: Any) -> None:
        a, b = int(Interpreter.num(start)), int(Interpreter.num(end))
        if not fields:
            raise TspError("TSP Runtime error: printbuffer needs a buffer")
        cols = []
        for f in fields:
            if not isinstance(f, _Field):
                raise TspError("TSP Runtime error: bad argument to printbuffer (buffer expected)")
            vals = f.values
            if not (1 <= a <= b <= len(vals)):
                raise TspError(f"TSP Runtime error: printbuffer index out of range "
                               f"({a}..{b} of {len(vals)})", -1113)
            cols.append(vals[a - 1:b])
        values = [col[k] for k in range(b - a + 1) for col in cols]  # interleaved per index
        if self.format_data == 1:
            self._emit((", ".join(_fmt_number(x, self.ascii_precision) for x in values)
                        + "\n").encode())
        else:
            self._emit(b"#0" + self._pack(values) + b"\n")


class _ScriptObj(Obj):
    """A named script: callable as ``name()`` and as ``name.run()``."""

    def __init__(self, obj: Obj, fn: _LuaFunction):
        super().__init__(obj._name, obj._m)
        self._fn = fn

    def __call__(self, *args):
        return self._fn(*args)


def _tonumber(v: Any) -> float | None:
    try:
        return Interpreter.num(v)
    except TspError:
        return None


__all__ = ["BUFFER_STATUS_COMPLIANCE", "CONDITION_CURRENT_LIMIT", "CONDITION_VOLTAGE_LIMIT",
           "Keithley2600Emulator", "TspError", "solve_current_source", "solve_voltage_source"]
