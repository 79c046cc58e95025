"""Cron schedules as people write them in config: five fields, or ``@daily`` and its kin.

``Cron`` is the config's type for a schedule: checked once when the config is read, with
its aliases expanded (``expr``), so the scheduler, ``schedule --print`` and the clash check
read the expression instead of parsing the text again. croniter is imported only when a
schedule is read (the CLI starts from cron often; most commands read none).
"""

from __future__ import annotations

SCHEDULE_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


class Cron(str):
    """A schedule as written (``"@daily"``, ``"0 2 * * *"``); ``expr`` its five fields.

    Like ``durations.Duration``: a ``str`` that keeps a ``problem`` for the config check
    rather than raising, and whose ``expr`` refuses to be read when it has one.
    """

    _expr: str | None
    problem: str | None

    def __new__(cls, text: str) -> Cron:
        value = super().__new__(cls, text)
        value._expr, value.problem = _parsed(text)
        return value

    @property
    def expr(self) -> str:
        if self._expr is None:
            raise ValueError(self.problem)
        return self._expr


def _parsed(text: str) -> tuple[str | None, str | None]:
    """(the five-field expression, None), or (None, what is wrong and how to write it)."""
    from croniter import croniter

    expr = SCHEDULE_ALIASES.get(text.strip(), text.strip())
    fields = expr.split()
    if len(fields) == 5 and croniter.is_valid(expr):
        return expr, None
    why = (
        "a field is out of range or not cron syntax (minute 0-59, hour 0-23, day 1-31, "
        "month 1-12, weekday 0-7)"
        if len(fields) == 5
        else f"it has {len(fields)} fields where cron has five fields (minute hour day "
        "month weekday)"
    )
    return None, (
        f"{text!r} is not a cron schedule: {why}; write it like '0 2 * * *', or use "
        "@hourly/@daily/@weekly/@monthly"
    )
