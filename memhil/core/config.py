"""Typed configuration from plain mappings (dicts or YAML) with errors that name the key.

Every config section in memhil is a frozen dataclass; ``from_mapping`` fills one from a
mapping, rejecting unknown keys and wrong types with a ``ConfigError`` that names the
source file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml

from memhil.core.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class SafeStrictLoader(yaml.SafeLoader):
    """The safe loader, plus YAML 1.2 floats without a dot (``1e-6``), which YAML 1.1
    (PyYAML's default) reads as strings -- a classic trap in limit sections -- and with
    duplicate mapping keys refused (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *anchor' merges are flattened by the base class
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # unhashable key: the base class reports it
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first at line {first.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


SafeStrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the strict safe loader; errors name the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read: {exc}", str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "<file>",
            f"not a UTF-8 text file (byte {exc.start}: "
            f"{exc.object[exc.start : exc.start + 1]!r}); is it a YAML file?",
            str(path),
        ) from None
    try:
        data = yaml.load(text, Loader=SafeStrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"invalid YAML: {exc}", str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", f"expected a mapping, got {type(data).__name__}", str(path))
    return data


def _coerce(value: Any, annotation: Any, key: str, source: str | None) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or (
        origin is not None and str(origin) == "<class 'types.UnionType'>"
    ):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # ``X | None``: X's own error, naming its nested key
            return _coerce(value, options[0], key, source)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(key, "; ".join(errors) or f"invalid value {value!r}", source)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(key, f"{value!r} is not one of {list(args)}", source)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}", source)
        if not math.isfinite(float(value)):
            raise ConfigError(key, f"expected a finite number, got {value!r}", source)
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}", source)
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}", source)
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}", source)
        return value
    if dataclasses.is_dataclass(annotation):
        # an annotation is a class (typeshed's is_dataclass also admits instances)
        dc_type = cast("type[Any]", annotation)
        if isinstance(value, dc_type):
            return value
        return from_mapping(dc_type, value, source=source, prefix=key)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}", source)
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}", source)
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value))
    return value


def from_mapping(
    cls: type[T], mapping: Mapping[str, Any] | None, *, source: str | None = None, prefix: str = ""
) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and bad types raise ConfigError."""
    if mapping is None:
        mapping = {}
    if isinstance(mapping, cls):
        return mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(prefix or cls.__name__, f"expected a mapping, got {mapping!r}", source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(key, f"unknown key (allowed: {sorted(fields)})", source)
    kwargs = {}
    for name, value in mapping.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key, source)
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        if exc.source is None:
            full = f"{prefix}.{exc.key}" if prefix else exc.key
            raise ConfigError(full, exc.reason, source) from None
        raise
    except TypeError as exc:  # missing required fields
        raise ConfigError(prefix or cls.__name__, str(exc), source) from None
    return obj


def require(condition: bool, key: str, reason: str) -> None:
    """Raise ConfigError(key, reason) unless ``condition``; for ``__post_init__`` checks."""
    if not condition:
        raise ConfigError(key, reason)
