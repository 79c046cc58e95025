"""The errors a user can meet, each with the exit status the CLI gives it.

Every message names the thing that is wrong and what to do about it; the CLI prints
the message alone (no traceback) for any ``EmberkeepError``.
"""

from __future__ import annotations


class EmberkeepError(Exception):
    """A failure the user can act on. ``exit_code`` follows DESIGN.md: 1 failure, 2 usage."""

    exit_code = 1


class UsageError(EmberkeepError):
    """Bad arguments or a bad config file."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file is missing, unparsable or invalid."""


class IdentityRequired(EmberkeepError):
    """An operation needs to decrypt data but this host holds only the writer key."""


class WrongIdentity(EmberkeepError):
    """The identity given is not one of the repository's recipients."""


class IntegrityError(EmberkeepError):
    """An object in the repository is damaged: its hash or authentication tag is wrong."""

    def __init__(self, obj: str, detail: str) -> None:
        super().__init__(f"{obj}: {detail}")
        self.obj = obj
        self.detail = detail


class RepositoryError(EmberkeepError):
    """The repository is missing, of another site, or in an unexpected state."""


class LockedError(EmberkeepError):
    """Another process holds the exclusive lease."""


class StorageError(EmberkeepError):
    """A backend could not read or write an object."""


class StorageFull(StorageError):
    """The target has no space left."""


class NotFound(StorageError):
    """An object that should exist does not."""


class AlreadyExists(StorageError):
    """A create-only write found the name taken."""
