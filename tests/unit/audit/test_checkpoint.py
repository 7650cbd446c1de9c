"""Signed checkpoints: C2SP signed-note compatibility, verification and rejection of forgeries."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.audit.checkpoint import (
    Checkpoint,
    CheckpointInvalid,
    format_checkpoint,
    load_public_key_text,
    open_checkpoint,
    open_note,
    parse_public_key_text,
    public_key_text,
    sign_checkpoint,
    sign_note,
)
from portal.audit.merkle import leaf_hash

# The example key and note of golang.org/x/mod/sumdb/note, file note_test.go (TestSign, TestOpen).
# Ed25519 is deterministic, so the same key and text must give the same signed note byte for byte.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIGNATURE = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

ORIGIN = "clinic.example/access-log"
ROOT = leaf_hash(b"root stand-in")


def go_private_key() -> Ed25519PrivateKey:
    # The Go signer key encodes base64(0x01 || 32-byte seed) after the fourth "+".
    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])[1:]
    return Ed25519PrivateKey.from_private_bytes(seed)


def test_sign_note_matches_go_reference() -> None:
    assert sign_note(GO_TEXT, go_private_key(), "PeterNeumann") == GO_TEXT + "\n" + GO_SIGNATURE


def test_public_key_text_matches_go_reference() -> None:
    assert public_key_text(go_private_key(), "PeterNeumann") == GO_VERIFIER_KEY
    assert public_key_text(go_private_key().public_key(), "PeterNeumann") == GO_VERIFIER_KEY


def test_open_note_go_reference() -> None:
    public_key = load_public_key_text(GO_VERIFIER_KEY)

    assert open_note(GO_TEXT + "\n" + GO_SIGNATURE, public_key, "PeterNeumann") == GO_TEXT


def test_open_note_ignores_unknown_signer() -> None:
    public_key = load_public_key_text(GO_VERIFIER_KEY)
    note = GO_TEXT + "\n" + GO_SIGNATURE + GO_ENOCH_SIGNATURE

    assert open_note(note, public_key, "PeterNeumann") == GO_TEXT


def test_open_note_rejects_altered_text() -> None:
    public_key = load_public_key_text(GO_VERIFIER_KEY)
    note = GO_TEXT.replace("cryptography", "cryptographY") + "\n" + GO_SIGNATURE

    with pytest.raises(CheckpointInvalid, match="does not verify"):
        open_note(note, public_key, "PeterNeumann")


def test_open_note_requires_known_signer() -> None:
    public_key = load_public_key_text(GO_VERIFIER_KEY)

    with pytest.raises(CheckpointInvalid, match="no signature by key PeterNeumann"):
        open_note(GO_TEXT + "\n" + GO_ENOCH_SIGNATURE, public_key, "PeterNeumann")


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + GO_SIGNATURE[:-1],
        "\x01" + GO_TEXT + "\n" + GO_SIGNATURE,
        GO_TEXT + "\n" + GO_SIGNATURE.replace("PeterNeumann", "Bad Name"),
        GO_TEXT + "\n" + GO_SIGNATURE + "Unexpected line.\n",
        GO_TEXT + "\n" + GO_SIGNATURE * 101,
    ],
    ids=[
        "no-signature",
        "blank-only",
        "no-final-newline",
        "control",
        "space-in-name",
        "extra-line",
        "101-signatures",
    ],
)
def test_open_note_rejects_malformed(note: str) -> None:
    with pytest.raises(CheckpointInvalid):
        open_note(note, load_public_key_text(GO_VERIFIER_KEY), "PeterNeumann")


def test_format_checkpoint_layout() -> None:
    checkpoint = Checkpoint(origin=ORIGIN, tree_size=1234, root_hash=ROOT)
    root_line = base64.b64encode(ROOT).decode()

    assert format_checkpoint(checkpoint) == f"{ORIGIN}\n1234\n{root_line}\n"


def test_checkpoint_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = Checkpoint(origin=ORIGIN, tree_size=1234, root_hash=ROOT)
    note = sign_checkpoint(checkpoint, key, ORIGIN)

    assert note.startswith(format_checkpoint(checkpoint) + "\n\u2014 " + ORIGIN + " ")
    assert open_checkpoint(note, key.public_key(), ORIGIN) == checkpoint
    assert open_checkpoint(note, key.public_key(), ORIGIN, origin=ORIGIN) == checkpoint


def test_checkpoint_rejects_wrong_key() -> None:
    checkpoint = Checkpoint(origin=ORIGIN, tree_size=5, root_hash=ROOT)
    note = sign_checkpoint(checkpoint, Ed25519PrivateKey.generate(), ORIGIN)

    with pytest.raises(CheckpointInvalid, match="no signature by key"):
        open_checkpoint(note, Ed25519PrivateKey.generate().public_key(), ORIGIN)


def test_checkpoint_rejects_altered_root() -> None:
    key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint(origin=ORIGIN, tree_size=5, root_hash=ROOT), key, ORIGIN)
    forged_root = base64.b64encode(leaf_hash(b"other")).decode()
    forged = note.replace(base64.b64encode(ROOT).decode(), forged_root)

    with pytest.raises(CheckpointInvalid, match="does not verify"):
        open_checkpoint(forged, key.public_key(), ORIGIN)


def test_checkpoint_rejects_altered_size() -> None:
    key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint(origin=ORIGIN, tree_size=5, root_hash=ROOT), key, ORIGIN)

    with pytest.raises(CheckpointInvalid, match="does not verify"):
        open_checkpoint(note.replace("\n5\n", "\n4\n"), key.public_key(), ORIGIN)


def test_checkpoint_rejects_other_origin() -> None:
    key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint(origin="other.example/log", tree_size=5, root_hash=ROOT), key, ORIGIN)

    with pytest.raises(CheckpointInvalid, match="origin"):
        open_checkpoint(note, key.public_key(), ORIGIN, origin=ORIGIN)


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n5\n",
        f"{ORIGIN}\n05\n{base64.b64encode(ROOT).decode()}\n",
        f"{ORIGIN}\n-5\n{base64.b64encode(ROOT).decode()}\n",
        f"{ORIGIN}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{ORIGIN}\n5\n{base64.b64encode(ROOT).decode()}\nextension\n",
    ],
    ids=["no-root", "leading-zero", "negative", "short-root", "extension-line"],
)
def test_checkpoint_rejects_malformed_body(body: str) -> None:
    key = Ed25519PrivateKey.generate()
    note = sign_note(body, key, ORIGIN)

    with pytest.raises(CheckpointInvalid):
        open_checkpoint(note, key.public_key(), ORIGIN)


def test_checkpoint_validates_fields() -> None:
    with pytest.raises(ValueError, match="origin"):
        Checkpoint(origin="two words", tree_size=1, root_hash=ROOT)
    with pytest.raises(ValueError, match="origin"):
        Checkpoint(origin="a\nb", tree_size=1, root_hash=ROOT)
    with pytest.raises(ValueError, match="tree size"):
        Checkpoint(origin=ORIGIN, tree_size=-1, root_hash=ROOT)
    with pytest.raises(ValueError, match="root hash"):
        Checkpoint(origin=ORIGIN, tree_size=1, root_hash=ROOT[:31])


def test_public_key_text_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    parsed = parse_public_key_text(public_key_text(key, ORIGIN) + "\n")

    assert parsed.name == ORIGIN
    assert parsed.public_key == key.public_key()


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
        "PeterNeumann+c74f20a3",
        "",
    ],
    ids=["wrong-id", "wrong-name", "wrong-type", "short-key", "no-key", "empty"],
)
def test_public_key_text_rejects_malformed(text: str) -> None:
    with pytest.raises(CheckpointInvalid):
        parse_public_key_text(text)
