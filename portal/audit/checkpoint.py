"""Signed checkpoints of the access log in the C2SP tlog-checkpoint and signed-note formats.

A checkpoint states the log's origin, its tree size and the Merkle root at that size. It is signed as
a C2SP signed note with Ed25519 (c2sp.org/signed-note, c2sp.org/tlog-checkpoint), so a copy kept off
the host proves what the log contained at that size:

    clinic.example/access-log
    1234
    <base64 of the 32-byte root hash>

    — clinic.example/access-log <base64 of 4-byte key ID || 64-byte Ed25519 signature>

Public keys are exchanged as one "vkey" line, `<name>+<hex key ID>+<base64(0x01 || public key)>`, the
text form of golang.org/x/mod/sumdb/note, so standard note tools read the same keys.

This module signs only checkpoint bodies. It does not store keys or decide when to sign.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from portal.audit.merkle import HASH_SIZE

# Signature type identifier byte of Ed25519 in the signed-note key ID and vkey encoding.
ED25519_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "
# The signed-note specification requires verifiers to accept at least 16 signatures and recommends a cap.
MAX_SIGNATURES = 100
# A checkpoint with many witness cosignatures stays far below this.
MAX_NOTE_LENGTH = 64 * 1024

_SIZE_PATTERN = re.compile(r"0|[1-9][0-9]*")
_KEY_ID_PATTERN = re.compile(r"[0-9a-f]{8}")


class CheckpointInvalid(Exception):
    """A signed checkpoint or a public key line is malformed, or its signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """A Merkle tree head of the access log: origin, number of leaves and root hash."""

    origin: str
    tree_size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        _check_name(self.origin, "origin")
        if not isinstance(self.tree_size, int) or isinstance(self.tree_size, bool) or self.tree_size < 0:
            raise ValueError(f"tree size {self.tree_size!r} is not a non-negative int")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"root hash must be {HASH_SIZE} bytes")


@dataclass(frozen=True)
class VerifierKey:
    """A parsed vkey line: key name, 4-byte key ID and Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def format_checkpoint(cp: Checkpoint) -> str:
    """Return the checkpoint body: origin, tree size and base64 root, each line ending in a newline."""
    root = base64.b64encode(cp.root_hash).decode("ascii")
    return f"{cp.origin}\n{cp.tree_size}\n{root}\n"


def key_id(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """Return the signed-note key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    material = key_name.encode("utf-8") + b"\n" + ED25519_TYPE + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


def sign_note(text: str, key: Ed25519PrivateKey, key_name: str) -> str:
    """Sign a note text with Ed25519 and return the signed note with one signature line.

    Raises:
        ValueError: the text is empty, does not end in a newline, contains an empty line or a control
            character other than newline, or the key name is invalid.
    """
    _check_name(key_name, "key name")
    _check_note_text(text)

    signature = key.sign(text.encode("utf-8"))
    blob = key_id(key_name, key.public_key()) + signature
    encoded = base64.b64encode(blob).decode("ascii")
    return f"{text}\n{SIGNATURE_PREFIX}{key_name} {encoded}\n"


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey, key_name: str) -> str:
    """Return the checkpoint as a signed note, signed by `key` under `key_name`."""
    return sign_note(format_checkpoint(cp), key, key_name)


def open_note(note: str, public_key: Ed25519PublicKey, key_name: str) -> str:
    """Verify a signed note and return its text, including the final newline.

    Signature lines from other keys (for example witness cosignatures) are ignored, as the signed-note
    specification requires. A line with this key's name and key ID must verify.

    Raises:
        CheckpointInvalid: the note is malformed, a signature by this key fails, or none is present.
    """
    text, signature_lines = _split_note(note)
    expected_id = key_id(key_name, public_key)
    message = text.encode("utf-8")

    verified = False
    for line in signature_lines:
        name, blob = _parse_signature_line(line)
        if name != key_name or blob[:4] != expected_id:
            continue
        try:
            public_key.verify(blob[4:], message)
        except InvalidSignature:
            raise CheckpointInvalid(
                f"the signature by key {key_name}+{expected_id.hex()} does not verify: the note was "
                "altered after signing or signed by another key with the same name"
            ) from None
        verified = True

    if not verified:
        raise CheckpointInvalid(
            f"the note has no signature by key {key_name}+{expected_id.hex()}; check that the right "
            "public key was given"
        )
    return text


def open_checkpoint(
    note: str, public_key: Ed25519PublicKey, key_name: str, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and return its tree head.

    Args:
        note: the signed note text.
        public_key: the trusted Ed25519 key of the log.
        key_name: the name that key signs under.
        origin: the expected origin line; None accepts any origin.

    Raises:
        CheckpointInvalid: the note is malformed, not signed by this key, or names another origin.
    """
    text = open_note(note, public_key, key_name)
    checkpoint = parse_checkpoint_text(text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointInvalid(f"the checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse a checkpoint body without checking any signature.

    Raises:
        CheckpointInvalid: the body does not have exactly an origin, a tree size and a root line.
    """
    lines = text.split("\n")
    if lines[-1] != "" or len(lines) < 4:
        raise CheckpointInvalid("the checkpoint body needs an origin, a tree size and a root hash line")
    if len(lines) > 4:
        raise CheckpointInvalid("the checkpoint has extension lines, which the portal never writes")

    origin, size_text, root_text = lines[:3]
    if not _SIZE_PATTERN.fullmatch(size_text):
        raise CheckpointInvalid(f"tree size line {size_text!r} is not a decimal without leading zeros")
    root = _decode_base64(root_text, "root hash line")
    if len(root) != HASH_SIZE:
        raise CheckpointInvalid(f"root hash is {len(root)} bytes, expected {HASH_SIZE}")

    try:
        return Checkpoint(origin=origin, tree_size=int(size_text), root_hash=root)
    except ValueError as error:
        raise CheckpointInvalid(f"invalid checkpoint: {error}") from None


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey, key_name: str) -> str:
    """Return the vkey line `<name>+<hex key ID>+<base64(0x01 || public key)>` for a key."""
    _check_name(key_name, "key name")
    public_key = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    encoded = base64.b64encode(ED25519_TYPE + _raw_public_key(public_key)).decode("ascii")
    return f"{key_name}+{key_id(key_name, public_key).hex()}+{encoded}"


def parse_public_key_text(text: str) -> VerifierKey:
    """Parse a vkey line and check that its key ID matches its name and key.

    Raises:
        CheckpointInvalid: the line is malformed, names another algorithm, or its key ID is wrong.
    """
    stripped = text.strip()
    # Neither the key name nor the hex key ID contains "+", so the first two are the separators. The
    # base64 key after them may contain more.
    parts = stripped.split("+", 2)
    if len(parts) != 3:
        raise CheckpointInvalid("the public key line is not of the form <name>+<hex key ID>+<base64 key>")
    name, id_text, key_text = parts

    try:
        _check_name(name, "key name")
    except ValueError as error:
        raise CheckpointInvalid(f"the public key line has an invalid {error}") from None
    if not _KEY_ID_PATTERN.fullmatch(id_text):
        raise CheckpointInvalid(f"the public key line's key ID {id_text!r} is not 8 lowercase hex digits")

    material = _decode_base64(key_text, "public key")
    if len(material) != 33 or material[:1] != ED25519_TYPE:
        raise CheckpointInvalid("the public key line does not hold an Ed25519 key (type 0x01, 32 bytes)")
    try:
        public_key = Ed25519PublicKey.from_public_bytes(material[1:])
    except ValueError:
        raise CheckpointInvalid("the public key line contains an invalid Ed25519 key") from None

    if key_id(name, public_key).hex() != id_text:
        raise CheckpointInvalid(f"the public key line's key ID {id_text} does not match its name and key")
    return VerifierKey(name=name, key_id=bytes.fromhex(id_text), public_key=public_key)


def load_public_key_text(text: str) -> Ed25519PublicKey:
    """Parse a vkey line and return its Ed25519 public key; see `parse_public_key_text`."""
    return parse_public_key_text(text).public_key


def _split_note(note: str) -> tuple[str, list[str]]:
    if not isinstance(note, str):
        raise CheckpointInvalid(f"expected the note as text, got {type(note).__name__}")
    if len(note) > MAX_NOTE_LENGTH:
        raise CheckpointInvalid(f"the note is {len(note)} characters, more than {MAX_NOTE_LENGTH}")
    if any(ord(character) < 0x20 and character != "\n" for character in note):
        raise CheckpointInvalid("the note contains a control character other than newline")
    if not note.endswith("\n"):
        raise CheckpointInvalid("the note does not end in a newline; it may be truncated")

    # The text ends at the last blank line; everything after it is signature lines.
    separator = note.rfind("\n\n")
    if separator < 0:
        raise CheckpointInvalid("the note has no blank line before its signatures")
    text = note[: separator + 1]
    signature_lines = note[separator + 2 : -1].split("\n")
    if not signature_lines or signature_lines == [""]:
        raise CheckpointInvalid("the note has no signature lines")
    if len(signature_lines) > MAX_SIGNATURES:
        raise CheckpointInvalid(f"the note has {len(signature_lines)} signatures, more than {MAX_SIGNATURES}")
    return text, signature_lines


def _parse_signature_line(line: str) -> tuple[str, bytes]:
    if not line.startswith(SIGNATURE_PREFIX):
        raise CheckpointInvalid(f"signature line {line[:40]!r} does not start with an em dash and a space")
    fields = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(fields) != 2:
        raise CheckpointInvalid(f"signature line {line[:40]!r} is not '— <key name> <base64 signature>'")

    name, encoded = fields
    try:
        _check_name(name, "key name")
    except ValueError as error:
        raise CheckpointInvalid(f"signature line has an invalid {error}") from None
    blob = _decode_base64(encoded, "signature")
    if len(blob) < 5:
        raise CheckpointInvalid("a signature is shorter than its 4-byte key ID plus one byte")
    return name, blob


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("a note text must end in a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise ValueError("a note text must not contain empty lines")
    if any(ord(character) < 0x20 and character != "\n" for character in text):
        raise ValueError("a note text must not contain control characters other than newline")


def _check_name(name: object, label: str) -> None:
    # Signed-note key names and checkpoint origins: non-empty, no Unicode space, no "+", no control.
    if not isinstance(name, str) or not name:
        raise ValueError(f"{label} must be a non-empty string")
    if "+" in name or any(character.isspace() or ord(character) < 0x20 for character in name):
        raise ValueError(f"{label} {name!r} contains a space, a '+' or a control character")


def _decode_base64(text: str, label: str) -> bytes:
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointInvalid(f"the {label} is not valid base64") from None
    # Only the canonical encoding, so one value has one text form.
    if base64.b64encode(decoded).decode("ascii") != text:
        raise CheckpointInvalid(f"the {label} is not in canonical base64")
    return decoded


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
