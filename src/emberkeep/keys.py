"""Keys (docs/design.md, "Keys").

- An *identity* (age X25519, ``AGE-SECRET-KEY-1…``) reads backups; it is held offline.
- The *writer key* lives on backup hosts. It holds the chunk-id MAC key, the chunker
  seed and the index key: enough to write and deduplicate, never to read old data,
  because every pack's data key is wrapped to the recipients and then forgotten.
- ``keys rotate --writer`` makes generation N+1 of the writer key; it carries the keys it
  replaced (``retired``, oldest first), so the host and readers still open what the old
  ones sealed, and the repository id of the first (docs/design.md, "Writer key rotation").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import pyrage

from .errors import IntegrityError, UsageError, WrongIdentity
from .fsutil import write_atomic
from .redact import looks_like_identity

WRITER_KEY_VERSION = 1


@dataclass(frozen=True)
class WriterKey:
    mac_key: bytes  # 32 bytes, keys BLAKE3 for chunk ids
    index_key: bytes  # 32 bytes, AES-256-GCM for index files, snapshot headers, pack tables
    chunker_seed: int  # seeds the FastCDC gear table so chunk boundaries leak nothing
    generation: int = 1  # 1 + how many times ``keys rotate --writer`` replaced it
    retired: tuple[WriterKey, ...] = ()  # the generations before, oldest first

    @classmethod
    def generate(cls) -> WriterKey:
        return cls(
            mac_key=secrets.token_bytes(32),
            index_key=secrets.token_bytes(32),
            chunker_seed=secrets.randbelow(2**31 - 1) + 1,
        )

    @property
    def repo_id(self) -> str:
        """A public name for the key: which repositories it belongs to (the first
        generation's, so a rotation keeps the repository's name)."""
        first = self.retired[0] if self.retired else self
        return hashlib.sha256(b"emberkeep-repo-id" + first.mac_key).hexdigest()[:32]

    def rotated(self) -> WriterKey:
        """The next generation: new MAC key, index key and chunker seed (nothing written
        before deduplicates against it), this one retired."""
        fresh = WriterKey.generate()
        mine = replace(self, retired=())
        return replace(fresh, generation=self.generation + 1, retired=(*self.retired, mine))

    def generation_of(self, fingerprint: str) -> WriterKey | None:
        """This key or the retired one with ``fingerprint``."""
        for key in (self, *self.retired):
            if hmac.compare_digest(key.fingerprint, fingerprint):
                return key
        return None

    def without_chain(self) -> WriterKey:
        return replace(self, retired=())

    @property
    def fingerprint(self) -> str:
        """A public digest of the whole key (all three parts), printed by ``recover`` and the
        runbook so an operator can tell this key from any other; also stored with the key
        so a damaged copy is told from a valid one."""
        seed = self.chunker_seed.to_bytes(8, "big")
        digest = hashlib.sha256(b"emberkeep-writer-key\0" + self.mac_key + self.index_key + seed)
        return digest.hexdigest()[:32]

    def _fields(self) -> dict[str, object]:
        return {
            "version": WRITER_KEY_VERSION,
            "mac_key": base64.b64encode(self.mac_key).decode(),
            "index_key": base64.b64encode(self.index_key).decode(),
            "chunker_seed": self.chunker_seed,
            "fingerprint": self.fingerprint,
        }

    def to_bytes(self) -> bytes:
        """The key as stored; a first generation exactly as before rotation existed (an
        older emberkeep reads it), a later one with its generation and the retired keys."""
        fields = self._fields()
        if self.generation > 1:
            fields["generation"] = self.generation
            fields["retired"] = [{**k._fields(), "generation": k.generation} for k in self.retired]
        return json.dumps(fields).encode()

    @classmethod
    def from_bytes(cls, data: bytes, origin: str) -> WriterKey:
        """The key in ``data``; one written with a fingerprint must match it (a key written
        before fingerprints has none and is taken as it is)."""
        try:
            raw = json.loads(data)
            key = cls._from_fields(raw, origin)
            retired = tuple(cls._from_fields(r, origin) for r in raw.get("retired", []))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # OverflowError: a number field of Infinity (``int(float("inf"))``)
            raise UsageError(f"{origin} is not an emberkeep writer key (damaged?)") from exc
        numbers = [k.generation for k in (*retired, key)]
        if numbers != list(range(1, len(numbers) + 1)):
            raise UsageError(
                f"{origin} is damaged: its writer key generations are {numbers}, not 1, 2, …"
            )
        return replace(key, retired=retired)

    @classmethod
    def _from_fields(cls, raw: dict[str, object], origin: str) -> WriterKey:
        key = cls(
            mac_key=base64.b64decode(str(raw["mac_key"]), validate=True),
            index_key=base64.b64decode(str(raw["index_key"]), validate=True),
            chunker_seed=int(raw["chunker_seed"]),  # type: ignore[call-overload]
            generation=int(raw.get("generation", 1)),  # type: ignore[call-overload]
        )
        recorded = raw.get("fingerprint")
        if len(key.mac_key) != 32 or len(key.index_key) != 32:
            raise UsageError(f"{origin} is not an emberkeep writer key (damaged?)")
        if recorded is not None and not hmac.compare_digest(str(recorded), key.fingerprint):
            raise UsageError(f"{origin} is damaged: its keys do not match its fingerprint")
        return key

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_bytes(), mode=0o600)

    @classmethod
    def load(cls, path: Path) -> WriterKey:
        """The host's copy (``state_dir/writer.key``). A damaged one is an error that says
        how it is rebuilt; one written before fingerprints is saved again with one."""
        rebuild = (
            f"delete {path} and run the command again with an identity (--identity FILE or "
            "keys.identity_file): it is rebuilt from the repository's copy (keys/writer.age)"
        )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the writer key {path} ({exc.strerror})") from exc
        try:
            key = cls.from_bytes(data, str(path))
        except UsageError as exc:
            raise UsageError(f"{exc}; {rebuild}") from exc
        if b'"fingerprint"' not in data:
            key.save(path)  # from before fingerprints: from now on damage is told apart
        return key


def new_identity() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


def write_identity(
    path: Path, identity: pyrage.x25519.Identity, passphrase: str | None = None
) -> None:
    """Write the identity file (0600). With a ``passphrase`` it is an age file encrypted
    with it (scrypt), the form the stock ``age`` CLI reads (``age -d FILE``)."""
    if path.exists():
        raise UsageError(
            f"{path} already exists; choose another file with -o (never overwrite a key)"
        )
    recipient = identity.to_public()
    text = f"# emberkeep identity\n# recipient: {recipient}\n{identity}\n".encode()
    if passphrase is not None:
        text = pyrage.passphrase.encrypt(text, passphrase)
    write_atomic(path, text, mode=0o600, exclusive=True)


PASSPHRASE_FILE_ENV = "EMBERKEEP_IDENTITY_PASSPHRASE_FILE"
_AGE_HEADERS = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")


def read_passphrase(path: Path | None, what: str, *, confirm: bool = False) -> str:
    """A passphrase from ``path`` (its first line), else from the file named by
    ``EMBERKEEP_IDENTITY_PASSPHRASE_FILE``, else asked on the terminal; never from argv."""
    path = path or (
        Path(os.environ[PASSPHRASE_FILE_ENV]) if os.environ.get(PASSPHRASE_FILE_ENV) else None
    )
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
        if not lines or not lines[0]:
            raise UsageError(f"the passphrase file {path} is empty")
        return lines[0]
    import getpass
    import sys

    if not sys.stdin.isatty():
        raise UsageError(
            f"{what} needs a passphrase and there is no terminal to ask on: give it in a "
            f"file (mode 0600) named by {PASSPHRASE_FILE_ENV}"
        )
    passphrase = getpass.getpass(f"passphrase for {what}: ")
    if confirm and getpass.getpass("the same passphrase again: ") != passphrase:
        raise UsageError("the two passphrases differ; nothing was written")
    if not passphrase:
        raise UsageError("an empty passphrase protects nothing; nothing was written")
    return passphrase


def _decrypt_identity_file(path: Path, data: bytes) -> str:
    """The text of a passphrase-protected identity file; a wrong passphrase is one clear
    ``UsageError`` (exit 2) naming the file."""
    passphrase = read_passphrase(None, f"identity file {path}")
    try:
        return pyrage.passphrase.decrypt(data, passphrase).decode()
    except (pyrage.DecryptError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"identity file {path}: wrong passphrase (or the file is damaged, or it is "
            "encrypted to a key rather than a passphrase)"
        ) from exc


def load_identities(path: Path) -> list[pyrage.x25519.Identity]:
    """Read an identity file (age format: comment lines and AGE-SECRET-KEY lines)."""
    if looks_like_identity(str(path)):
        raise UsageError(
            "the identity file given (keys.identity_file or --identity) is an age identity "
            "itself, not the path of a file holding one: write it to a file (mode 0600) and "
            "give that path; a secret key typed on a command line is in the shell's history "
            "and was visible to other users, so consider making a new one"
        )
    try:
        _refuse_if_exposed(path)
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(
            f"identity file {path} not found; check keys.identity_file or --identity"
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read identity file {path}: {exc.strerror}") from exc
    if data.startswith(_AGE_HEADERS):
        text = _decrypt_identity_file(path, data)
    else:
        text = data.decode(errors="replace")
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except Exception as exc:
                raise UsageError(f"{path} holds a malformed AGE-SECRET-KEY line") from exc
    if not identities:
        raise UsageError(
            f"{path} holds no identity (no AGE-SECRET-KEY-1… line); use `emberkeep keygen`"
        )
    return identities


def _refuse_if_exposed(path: Path) -> None:
    """Refuse an identity file that group or others may read or write, as ssh refuses
    such a private key: whoever could read it can read every backup."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise UsageError(
            f"identity file {path} has mode {mode:04o}: group or others can read or change "
            f"it, so it is not used (as ssh refuses such a key). Run `chmod 600 {path}` "
            "(or copy it into a file only you can read); if others could read it, consider "
            "it exposed and make a new identity"
        )


def parse_recipients(values: list[str]) -> list[pyrage.x25519.Recipient]:
    return [pyrage.x25519.Recipient.from_str(value) for value in values]


def wrap(secret: bytes, recipients: list[pyrage.x25519.Recipient]) -> bytes:
    """Encrypt a small secret to every recipient (age format, one stanza each)."""
    return pyrage.encrypt(secret, recipients)


NO_MATCHING_KEY = "No matching keys found"  # pyrage's message when no stanza opens


def unwrap(blob: bytes, identities: list[pyrage.x25519.Identity], what: str) -> bytes:
    """Decrypt an age object. ``WrongIdentity`` when none of its stanzas opens with the
    identities (not a recipient, or that stanza is damaged: age cannot tell which);
    ``IntegrityError`` (named ``what``) when the object is not well formed, or a stanza
    opened but the header or payload fails its authentication: damaged, or forged."""
    try:
        return pyrage.decrypt(blob, identities)
    except pyrage.DecryptError as exc:
        if NO_MATCHING_KEY not in str(exc):
            reason = str(exc).splitlines()[0].rstrip(".").lower()
            raise IntegrityError(what, f"damaged ({reason})") from exc
        raise WrongIdentity(
            f"the identity given cannot decrypt {what}: it is not one of the recipients "
            "this was encrypted to; use the identity file of a listed recipient"
        ) from exc
