"""Config values are typed once, when the config is read (CONTRIBUTING.md, "Code").

Durations, sizes and schedules arrive as ``Duration``, ``Size`` and ``Cron``: strings as the
user wrote them, carrying their parsed value, so no reader parses the text again. The last
test keeps it so: parsing functions are called only at the edges that read user text.
"""

from __future__ import annotations

import ast
import pickle
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from emberkeep import config
from emberkeep.cron import Cron
from emberkeep.durations import Duration
from emberkeep.errors import ConfigError
from emberkeep.sizes import Size

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

BASE = f"""
[site]
name = "shop"
state_dir = "state"

[keys]
recipients = ["{RECIPIENT}"]

[[targets]]
name = "local"
url = "file:///tmp/emberkeep-typed"
"""


def parsed(text: str, tmp_path: Path) -> config.Config:
    return config.parse(tomllib.loads(text), tmp_path / "emberkeep.toml")


def test_durations_sizes_and_schedules_are_typed_when_read(tmp_path: Path) -> None:
    cfg = parsed(
        BASE
        + """
[monitor]
grace = "90m"
min_free = "2GiB"

[prune]
schedule = "@weekly"

[[sources]]
type = "files"
name = "etc"
paths = ["/etc/hostname"]
schedule = "30 2 * * *"
objectives = { rpo = "1h30m", rto = "15m" }
hooks = { timeout = "45s" }
""",
        tmp_path,
    )
    assert isinstance(cfg.monitor.grace, Duration) and cfg.monitor.grace.delta == timedelta(
        minutes=90
    )
    assert isinstance(cfg.monitor.min_free, Size) and cfg.monitor.min_free.bytes == 2 << 30
    assert isinstance(cfg.prune.schedule, Cron) and cfg.prune.schedule.expr == "0 0 * * 0"
    source = cfg.sources[0]
    assert isinstance(source.schedule, Cron) and source.schedule.expr == "30 2 * * *"
    assert source.objectives is not None and source.objectives.rpo_delta == timedelta(
        hours=1, minutes=30
    )
    assert source.hooks is not None and source.hooks.timeout.seconds == 45.0
    # defaults are typed too, and each still reads as the text the user would write
    assert isinstance(cfg.notify, type(None))
    assert isinstance(cfg.monitor.journal_keep, Duration)
    assert cfg.monitor.journal_keep == "365d" and cfg.monitor.journal_keep.delta.days == 365
    assert cfg.prune.grace.delta == timedelta(hours=1)


def test_every_bad_value_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parsed(
            BASE
            + """
[monitor]
grace = "soon"
min_free = "lots"

[prune]
schedule = "every day"
""",
            tmp_path,
        )
    message = str(caught.value)
    assert "monitor.grace: 'soon' is not a duration" in message
    assert "monitor.min_free: 'lots' is not a size" in message
    assert "prune.schedule: 'every day' is not a cron schedule" in message


def test_a_value_that_did_not_parse_refuses_to_be_read() -> None:
    bad = Duration("soon")
    assert bad.problem is not None and bad == "soon"
    with pytest.raises(ValueError, match="not a duration"):
        _ = bad.delta
    with pytest.raises(ValueError, match="not a size"):
        _ = Size("lots").bytes
    with pytest.raises(ValueError, match="not a cron schedule"):
        _ = Cron("0 2 * *").expr


def test_typed_values_survive_pickling() -> None:
    """Worker processes receive config values pickled: the parsed value comes along."""
    for value, read in (
        (Duration("1h30m"), lambda v: v.delta),
        (Size("10GiB"), lambda v: v.bytes),
        (Cron("@daily"), lambda v: v.expr),
    ):
        copy = pickle.loads(pickle.dumps(value))
        assert type(copy) is type(value) and copy == value and read(copy) == read(value)


# Where text typed by a person is parsed: the types themselves, clock.since (`log --since`,
# the dashboard's filter) and the target URL's query options (storage/urlquery.py).
EDGES = {
    "parse_duration": {"durations.py", "clock.py", "storage/urlquery.py"},
    "parse_size": {"sizes.py"},
}


def test_config_values_are_not_parsed_again() -> None:
    package = Path(config.__file__).resolve().parent
    found: dict[str, set[str]] = {name: set() for name in EDGES}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in found:
                    found[name].add(path.relative_to(package).as_posix())
    for name, where in found.items():
        assert where <= EDGES[name], (
            f"{name} called in {sorted(where - EDGES[name])}: use the config's typed value"
        )
