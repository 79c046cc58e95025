"""The shape pass's messages: msgspec's error, said the way the user wrote the file.

``describe_shape`` turns msgspec's ``Expected `int`, got `str` - at `$.sources[2].parallel```
into ``sources[3] (media).parallel: should be a whole number (integer), not a string``. A
value is quoted only when it cannot be a secret (never an unknown key's, a webhook's or a
hook's, nor ``user:password@host``); ``loading`` passes every message through
``redact_text`` besides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from .schema import Prune, Site, Target, decode_typed
from .sources import decoded_config, source_tags, source_types

_TOML_KINDS = {
    "array": 'a list (like ["a", "b"])',
    "str": 'a string (in quotes, like "x")',
    "int": "a whole number (integer)",
    "float": "a number",
    "bool": "true or false",
    "object": "a table (like { key = value } or a [section])",
    "Path": 'a path string (like "/var/www")',
}
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.S)


def describe_shape(message: str, raw: dict[str, Any]) -> str:
    match = _AT.match(message)
    assert match is not None
    what, where = match["what"], match["where"] or ""
    loc: list[str | int] = []
    for index, key, in_table in re.findall(r"\[(\d+)\]|\.([^.\[]+)|(\[\.\.\.\])", where):
        if in_table:  # msgspec does not name the key of a table of tables: find it
            loc.append(_failing_key(raw, loc, message))
        else:
            loc.append(int(index) if index else key)
    if unknown := re.match(r"Object contains unknown field `(.+)`", what):
        loc.append(unknown[1])
        text = "unknown key; remove it or check its spelling against the README"
    elif missing := re.match(r"Object missing required field `(.+)`", what):
        loc.append(missing[1])
        text = "required, but missing; add it"
    elif loc and loc[-1] == "type" and what.startswith("Invalid value"):
        loc.pop()
        text = f"unknown source type; use {_either(repr(tag) for tag in source_tags())}"
    elif what.startswith("Expected `int` >= 0"):
        text = "must be a whole number greater than or equal to 0"
    elif what.startswith("Invalid enum value"):
        text = f"not allowed; use {_choices(loc[-1])}"
    elif what.startswith("Expected `str` matching regex"):
        text = "use letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif what.startswith("Expected `array` of length >= 1"):
        text = "must list at least one value"
    elif wrong := re.match(r"Expected `(\w+)(?: \| null)?`, got `(\w+)`", what):
        wanted, got = (_TOML_KINDS.get(k, k) for k in (wrong[1], wrong[2]))
        text = f"should be {wanted}, not {got}"
    else:
        text = what[0].lower() + what[1:] if what else "invalid"
    if _may_show_value(loc, unknown is not None):
        given = _value_at(raw, loc)
        if given is not _MISSING and not isinstance(given, dict | list) and _showable(given):
            text += f" (got {given!r})"
    return f"{field_name(loc, raw)}: {text}"


_MISSING = object()
# keys whose values may be secrets as a whole: webhook URLs, hook commands (PGPASSWORD=…)
_SECRET_KEYS = frozenset({"webhooks", "hooks"})


def _may_show_value(loc: list[str | int], unknown: bool) -> bool:
    """Whether a shape error may quote the value at ``loc``: not when the key is unknown (a
    misspelt ``uri`` or ``password``), nor when it is, or is in, one of ``_SECRET_KEYS``."""
    return not unknown and _SECRET_KEYS.isdisjoint(loc)


def _showable(value: Any) -> bool:
    """False for ``user:password@host`` without a ``scheme://``: ``redact_text`` hides the
    password of a URL, but cannot tell such a value from other text."""
    return not (isinstance(value, str) and "@" in value and "://" not in value)


def quoted_url(value: str) -> str:
    return repr(value) if _showable(value) else "the value (not shown: it may hold a password)"


def _failing_key(raw: dict[str, Any], loc: list[str | int], message: str) -> str:
    """The key of the table at ``loc`` whose value alone fails with ``message``."""
    table = _value_at(raw, loc)
    for key in table if isinstance(table, dict) else ():
        try:
            msgspec.convert(
                _replaced(raw, loc, {key: table[key]}), decoded_config(), dec_hook=decode_typed
            )
        except msgspec.ValidationError as exc:
            if str(exc) == message:
                return str(key)
    return "[...]"


def _replaced(node: Any, loc: list[str | int], value: Any) -> Any:
    """A copy of ``node`` with the item at ``loc`` replaced by ``value``."""
    if not loc:
        return value
    copy: Any = list(node) if isinstance(node, list) else dict(node)
    copy[loc[0]] = _replaced(node[loc[0]], loc[1:], value)
    return copy


def _value_at(raw: Any, loc: list[str | int]) -> Any:
    node = raw
    for item in loc:
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _choices(field: str | int) -> str:
    """The allowed values of a Literal-typed field, as a sentence."""
    import typing

    for struct in (Target, *source_types(), decoded_config(), Site, Prune):
        hint = typing.get_type_hints(struct).get(str(field))
        if typing.get_origin(hint) is Literal:
            return _either(repr(v) for v in typing.get_args(hint))
    return "one of the documented values"


def _either(values: Iterable[str]) -> str:
    """``'a', 'b' or 'c'``."""
    *rest, last = values
    return ", ".join(rest) + " or " + last if rest else last


def field_name(loc: list[str | int], raw: dict[str, Any]) -> str:
    """Render a location as the user wrote it: ``sources[2] (media).schedule``."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item + 1}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and "name" in node:
                    label += f" ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"
