"""Text from the config that carries its parsed value: the base of ``Duration``, ``Size``
and ``Cron`` (CONTRIBUTING.md: values are typed once at the edge).

A ``TypedText`` is a ``str``, so it prints, compares and goes into JSON as the user wrote
it; its value is parsed once, when it is made. Text that does not parse keeps its
``problem`` instead of raising, so the config check reports it beside every other problem at
once; reading its value then raises (a config with a problem is never handed out by
``config.load``).
"""

from __future__ import annotations

from typing import Generic, Self, TypeVar

T = TypeVar("T")


class TypedText(str, Generic[T]):
    _value: T | None
    problem: str | None

    @staticmethod
    def parse(text: str) -> T:
        """The value of ``text``; ValueError saying what is wrong and how to write it."""
        raise NotImplementedError

    def __new__(cls, text: str) -> Self:
        made = super().__new__(cls, text)
        try:
            made._value, made.problem = cls.parse(text), None
        except ValueError as exc:
            made._value, made.problem = None, str(exc)
        return made

    def value(self) -> T:
        """The parsed value; ValueError with the problem when the text did not parse."""
        if self.problem is not None:
            raise ValueError(self.problem)
        return self._value  # type: ignore[return-value]  # set whenever problem is None
