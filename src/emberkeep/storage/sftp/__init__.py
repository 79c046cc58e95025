"""sftp:// targets: one file per object on an SSH server, written temp -> fsync -> rename.

URL: ``sftp://[user@]host[:port]/path[?key=FILE&known_hosts=FILE&timeout=SECONDS&ssh=CLIENT
&ssh_config=FILE]``. The path is absolute on the server; ``/~/path`` is relative to the user's
home folder. ``timeout`` is from 1 to 3600 seconds (default 30).

- **The SSH client** (``ssh=``): ``openssh`` runs the user's ``ssh -s sftp`` per session
  (``openssh_client``; the user's ssh config applies, or ``ssh_config=FILE``), the default
  where ``ssh`` is on PATH; ``paramiko`` connects in Python (``paramiko_client``). The same
  request layer, pool and errors serve both (README "sftp targets").

- **Authentication** is by key only: the SSH agent and the keys in ``~/.ssh`` (or the ssh
  config's), or only the key file given with ``key``. The server's host key must already be in
  known_hosts (``~/.ssh/known_hosts``, or the file given with ``known_hosts``): an unknown or
  changed key is refused, never learnt.
- **Create-only writes** rename the fsynced temp file with the plain SFTP rename, which OpenSSH's
  server makes atomic and refusing to replace an existing name (it hard-links the new name, then
  unlinks the temp one). Overwrites use ``posix-rename@openssh.com`` where the server offers it;
  elsewhere they remove, then rename (not atomic). Files are fsynced with ``fsync@openssh.com``
  where offered; SFTP has no way to fsync a directory, so a rename is as durable as the server's
  file system makes it.
- **Concurrency** (``pool``): up to ``CHANNELS`` SFTP sessions, one per caller at a time,
  because a paramiko SFTP session serves one waiting caller at a time.
- **Pipelining** (``protocol``): reads and writes keep ``IN_FLIGHT`` bytes of requests in
  flight, checking the status of every write.
- **Failures** (``pool``): every call has ``timeout``; a dropped connection is reopened and the
  call tried again, up to ``ATTEMPTS`` times. A create-only write tried again may find the name
  taken by its own first try (the rename was done, its reply lost): when the file there is the
  one being written (``base.holds_written``: same size, and the name is the SHA-256 of the
  bytes or the bytes are equal) the write succeeded; another file there stays
  ``AlreadyExists``. Every other call is idempotent as it is (reads, listings, deletes of a
  missing name, overwrites).

The modules: ``location`` (the URL), ``session`` and ``protocol`` (the SFTP request layer),
``pool`` (sessions and retries), ``paramiko_client`` and ``openssh_client`` (the SSH
clients), ``failures`` (the errors), ``backend`` (the storage interface).
"""

from __future__ import annotations

from .backend import SftpStorage
from .location import SftpLocation

__all__ = ["SftpLocation", "SftpStorage"]
