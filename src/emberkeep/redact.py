"""Secrets out of what we show: URLs with their password replaced by ``***``."""

from __future__ import annotations

import re

# scheme://user:password@host[,host2...] -- the password runs to the last "@" before the path
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^/]*@")


def redact_url(url: str) -> str:
    """The URL with any password in its user info replaced, for messages and logs.

    Works on URLs ``urllib`` cannot parse too, such as a MongoDB seed list
    (``mongodb://u:p@h1:27017,h2:27017/``).
    """
    return _USERINFO.sub(r"\g<head>:***@", url, count=1)
