"""GFS retention: which snapshots of each source a target keeps.

The rules are restic's ``forget --keep-*`` (and borg's ``prune``, except that in
borg a snapshot kept by one rule does not count toward the next), applied to each
source's snapshots on their own, with periods in UTC:

- ``within = "2d"`` keeps every snapshot strictly newer than ``now - 2d``.
- ``hourly/daily/weekly/monthly/yearly = N``: walk the source's snapshots newest
  first; a snapshot whose hour / day / ISO week (ISO year and week number) / month /
  year differs from those of the snapshots before it (the newer ones) starts a period and
  is kept, until N periods are kept. So the rule keeps the newest snapshot of each of
  the N most recent periods *that have snapshots*, counting back from the newest
  snapshot (periods without a snapshot are skipped, not counted). "Newest" is the order
  the snapshots were written in (``seq``, repository/snapshot.py), which is the order of
  their times unless a clock was wrong: after a clock stepped back, the snapshot written
  last is still the one kept, and a period is counted once.
- A snapshot dated more than a day after ``now`` (a wrong clock, or a forged header)
  counts for no rule until then: it takes no period from a real snapshot, and it is kept
  (``"dated in the future …"``), since it may hold real data.
- When a count rule runs out of snapshots before it has kept N, it also keeps the
  source's oldest snapshot (as restic does since 0.17): a history still growing toward
  N periods is not cut short at its start.
- The rules are independent: a snapshot kept by several is kept once, and its reason
  names each, with its place in the rule's count: ``"daily 3/14, monthly 1/12"``
  (``"monthly 4/12 (oldest)"``, ``"within 2d"``).
- A source with no ``retention`` (or one that sets no rule) keeps everything:
  ``"no retention policy"``. Snapshots of a source the config no longer names are kept:
  ``"source not in config"`` (a removed config line never deletes data).
- A mongodb source's oplog slices (source ``<name>@oplog``, sources/mongodb/pitr.py) follow
  the base snapshots they extend: a slice is kept while it ends after the point of the
  oldest kept base of ``<name>`` (``"extends a kept base"``); the older ones are removed,
  since no kept base can be brought forward through them. With no kept point-in-time base
  (or no policy for ``<name>``), every slice is kept.
- Only ``within`` can leave a source with nothing kept (its newest snapshot older than
  the age, say after backups stopped); then the newest snapshot is kept anyway.
- Tags (restic's ``--keep-tag``): a snapshot carrying one of the source's ``keep_tags``
  (or of ``prune --keep-tag``) is kept (``"tag before-upgrade"``) as long as it has it; any
  tagged snapshot (``backup --tag``) is kept while younger than ``[prune] keep_tagged``
  (default 30 days: ``"tagged, within 30d"``), so a snapshot taken before an upgrade is
  not removed by the next nightly prune.

Snapshots not in the result are removed by prune.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..durations import format_duration
from ..repository.snapshot import FUTURE_TOLERANCE, is_future, written_order

if TYPE_CHECKING:
    from ..config import Config, Retention
    from ..repository.snapshot import Snapshot

Period = tuple[int, ...]

# The count rules, in the order their reasons are listed.
COUNT_RULES: tuple[tuple[str, Callable[[datetime], Period]], ...] = (
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: tuple(t.isocalendar()[:2])),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
)
NO_POLICY = "no retention policy"
SLICE_SUFFIX = "@oplog"  # sources/mongodb/pitr.py: a source's oplog slices
SLICE_TYPE = "mongodb-oplog"
SLICE_EXTENDS = "oplog slice: extends a kept base"
SLICES_KEPT = "oplog slice: no kept point-in-time base to follow, kept"
NOT_IN_CONFIG = "source not in config"
NEWEST_KEPT = "newest of its source (kept although no rule keeps it)"
FUTURE = (
    f"dated in the future (more than {format_duration(FUTURE_TOLERANCE)} after now): counted "
    "for no rule until then, kept"
)


def keep(
    snapshots: Sequence[Snapshot],
    now: datetime,
    policies: Mapping[str, Retention | None],
    *,
    keep_tags: Collection[str] = (),
    keep_tagged: timedelta | None = None,
) -> dict[str, str]:
    """{snapshot id: why it is kept} for every snapshot retention keeps.

    ``policies`` maps each source the config names to its retention (None: none set);
    snapshots of sources missing from it are kept. ``keep_tags`` (every source) and
    ``keep_tagged`` (how long any tagged snapshot is kept): module docstring.
    """
    kept = _keep_rules(snapshots, now, policies)
    for snapshot in snapshots:
        policy = policies.get(snapshot.source)
        wanted = {*keep_tags, *(policy.keep_tags if policy else ())}
        why = [f"tag {t}" for t in snapshot.tags if t in wanted]
        recent = keep_tagged is not None and snapshot.time > now - keep_tagged
        if not why and snapshot.tags and recent:
            assert keep_tagged is not None
            why.append(f"tagged, within {format_duration(keep_tagged)}")
        if why:
            earlier = kept.get(snapshot.id)
            kept[snapshot.id] = ", ".join([*([earlier] if earlier else []), *why])
    return kept


def _keep_rules(
    snapshots: Sequence[Snapshot], now: datetime, policies: Mapping[str, Retention | None]
) -> dict[str, str]:
    kept: dict[str, str] = {}
    slices: dict[str, list[Snapshot]] = {}
    for source, group in _by_source(snapshots).items():
        base = source.removesuffix(SLICE_SUFFIX)
        if base != source and base in policies and all(s.source_type == SLICE_TYPE for s in group):
            slices[base] = group
            continue
        if source not in policies:
            kept.update(dict.fromkeys((s.id for s in group), NOT_IN_CONFIG))
            continue
        policy = policies[source]
        if policy is None or not has_rule(policy):
            kept.update(dict.fromkeys((s.id for s in group), NO_POLICY))
            continue
        kept.update(keep_source(group, now, policy))
    for base, group in slices.items():
        kept.update(_keep_slices(group, [s for s in snapshots if s.source == base], kept))
    return kept


def _keep_slices(
    group: Sequence[Snapshot], bases: Sequence[Snapshot], kept: Mapping[str, str]
) -> dict[str, str]:
    """The slices that extend a kept base (module docstring)."""
    points = [p for s in bases if s.id in kept and (p := _point(s.extra, "mongodb", "oplog_end"))]
    if not points:
        return dict.fromkeys((s.id for s in group), SLICES_KEPT)
    oldest = min(points)
    return {
        s.id: SLICE_EXTENDS
        for s in group
        if (end := _point(s.extra, "pitr", "end")) is None or end > oldest
    }


def _point(extra: Any, section: str, key: str) -> tuple[int, int] | None:
    """An oplog point ``{t, i}`` of a header's ``extra``; None when there is none."""
    part = extra.get(section) if isinstance(extra, dict) else None
    value = part.get(key) if isinstance(part, dict) else None
    if not isinstance(value, dict):
        return None
    try:
        return (int(value["t"]), int(value["i"]))
    except (KeyError, TypeError, ValueError):
        return None


def keep_source(snapshots: Sequence[Snapshot], now: datetime, policy: Retention) -> dict[str, str]:
    """The snapshots of one source that ``policy`` keeps, with the rules that keep each."""
    future = {s.id: FUTURE for s in snapshots if is_future(s, now)}
    newest_first = sorted(
        (s for s in snapshots if s.id not in future), key=written_order, reverse=True
    )
    reasons: dict[str, list[str]] = {s.id: [] for s in newest_first}
    if policy.within:
        cutoff = now - policy.within.delta
        for snapshot in newest_first:
            if snapshot.time > cutoff:
                reasons[snapshot.id].append(f"within {policy.within}")
    for name, period in COUNT_RULES:
        for snapshot, place in _count_rule(newest_first, period, getattr(policy, name)):
            reasons[snapshot.id].append(f"{name} {place}")
    kept = {sid: ", ".join(why) for sid, why in reasons.items() if why}
    if newest_first and not kept:
        kept[newest_first[0].id] = NEWEST_KEPT
    return {**kept, **future}


def has_rule(policy: Retention) -> bool:
    """Whether the policy sets any rule (an empty one would keep nothing: it keeps all)."""
    return bool(policy.within) or any(getattr(policy, name) for name, _ in COUNT_RULES)


def _count_rule(
    newest_first: Sequence[Snapshot], period: Callable[[datetime], Period], count: int
) -> Iterator[tuple[Snapshot, str]]:
    """The newest snapshot of each of the ``count`` newest periods, then maybe the oldest."""
    if count <= 0 or not newest_first:
        return
    counted: set[Period] = set()
    oldest = newest_first[-1]
    for snapshot in newest_first:
        current = period(_utc(snapshot.time))
        if current not in counted:
            counted.add(current)
            yield snapshot, f"{len(counted)}/{count}"
            if len(counted) == count:
                return
            if snapshot is oldest:
                return
    yield oldest, f"{len(counted) + 1}/{count} (oldest)"


def period_of(rule: str, moment: datetime) -> Period:
    """The period of ``moment`` (in UTC) that the count rule ``rule`` counts: "monthly" its
    year and month, "weekly" its ISO year and week. Periods compare in time order."""
    return dict(COUNT_RULES)[rule](_utc(moment))


def ended_period_newest(rule: str, snapshots: Sequence[Snapshot], now: datetime) -> set[str]:
    """Ids of the snapshots the count rule ``rule`` keeps for periods that have ended.

    Of each source, the newest (written order, as ``keep``) of each period, once that period
    has ended: a snapshot of the source written after it lies in a later period, or ``now``
    is in a later period (the period ended by the clock, with no backup since). That is the
    snapshot ``rule`` keeps for the period from then on: a ``copies = "weekly"`` or
    ``"monthly"`` target takes it (runner/replicate.py). A snapshot dated in the future
    counts for nothing, as for ``keep``.
    """
    out: set[str] = set()
    current = period_of(rule, now)
    for group in _by_source(snapshots).values():
        present = (s for s in group if not is_future(s, now))
        later: Period | None = None  # the latest period of the snapshots written after
        counted: set[Period] = set()
        for snapshot in sorted(present, key=written_order, reverse=True):
            mine = period_of(rule, snapshot.time)
            if mine not in counted:
                counted.add(mine)
                if mine < current or (later is not None and later > mine):
                    out.add(snapshot.id)
            later = mine if later is None else max(later, mine)
    return out


def _by_source(snapshots: Sequence[Snapshot]) -> dict[str, list[Snapshot]]:
    groups: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        groups.setdefault(snapshot.source, []).append(snapshot)
    return groups


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def keep_in_target(
    config: Config,
    target: str,
    snapshots: list[Snapshot],
    now: datetime,
    keep_tags: Collection[str] = (),
) -> dict[str, str]:
    """What ``target``'s retention keeps, with the site's tag rules: the one decision that
    prune makes and that replicate and status predict."""
    tagged = config.prune.keep_tagged
    return keep(
        snapshots, now, config.retention(target), keep_tags=keep_tags,
        keep_tagged=tagged.delta if tagged else None,
    )  # fmt: skip
