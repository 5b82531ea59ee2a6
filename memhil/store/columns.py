"""Units of stored columns and protocol parameters, read from memhil's naming rule: an SI
suffix (``_v``, ``_a``, ``_s``, ``_j``, ``_w``) or a quantity prefix (``v_``, ``i_``, ``g``).
A conductance is named ``g...`` and, where it carries a suffix, ``_s`` (siemens), so a name
that starts with ``g`` reads ``_s`` as S, every other name as seconds."""

from __future__ import annotations

#: Whole names that carry their quantity without a suffix.
_BY_NAME = {"g": "S", "v": "V", "i": "A", "t": "s", "v_pulse": "V", "v_read": "V"}
_SUFFIX = {"_v": "V", "_a": "A", "_j": "J", "_w": "W"}
_PREFIX = {"v_": "V", "i_": "A"}


def unit_of(name: str) -> str:
    """The SI unit of column or parameter ``name`` ('' when it is a count, an index or a
    flag). ``column_name`` appends ``_`` to names SQLite reserves; it is ignored here."""
    base = name.rstrip("_").lower()
    if base in _BY_NAME:
        return _BY_NAME[base]
    conductance = base == "g" or base.startswith("g_")
    for suffix, unit in _SUFFIX.items():
        if base.endswith(suffix):
            return unit
    if base.endswith("_s"):
        return "S" if conductance else "s"
    if conductance:
        return "S"
    for prefix, unit in _PREFIX.items():
        if base.startswith(prefix):
            return unit
    return ""


__all__ = ["unit_of"]
