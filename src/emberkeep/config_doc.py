"""``docs/config.md``: the reference of every config key, generated from the schema.

One source of truth: the msgspec structs in ``config/schema.py`` give the keys, their
types, bounds and defaults; a struct's docstring and a field's ``Meta(description=...)``
(else the comment beside it) give the prose.
``emberkeep config doc`` prints it; ``tests/test_config_sample.py`` checks that the
committed file is what this prints, so the reference cannot drift from the code.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import tokenize
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from . import config
from .config import schema
from .cron import Cron
from .durations import Duration
from .sizes import Size

HEADER = """\
# Configuration reference

Every key of `emberkeep.toml`. Generated from the schema in `src/emberkeep/config/schema.py` by
`emberkeep config doc > docs/config.md`; do not edit by hand (a test checks it is current).
`emberkeep config sample` prints a complete, commented example; `emberkeep config check`
validates a file. Durations are like `90s`, `15m`, `24h`, `7d`; sizes like `512MiB`, `1GiB`;
schedules are cron expressions in UTC (`0 2 * * *`) or `@hourly`, `@daily`, `@weekly`,
`@monthly`, `@yearly`.
"""


def render() -> str:
    """The whole reference, as markdown."""
    notes = field_notes(inspect.getsource(schema))
    sections: dict[type, list[str]] = {}
    top = mi.type_info(config.decoded_config())
    assert isinstance(top, mi.StructType)
    _collect(top, "", sections)
    out = [HEADER]
    for cls, paths in sections.items():
        out.append(_section(cls, paths, notes))
    return "\n".join(out)


def _collect(info: mi.StructType, path: str, sections: dict[type, list[str]]) -> None:
    """Every struct reachable from ``info``, with the TOML paths where it appears."""
    if path:
        sections.setdefault(info.cls, []).append(path)
    for field in info.fields:
        for nested, suffix in _structs_in(field.type):
            _collect(nested, _join(path, field.encode_name) + suffix, sections)


def _structs_in(t: mi.Type) -> list[tuple[mi.StructType, str]]:
    if isinstance(t, mi.Metadata):
        return _structs_in(t.type)
    if isinstance(t, mi.StructType):
        return [(t, "")]
    if isinstance(t, mi.UnionType):
        return [found for member in t.types for found in _structs_in(member)]
    if isinstance(t, mi.ListType):
        return [(s, "[]" + suffix) for s, suffix in _structs_in(t.item_type)]
    if isinstance(t, mi.DictType):
        return [(s, ".<name>" + suffix) for s, suffix in _structs_in(t.value_type)]
    return []


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _section(cls: type, paths: list[str], notes: dict[tuple[str, str], str]) -> str:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    title = ", ".join(f"`{_table(p)}`" for p in _unique(paths))
    lines = [f"## {title}", ""]
    if info.tag is not None:
        lines += [f'With `{info.tag_field} = "{info.tag}"`.', ""]
    doc = inspect.getdoc(cls)
    if doc and cls.__doc__:  # its own docstring, not one inherited
        lines += [" ".join(doc.split()).replace("``", "`"), ""]
    lines += ["| key | type | default | about |", "| --- | --- | --- | --- |"]
    for field in info.fields:
        note = _description(field.type) or _note(cls, field.name, notes)
        lines.append(
            f"| `{field.encode_name}` | {_type(field.type)} | {_default(field)} | {note} |"
        )
    return "\n".join(lines) + "\n"


def _table(path: str) -> str:
    """``sources[].hooks`` -> ``[sources.hooks]`` style; a list of tables gets ``[[…]]``."""
    if path.endswith("[]"):
        return f"[[{path[:-2].replace('[]', '')}]]"
    return f"[{path.replace('[]', '')}]"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _note(cls: type, name: str, notes: dict[tuple[str, str], str]) -> str:
    for klass in cls.__mro__:
        if (klass.__name__, name) in notes:
            return notes[(klass.__name__, name)].replace("|", "\\|")
    return ""


def _description(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        text = (t.extra_json_schema or {}).get("description") or _description(t.type)
        return str(text).replace("|", "\\|")
    if isinstance(t, mi.UnionType):
        return next((d for d in map(_description, t.types) if d), "")
    return ""


# The config's typed strings (schema.decode_typed makes them), as the reference names them.
_CUSTOM: dict[type, str] = {
    Path: "path",
    Duration: "duration (`90s`, `15m`, `24h`, `7d`, `1h30m`)",
    Size: "size (`500MB`, `10GiB`)",
    Cron: "cron schedule (five fields, or `@hourly`/`@daily`/`@weekly`/`@monthly`)",
}


def _type(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        return _type(t.type)
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if all(isinstance(m, mi.StructType) for m in members):
            return "table"
        return " or ".join(_type(m) for m in members)
    if isinstance(t, mi.StrType):
        bounds = f"pattern `{t.pattern}`" if t.pattern else ""
        if t.min_length:
            bounds = "not empty"
        return f"string ({bounds})" if bounds else "string"
    if isinstance(t, mi.IntType | mi.FloatType):
        kind = "integer" if isinstance(t, mi.IntType) else "number"
        limits = [
            f"{sign} {value}"
            for sign, value in ((">", t.gt), ("≥", t.ge), ("<", t.lt), ("≤", t.le))
            if value is not None
        ]
        return f"{kind} ({', '.join(limits)})" if limits else kind
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.CustomType) and t.cls in _CUSTOM:
        return _CUSTOM[t.cls]
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(f'`"{v}"`' for v in t.values)
    if isinstance(t, mi.ListType):
        at_least = f", at least {t.min_length}" if t.min_length else ""
        item = t.item_type
        if isinstance(item, mi.StructType) or (
            isinstance(item, mi.UnionType) and _type(item) == "table"
        ):
            return f"list of tables{at_least}"
        return f"list of {_type(t.item_type)}{at_least}"
    if isinstance(t, mi.DictType):
        return f"table of {_type(t.key_type)} to {_type(t.value_type)}"
    if isinstance(t, mi.StructType):
        return "table"
    raise TypeError(f"config_doc: no rendering for {t!r}: add one")


def _default(field: mi.Field) -> str:
    if field.required:
        return "required"
    if field.default_factory is not msgspec.NODEFAULT:
        return f"`{_toml(field.default_factory())}`"
    value: Any = field.default
    if value is None:
        return "none"
    if isinstance(value, msgspec.Struct):
        return "(table)"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    return json.dumps(value)


def field_notes(source: str) -> dict[tuple[str, str], str]:
    """(class name, field) -> the comment at the end of the field's line in ``source`` (the
    schema's), else the one comment on the line above it."""
    tokens = [
        tok
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    comments = {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens}
    # a comment on a line of its own; the one ending the field above is that field's
    alone = {tok.start[0] for tok in tokens if tok.line.strip().startswith("#")}
    notes: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                comment = comments.get(item.end_lineno or item.lineno)
                above = item.lineno - 1
                if comment:
                    notes[(node.name, item.target.id)] = comment
                elif above in alone and above - 1 not in alone:
                    notes[(node.name, item.target.id)] = comments[above]
    return notes
