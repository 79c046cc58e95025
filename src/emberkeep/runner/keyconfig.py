"""The config's ``[keys] recipients`` line after a key change (``rekey.py``).

``keys add`` and ``keys remove`` change each target's record; the config must then name
the same keys (repository/recipients.py). This writes that line (``--update-config``) or
prints it, in the labelled form where a recipient has a label:
``recipients = [{ key = "age1…", label = "dba" }, "age1…"]``. The labels written are the
repository's (the source of truth), and the config's own for a key the repository keeps
none for.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

from .. import keys
from ..errors import UsageError
from ..fsutil import write_atomic
from ..site import Site

_RECIPIENTS_LINE = re.compile(r"(?ms)^(\s*recipients\s*=\s*)\[[^\]]*\]")


def merged_labels(site: Site, recipients: list[str], labels: dict[str, str]) -> dict[str, str]:
    """``labels`` (the record's), with the config's for the other keys of ``recipients``."""
    ours = {k: v for k, v in site.labels.items() if k in recipients and k not in labels}
    taken = set(labels.values())
    return {**{k: v for k, v in ours.items() if v not in taken}, **labels}


def _listed(recipients: list[str], labels: dict[str, str]) -> str:
    items = [
        f"{{ key = {json.dumps(r)}, label = {json.dumps(labels[r])} }}"
        if r in labels
        else json.dumps(r)
        for r in recipients
    ]
    return "[" + ", ".join(items) + "]"


def config_line(recipients: list[str], labels: dict[str, str] | None = None) -> str:
    return f"recipients = {_listed(recipients, labels or {})}"


def names_them(site: Site, recipients: list[str], labels: dict[str, str]) -> bool:
    """Whether the config's ``[keys] recipients`` are ``recipients`` with ``labels``."""
    return sorted(str(r) for r in site.recipients) == sorted(recipients) and site.labels == {
        k: v for k, v in labels.items() if k in recipients
    }


def update_config(site: Site, recipients: list[str], labels: dict[str, str] | None = None) -> bool:
    """Rewrite ``[keys] recipients`` in the config file; False when it already names them.
    A config whose line this cannot find is a ``UsageError`` saying what to write."""
    labels = labels or {}
    path = site.config.path
    line = config_line(recipients, labels)
    if path is None:
        raise UsageError("no config file to update; put " + line + " in it")
    if names_them(site, recipients, labels):
        return False
    text = path.read_text()
    section = re.search(r"(?m)^\[keys\]\s*$", text)
    end = re.search(r"(?m)^\[", text[section.end() :]) if section else None
    stop = section.end() + end.start() if section and end else len(text)
    body = text[section.end() : stop] if section else ""
    if section is None or not _RECIPIENTS_LINE.search(body):
        raise UsageError(
            f"cannot find the recipients line of [keys] in {path}; write it yourself: " + line
        )
    listed = _listed(recipients, labels)
    new_body = _RECIPIENTS_LINE.sub(lambda m: m.group(1) + listed, body, count=1)
    mode = path.stat().st_mode & 0o777
    write_atomic(path, (text[: section.end()] + new_body + text[stop:]).encode(), mode=mode)
    return True


def store_site_config(site: Site, target: str | None = None) -> None:
    """The config file, naming the new recipients, stored in every target for ``recover``
    (repository/siteconfig.py): the ones stored before are encrypted to the recipients of
    their day, so a new recipient could not read them."""
    from .. import clock
    from ..repository import siteconfig

    path = site.config.path
    if path is None:
        return
    for name in site.target_names(target):
        repo = site.repository(name, read=True)
        # Stored configs are dated to the second and recover takes the newest: this one
        # must come after the config stored by a backup a moment ago.
        found = siteconfig.load_all(repo.storage, repo.identities, repo.writer_key, repo.chain)
        newest = max((c.time for c in found.configs), default=None)
        when = clock.now().replace(microsecond=0)
        if newest is not None and when <= newest:
            when = newest + timedelta(seconds=1)
        stored = siteconfig.StoredConfig(str(path), when, path.read_text())
        recipients = keys.parse_recipients(sorted(site.config.keys.recipient_keys))
        siteconfig.store(repo.storage, repo.writer_key, recipients, stored, again=True)
