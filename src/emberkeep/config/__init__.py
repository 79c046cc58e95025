"""The TOML config (docs/design.md, "Config contract"), validated on load.

Every problem is reported as ``file: field: what is wrong; what to do`` and exits 2.
Secrets stay out of those messages: the value of an unknown key or of a webhook is never
shown, an age identity never, and every message passes through ``redact_text``.
Validation runs in two passes: msgspec checks the shape (types, unknown or missing keys,
ranges), then ``checks.semantic_problems`` checks meaning (cron expressions, durations,
recipients, URLs, unique names) and reports every problem it finds at once. Relative
paths in the file are taken relative to the file's own directory.

One module per concern: ``schema`` (the structs, and the decode hook that types durations,
sizes and schedules once), ``loading`` (finding and reading the file, the two passes),
``messages`` (msgspec's errors said the way the user wrote the file), ``checks`` and
``clashes`` (the meaning pass). What the rest of emberkeep uses is re-exported here.

msgspec rather than pydantic: a CLI started by cron pays the import on every run, and
pydantic's cost 0.2 s and 23 MB of RSS there; msgspec's is a few milliseconds.
"""

from __future__ import annotations

from .loading import DEFAULT_PATHS, find_config, load, parse
from .schema import (
    NAME,
    Check,
    Config,
    Count,
    Drill,
    Email,
    FilesSource,
    GitSource,
    Keys,
    LabelledRecipient,
    MongoSource,
    Monitor,
    Name,
    Notify,
    Objectives,
    Pitr,
    Prune,
    Replicate,
    Retention,
    Runbook,
    Site,
    SiteObjectives,
    Source,
    SourceConfig,
    SourceHooks,
    Target,
    Web,
)
from .sources import decoded_config, register_source_type, source_types, unregister_source_type

__all__ = [
    "DEFAULT_PATHS",
    "NAME",
    "Check",
    "Config",
    "Count",
    "Drill",
    "Email",
    "FilesSource",
    "GitSource",
    "Keys",
    "LabelledRecipient",
    "MongoSource",
    "Monitor",
    "Name",
    "Notify",
    "Objectives",
    "Pitr",
    "Prune",
    "Replicate",
    "Retention",
    "Runbook",
    "Site",
    "SiteObjectives",
    "Source",
    "SourceConfig",
    "SourceHooks",
    "Target",
    "Web",
    "decoded_config",
    "find_config",
    "load",
    "parse",
    "register_source_type",
    "source_types",
    "unregister_source_type",
]
