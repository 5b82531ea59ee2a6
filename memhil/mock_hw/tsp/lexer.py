"""Lexer of the Lua subset that Keithley's Test Script Processor (TSP) runs: numbers,
strings, names, keywords and operators, with the line each token starts on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from memhil.mock_hw.tsp.errors import TspError

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>--[^\n]*)
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\.\.|==|~=|<=|>=|[-+*/%^#<>=(){}\[\];:,.])
""",
    re.VERBOSE,
)

_KEYWORDS = {
    "and",
    "break",
    "do",
    "else",
    "elseif",
    "end",
    "false",
    "for",
    "function",
    "if",
    "in",
    "local",
    "nil",
    "not",
    "or",
    "repeat",
    "return",
    "then",
    "true",
    "until",
    "while",
}


@dataclass
class Tok:
    """One token: ``kind`` is num, str, name, kw, op or eof."""

    kind: str
    value: Any
    line: int


def tokenize(src: str) -> list[Tok]:
    """The tokens of ``src``, ending with an ``eof`` token; a TSP syntax error (-285) at an
    unknown symbol."""
    toks: list[Tok] = []
    pos, line = 0, 1
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if m is None:
            raise TspError(
                f"TSP Syntax error at line {line}: unexpected symbol near {src[pos : pos + 10]!r}",
                -285,
            )
        kind, text = m.lastgroup, m.group()
        if kind == "num":
            toks.append(
                Tok("num", float(int(text, 16)) if text[:2].lower() == "0x" else float(text), line)
            )
        elif kind == "str":
            toks.append(Tok("str", bytes(text[1:-1], "utf-8").decode("unicode_escape"), line))
        elif kind == "name":
            toks.append(Tok("kw" if text in _KEYWORDS else "name", text, line))
        elif kind == "op":
            toks.append(Tok("op", text, line))
        line += text.count("\n")
        pos = m.end()
    toks.append(Tok("eof", None, line))
    return toks
