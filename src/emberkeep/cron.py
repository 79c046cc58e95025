"""Cron schedules as people write them in config: five fields, or ``@daily`` and its kin.

``Cron`` is the config's type for a schedule: checked once when the config is read, with
its aliases expanded (``expr``), so the scheduler, ``schedule --print`` and the clash check
read the expression instead of parsing the text again. croniter is imported only when a
schedule is read (the CLI starts from cron often; most commands read none).
"""

from __future__ import annotations

from .typedtext import TypedText

SCHEDULE_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


class Cron(TypedText[str]):
    """A schedule as written (``"@daily"``, ``"0 2 * * *"``); ``expr`` its five fields, the
    alias expanded (typedtext.py)."""

    @staticmethod
    def parse(text: str) -> str:
        return five_fields(text)

    @property
    def expr(self) -> str:
        return self.value()


def five_fields(text: str) -> str:
    """The five-field expression of ``text``; ValueError saying what is wrong and how to
    write it."""
    from croniter import croniter

    expr = SCHEDULE_ALIASES.get(text.strip(), text.strip())
    fields = expr.split()
    if len(fields) == 5 and croniter.is_valid(expr):
        return expr
    why = (
        "a field is out of range or not cron syntax (minute 0-59, hour 0-23, day 1-31, "
        "month 1-12, weekday 0-7)"
        if len(fields) == 5
        else f"it has {len(fields)} fields where cron has five fields (minute hour day "
        "month weekday)"
    )
    raise ValueError(
        f"{text!r} is not a cron schedule: {why}; write it like '0 2 * * *', or use "
        "@hourly/@daily/@weekly/@monthly"
    )
