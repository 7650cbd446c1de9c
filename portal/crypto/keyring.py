"""Key-encryption keys (KEKs) and application secrets, kept in one JSON key file outside the database.

Layout of the key file (``version`` 1), every key base64-encoded::

    {
      "format": "portal-keyring",
      "version": 1,
      "primary_kek": "<kek id>",
      "keks": {"<kek id>": {"key": "<32 bytes>", "created_at": "<RFC 3339 UTC>"}},
      "retired_keks": {"<kek id>": "<RFC 3339 UTC retired at>"},
      "secrets": {"session": "<32 bytes>", "pseudonym": "<32 bytes>", "marker": "<32 bytes>"},
      "checkpoint_ed25519": "<32-byte Ed25519 private key>"
    }

Data keys are wrapped with AES key wrap (RFC 3394), so a wrapped data key is 40 bytes and a wrong KEK or a
damaged row fails its integrity check. Retiring a KEK deletes its key material and keeps its id, so a data
key still wrapped under it fails with a "retired" message instead of an "unknown" one.

What this module does not do: it does not know which data keys are still wrapped under a KEK. Before
``retire``, the caller re-wraps them under the primary KEK with ``rewrap``; every data key left behind
becomes unreadable, which is also how a whole generation of blobs is crypto-shredded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from portal.crypto.errors import KeyRingError, KeyUnavailable, WrappedKeyInvalid

FORMAT_NAME = "portal-keyring"
FORMAT_VERSION = 1
KEY_SIZE = 32
SECRET_PURPOSES = ("session", "pseudonym", "marker")

_TOP_LEVEL_FIELDS = frozenset(
    {"format", "version", "primary_kek", "keks", "retired_keks", "secrets", "checkpoint_ed25519"}
)


@dataclass(frozen=True)
class _KeyFileContent:
    primary_kek: str
    keks: dict[str, bytes]
    kek_created_at: dict[str, str]
    retired_keks: dict[str, str]
    secrets: dict[str, bytes]
    checkpoint_seed: bytes = field(repr=False)


class KeyRing:
    """KEKs with short ids (one of them primary) and the per-purpose application secrets.

    Build one with ``load``, ``create`` or ``from_env``. The ``repr`` shows key ids only.
    """

    def __init__(self, content: _KeyFileContent) -> None:
        self._content = content

    def __repr__(self) -> str:
        return f"KeyRing(primary_kek={self.primary_kek_id!r}, keks={sorted(self._content.keks)!r})"

    # Construction

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a key file written by ``create``.

        Raises:
            KeyRingError: the file is missing, readable by group or others, or not a valid key file.
        """
        path = Path(path)
        _check_private_mode(path)

        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyRingError(
                f"Key file {path} does not exist: create it with KeyRing.create or correct the path."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyRingError(f"Key file {path} could not be read ({type(exc).__name__}).") from None

        return cls(_parse_text(text, f"key file {path}"))

    @classmethod
    def create(cls, path: Path) -> KeyRing:
        """Generate a new key ring and write it to ``path`` with mode 0600.

        Raises:
            KeyRingError: ``path`` already exists (it is never overwritten) or cannot be written.
        """
        path = Path(path)
        now = _utc_now()
        kek_id = _new_kek_id(set())
        content = _KeyFileContent(
            primary_kek=kek_id,
            keks={kek_id: secrets.token_bytes(KEY_SIZE)},
            kek_created_at={kek_id: now},
            retired_keks={},
            secrets={purpose: secrets.token_bytes(KEY_SIZE) for purpose in SECRET_PURPOSES},
            checkpoint_seed=_new_ed25519_seed(),
        )

        _write_atomically(path, _serialise(content), overwrite=False)
        return cls(content)

    @classmethod
    def from_env(cls, value: str) -> KeyRing:
        """Parse the key file content (JSON, or base64 of the JSON) held in an environment variable.

        Raises:
            KeyRingError: the value is empty or not a valid key file.
        """
        text = value.strip()
        if not text:
            raise KeyRingError("The key ring environment value is empty: set it to the key file content.")

        # A JSON object starts with "{", which is not in the base64 alphabet, so the two forms never overlap.
        if not text.startswith("{"):
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise KeyRingError(
                    "The key ring environment value is neither JSON nor base64 of JSON: "
                    "set it to the key file content."
                ) from None

        return cls(_parse_text(text, "key ring environment value"))

    # Key-encryption keys

    @property
    def primary_kek_id(self) -> str:
        """Id of the KEK that ``wrap`` uses."""
        return self._content.primary_kek

    @property
    def kek_ids(self) -> list[str]:
        """Ids of the KEKs that can still unwrap, sorted."""
        return sorted(self._content.keks)

    def wrap(self, dek: bytes) -> tuple[str, bytes]:
        """Wrap a 32-byte data key under the primary KEK.

        Returns:
            The primary KEK id and the 40-byte wrapped key (AES key wrap, RFC 3394).
        """
        if len(dek) != KEY_SIZE:
            raise ValueError(f"A data key must be {KEY_SIZE} bytes, got {len(dek)}.")

        kek_id = self._content.primary_kek
        return kek_id, aes_key_wrap(self._content.keks[kek_id], dek)

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key stored with the id of the KEK that wrapped it.

        Raises:
            KeyUnavailable: the KEK id is unknown or retired.
            WrappedKeyInvalid: the wrapped key fails its integrity check under that KEK.
        """
        kek = self._kek(kek_id)

        try:
            return aes_key_unwrap(kek, wrapped)
        except (InvalidUnwrap, ValueError):
            raise WrappedKeyInvalid(
                f"A wrapped data key failed its integrity check under KEK {kek_id!r}: "
                "the stored value is damaged or was wrapped by another key file."
            ) from None

    def rewrap(self, kek_id: str, wrapped: bytes) -> tuple[str, bytes]:
        """Unwrap a data key and wrap it again under the primary KEK, for use before ``retire``."""
        return self.wrap(self.unwrap(kek_id, wrapped))

    def rotate(self, path: Path) -> str:
        """Add a new primary KEK to the key file at ``path`` and to this key ring.

        The file is re-read under a lock before the change, so a change made by another process since this
        key ring was loaded is kept. Older KEKs stay available for ``unwrap``.

        Returns:
            The id of the new primary KEK.
        """
        path = Path(path)
        with _locked_directory(path):
            current = KeyRing.load(path)._content
            kek_id = _new_kek_id(set(current.keks) | set(current.retired_keks))
            updated = replace(
                current,
                primary_kek=kek_id,
                keks={**current.keks, kek_id: secrets.token_bytes(KEY_SIZE)},
                kek_created_at={**current.kek_created_at, kek_id: _utc_now()},
            )
            _write_atomically(path, _serialise(updated), overwrite=True)

        self._content = updated
        return kek_id

    def retire(self, path: Path, kek_id: str) -> None:
        """Delete a KEK's key material from the key file at ``path`` and from this key ring.

        Every data key still wrapped under it becomes unreadable: re-wrap the ones to keep first.

        Raises:
            KeyUnavailable: the id is unknown or already retired.
            KeyRingError: the id is the primary KEK (rotate first).
        """
        path = Path(path)
        with _locked_directory(path):
            current = KeyRing.load(path)._content
            KeyRing(current)._kek(kek_id)
            if kek_id == current.primary_kek:
                raise KeyRingError(
                    f"KEK {kek_id!r} is the primary KEK of {path}: rotate to a new primary KEK before "
                    "retiring it."
                )

            keks = {key_id: key for key_id, key in current.keks.items() if key_id != kek_id}
            created = {key_id: at for key_id, at in current.kek_created_at.items() if key_id != kek_id}
            updated = replace(
                current,
                keks=keks,
                kek_created_at=created,
                retired_keks={**current.retired_keks, kek_id: _utc_now()},
            )
            _write_atomically(path, _serialise(updated), overwrite=True)

        self._content = updated

    # Application secrets

    def secret(self, purpose: str) -> bytes:
        """Return the 32-byte secret for one purpose: "session", "pseudonym" or "marker"."""
        try:
            return self._content.secrets[purpose]
        except KeyError:
            raise KeyError(
                f"Unknown secret purpose {purpose!r}: expected one of {', '.join(SECRET_PURPOSES)}."
            ) from None

    def checkpoint_signing_key(self) -> Ed25519PrivateKey:
        """Return the Ed25519 private key that signs access-log checkpoints."""
        return Ed25519PrivateKey.from_private_bytes(self._content.checkpoint_seed)

    def _kek(self, kek_id: str) -> bytes:
        if kek_id in self._content.retired_keks:
            raise KeyUnavailable(
                f"KEK {kek_id!r} was retired on {self._content.retired_keks[kek_id]}: data keys wrapped "
                "under it can no longer be unwrapped."
            )

        try:
            return self._content.keks[kek_id]
        except KeyError:
            raise KeyUnavailable(
                f"KEK {kek_id!r} is not in this key ring: check that the application loads the key file "
                "that wrapped the data key."
            ) from None


# Parsing and serialising


def _parse_text(text: str, source: str) -> _KeyFileContent:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message quotes no content, so it is safe to show. The text itself contains keys.
        raise KeyRingError(
            f"The {source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
            "restore it from a backup."
        ) from None

    return _parse_document(document, source)


def _parse_document(document: object, source: str) -> _KeyFileContent:
    if not isinstance(document, dict):
        raise KeyRingError(f"The {source} must contain a JSON object.")

    unknown = sorted(set(document) - _TOP_LEVEL_FIELDS)
    if unknown:
        raise KeyRingError(f"The {source} has unknown fields {unknown}: remove them.")
    if document.get("format") != FORMAT_NAME:
        raise KeyRingError(f"The {source} is not a key ring: field 'format' must be {FORMAT_NAME!r}.")
    if document.get("version") != FORMAT_VERSION:
        raise KeyRingError(
            f"The {source} has unsupported version {document.get('version')!r}: expected {FORMAT_VERSION}."
        )

    keks, created = _parse_keks(_object_field(document, "keks", source), source)
    retired = _parse_retired(_object_field(document, "retired_keks", source), source)
    primary = document.get("primary_kek")
    if primary not in keks:
        raise KeyRingError(f"The {source} names primary KEK {primary!r}, which is not among its KEKs.")
    if set(keks) & set(retired):
        raise KeyRingError(
            f"The {source} lists KEKs {sorted(set(keks) & set(retired))} as both active and retired."
        )

    secrets_field = _object_field(document, "secrets", source)
    if set(secrets_field) != set(SECRET_PURPOSES):
        raise KeyRingError(f"The {source} must have exactly the secrets {list(SECRET_PURPOSES)}.")
    app_secrets = {
        name: _decode_key(secrets_field[name], f"secrets.{name}", source) for name in SECRET_PURPOSES
    }

    checkpoint = _decode_key(document.get("checkpoint_ed25519"), "checkpoint_ed25519", source)

    return _KeyFileContent(
        primary_kek=primary,
        keks=keks,
        kek_created_at=created,
        retired_keks=retired,
        secrets=app_secrets,
        checkpoint_seed=checkpoint,
    )


def _parse_keks(entries: Mapping[str, Any], source: str) -> tuple[dict[str, bytes], dict[str, str]]:
    keks: dict[str, bytes] = {}
    created: dict[str, str] = {}
    for kek_id, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"key", "created_at"}:
            raise KeyRingError(f"The {source} entry keks.{kek_id} must have exactly 'key' and 'created_at'.")

        keks[kek_id] = _decode_key(entry["key"], f"keks.{kek_id}.key", source)
        created[kek_id] = str(entry["created_at"])

    return keks, created


def _parse_retired(entries: Mapping[str, Any], source: str) -> dict[str, str]:
    for kek_id, retired_at in entries.items():
        if not isinstance(retired_at, str):
            raise KeyRingError(f"The {source} entry retired_keks.{kek_id} must be a timestamp string.")

    return dict(entries)


def _object_field(document: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise KeyRingError(f"The {source} field {name!r} is missing or not a JSON object.")
    return value


def _decode_key(value: object, name: str, source: str) -> bytes:
    # The message names the field and never quotes its value, which is key material.
    if not isinstance(value, str):
        raise KeyRingError(f"The {source} field {name!r} is missing or not a string.")

    try:
        key = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise KeyRingError(f"The {source} field {name!r} is not valid base64.") from None

    if len(key) != KEY_SIZE:
        raise KeyRingError(f"The {source} field {name!r} decodes to {len(key)} bytes, expected {KEY_SIZE}.")
    return key


def _serialise(content: _KeyFileContent) -> bytes:
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "primary_kek": content.primary_kek,
        "keks": {
            kek_id: {"key": _b64(key), "created_at": content.kek_created_at[kek_id]}
            for kek_id, key in sorted(content.keks.items())
        },
        "retired_keks": dict(sorted(content.retired_keks.items())),
        "secrets": {name: _b64(content.secrets[name]) for name in SECRET_PURPOSES},
        "checkpoint_ed25519": _b64(content.checkpoint_seed),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _new_kek_id(used_ids: set[str]) -> str:
    # Eight hex characters keep the id short in database rows; a collision with a present id is retried.
    while True:
        kek_id = secrets.token_hex(4)
        if kek_id not in used_ids:
            return kek_id


def _new_ed25519_seed() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.Raw,
        format=serialization.PrivateFormat.Raw,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# Files


def _check_private_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # The read that follows reports the missing file.
    except OSError as exc:
        raise KeyRingError(f"Key file {path} could not be checked ({type(exc).__name__}).") from None

    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRingError(
            f"Key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`."
        )


@contextlib.contextmanager
def _locked_directory(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on the key file's folder, so rotations in two processes do not interleave."""
    try:
        descriptor = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise KeyRingError(f"Folder of key file {path} could not be opened ({type(exc).__name__}).") from None

    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to a 0600 temporary file next to ``path``, then move it into place durably.

    Without ``overwrite`` the move is a hard link, which fails if ``path`` exists, even when another process
    creates it at the same moment.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyRingError(f"Key file {path} could not be written ({type(exc).__name__}).") from None

    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            os.unlink(temporary)
        _fsync_directory(path.parent)
    except FileExistsError:
        raise KeyRingError(
            f"Key file {path} already exists: it is never overwritten. Load it instead."
        ) from None
    except OSError as exc:
        raise KeyRingError(f"Key file {path} could not be written ({type(exc).__name__}).") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
