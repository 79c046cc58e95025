"""Secrets out of what we show: passwords and tokens in URLs, and age identities.

``redact_url`` is for a value known to be a URL (a target, a MongoDB URI, a mirror);
``redact_text`` for any text that may hold some (a config error, a tool's stderr).
"""

from __future__ import annotations

import re

HIDDEN = "***"

# scheme://userinfo@rest. The user info runs to the *last* "@": a password may hold an
# unescaped "/", "?", "#" or "@" (drivers reject such a URI, and their error must not show
# it). An "@" later in a path or query makes more of the URL hidden, never less.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*)@", re.S)
# http(s) user info without a password is a token (https://TOKEN@github.com/...)
_TOKEN_AS_USER = ("http", "https")
# the value of a query parameter whose name says it is secret (not sftp's ?key=FILE)
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;][^=&;#]*"
    r"(?:pass|pwd|token|secret|sig|credential|api_?key|access_?key|authmechanismproperties)"
    r"[^=&;#]*=)[^&;#\s'\"]*",
    re.I,
)
# a URL inside free text: up to white space or a quote
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# an age identity (bech32, which is case-insensitive)
_IDENTITY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]*", re.I)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its user info; the user and the password as written (still %-escaped).

    ``(url, None, None)`` when there is none.
    """
    match = _USERINFO.match(url)
    if match is None:
        return url, None, None
    user, colon, password = match["userinfo"].partition(":")
    return match["scheme"] + url[match.end() :], user, password if colon else None


def redact_url(url: str) -> str:
    """The URL with its password (or a token given as the user) and secret query values
    replaced by ``***``, for messages and logs.

    Works on URLs ``urllib`` cannot parse too, such as a MongoDB seed list
    (``mongodb://u:p@h1:27017,h2:27017/``).
    """
    bare, user, password = split_userinfo(url)
    bare = _SECRET_PARAM.sub(rf"\g<name>{HIDDEN}", bare)
    if user is None:
        return bare
    scheme, rest = bare.split("://", 1)
    if password is not None:
        user += f":{HIDDEN}"
    elif scheme.lower() in _TOKEN_AS_USER:
        user = HIDDEN
    return f"{scheme}://{user}@{rest}"


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through ``redact_url`` and every age identity
    cut to its prefix."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)
    return _IDENTITY.sub(lambda m: m[0][:16] + "…", text)


def looks_like_identity(text: str) -> bool:
    """Whether ``text`` holds an age identity (a secret key)."""
    return _IDENTITY.search(text) is not None
