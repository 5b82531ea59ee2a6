"""Parser of the TSP Lua subset: recursive descent from tokens to statements and
expressions as plain tuples (``("assign", targets, exprs, line)``, ``("bin", op, l, r)``),
which ``memhil.mock_hw.tsp.interpreter`` walks. Operator priorities are Lua 5.x's
(Ierusalimschy et al., Lua 5.1 Reference Manual, 2006, section 2.5.6)."""

from __future__ import annotations

from typing import Any

from memhil.mock_hw.tsp.errors import TspError
from memhil.mock_hw.tsp.lexer import Tok, tokenize

_BINARY_PRIORITY = {  # (left, right) binding power, Lua 5.x
    "or": (1, 1),
    "and": (2, 2),
    "<": (3, 3),
    ">": (3, 3),
    "<=": (3, 3),
    ">=": (3, 3),
    "~=": (3, 3),
    "==": (3, 3),
    "..": (5, 4),
    "+": (6, 6),
    "-": (6, 6),
    "*": (7, 7),
    "/": (7, 7),
    "%": (7, 7),
    "^": (10, 9),
}
_UNARY_PRIORITY = 8


class Parser:
    """Recursive descent over the token list; statements and expressions as tuples."""

    def __init__(self, src: str):
        self.toks = tokenize(src)
        self.i = 0

    # -- helpers
    def peek(self) -> Tok:
        return self.toks[self.i]

    def next(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def check(self, kind: str, value: Any = None) -> bool:
        t = self.peek()
        return t.kind == kind and (value is None or t.value == value)

    def accept(self, kind: str, value: Any = None) -> Tok | None:
        if self.check(kind, value):
            return self.next()
        return None

    def expect(self, kind: str, value: Any = None) -> Tok:
        t = self.accept(kind, value)
        if t is None:
            got = self.peek()
            raise TspError(
                f"TSP Syntax error at line {got.line}: '{value or kind}' expected "
                f"near '{got.value if got.value is not None else '<eof>'}'",
                -285,
            )
        return t

    # -- statements
    def chunk(self) -> list:
        block = self.block()
        if not self.check("eof"):
            t = self.peek()
            raise TspError(f"TSP Syntax error at line {t.line}: unexpected '{t.value}'", -285)
        return block

    def block(self) -> list:
        stmts: list[tuple] = []
        while not (
            self.check("eof")
            or self.check("kw", "end")
            or self.check("kw", "else")
            or self.check("kw", "elseif")
            or self.check("kw", "until")
        ):
            if self.accept("op", ";"):
                continue
            if self.check("kw", "return"):
                line = self.next().line
                exprs = (
                    []
                    if (self.check("eof") or self.check("kw", "end") or self.check("op", ";"))
                    else self.exprlist()
                )
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
        raise TspError(
            f"TSP Syntax error at line {t.line}: unexpected symbol near "
            f"'{t.value if t.value is not None else '<eof>'}'",
            -285,
        )

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


def parse(src: str) -> list:
    """The statements of chunk ``src`` (a TSP syntax error, code -285, if it is not one)."""
    return Parser(src).chunk()
