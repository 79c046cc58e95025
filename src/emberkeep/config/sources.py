"""The source types a config may name: a registry of source kinds' structs.

``[[sources]]`` is decoded as a tagged union of the registered structs (their ``type`` is
the tag). files, mongodb and git are the config's own; runner/kinds registers each kind's
struct, and a new kind adds its own (docs/design.md, "Source kinds").
"""

from __future__ import annotations

import functools
import types
from typing import Union

from .schema import Config, FilesSource, GitSource, MongoSource, SourceConfig

_SOURCE_TYPES: dict[str, type[SourceConfig]] = {
    "files": FilesSource,
    "mongodb": MongoSource,
    "git": GitSource,
}


def register_source_type(struct: type[SourceConfig]) -> None:
    """Let configs name ``struct``'s tag as a source ``type``."""
    tag = struct.__struct_config__.tag
    if not isinstance(tag, str) or _SOURCE_TYPES.get(tag, struct) is not struct:
        raise ValueError(f"source type {tag!r} of {struct.__name__}: missing or taken")
    if tag not in _SOURCE_TYPES:  # the same decoded schema (one Config class) until a new type
        _SOURCE_TYPES[tag] = struct
        decoded_config.cache_clear()


def unregister_source_type(struct: type[SourceConfig]) -> None:
    tag = struct.__struct_config__.tag
    if isinstance(tag, str) and _SOURCE_TYPES.get(tag) is struct:
        del _SOURCE_TYPES[tag]
        decoded_config.cache_clear()


def source_types() -> list[type[SourceConfig]]:
    return list(_SOURCE_TYPES.values())


def source_tags() -> list[str]:
    return list(_SOURCE_TYPES)


@functools.cache
def decoded_config() -> type[Config]:
    """``Config`` as it is decoded: ``sources`` a tagged union of the registered source
    types (msgspec resolves a union when it first decodes it, so it is made here, again
    after each registration)."""
    union = Union.__getitem__(tuple(_SOURCE_TYPES.values()))  # a union made at run time
    sources = types.GenericAlias(list, (union,))
    fields = {"__annotations__": {"sources": sources}, "sources": [], "__module__": __name__}
    return types.new_class("Config", (Config,), {}, lambda ns: ns.update(fields))
