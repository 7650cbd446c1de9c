"""Key file creation and loading, data key wrapping, KEK rotation and retirement, application secrets."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.crypto.envelope import new_data_key
from portal.crypto.errors import KeyRingError, KeyUnavailable, WrappedKeyInvalid
from portal.crypto.keyring import SECRET_PURPOSES, KeyRing


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def ring(key_path: Path) -> KeyRing:
    return KeyRing.create(key_path)


def write_key_file(path: Path, document: object) -> None:
    path.write_text(json.dumps(document))
    path.chmod(0o600)


def test_create_mode_0600(ring: KeyRing, key_path: Path) -> None:
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_create_leaves_no_temporary_file(ring: KeyRing, key_path: Path) -> None:
    assert [path.name for path in key_path.parent.iterdir()] == [key_path.name]


def test_create_refuses_overwrite(ring: KeyRing, key_path: Path) -> None:
    before = key_path.read_bytes()

    with pytest.raises(KeyRingError, match="already exists"):
        KeyRing.create(key_path)

    assert key_path.read_bytes() == before


def test_load_matches_created(ring: KeyRing, key_path: Path) -> None:
    loaded = KeyRing.load(key_path)

    assert loaded.primary_kek_id == ring.primary_kek_id
    for purpose in SECRET_PURPOSES:
        assert loaded.secret(purpose) == ring.secret(purpose)
    dek = new_data_key()
    assert loaded.unwrap(*ring.wrap(dek)) == dek


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    with pytest.raises(KeyRingError) as raised:
        KeyRing.load(path)

    assert str(path) in str(raised.value)
    assert "does not exist" in str(raised.value)


def test_load_group_readable(ring: KeyRing, key_path: Path) -> None:
    key_path.chmod(0o640)

    with pytest.raises(KeyRingError, match="chmod 600"):
        KeyRing.load(key_path)


def test_load_invalid_json(key_path: Path) -> None:
    key_path.write_text('{"secrets": "c2VjcmV0LWtleS1tYXRlcmlhbA==", oops}')
    key_path.chmod(0o600)

    with pytest.raises(KeyRingError) as raised:
        KeyRing.load(key_path)

    message = str(raised.value)
    assert str(key_path) in message
    assert "not valid JSON" in message
    assert "c2VjcmV0" not in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("version", 2, "unsupported version"),
        ("format", "other", "not a key ring"),
        ("extra", 1, "unknown fields"),
        ("primary_kek", "ffffffff", "not among its KEKs"),
        ("checkpoint_ed25519", "not base64!", "not valid base64"),
        ("checkpoint_ed25519", base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("secrets", {"session": base64.b64encode(bytes(32)).decode()}, "exactly the secrets"),
    ],
)
def test_load_malformed_field(
    ring: KeyRing, key_path: Path, field: str, value: object, expected: str
) -> None:
    document = json.loads(key_path.read_text())
    document[field] = value
    write_key_file(key_path, document)

    with pytest.raises(KeyRingError) as raised:
        KeyRing.load(key_path)

    assert expected in str(raised.value)
    assert str(key_path) in str(raised.value)


def test_error_hides_key_material(ring: KeyRing, key_path: Path) -> None:
    document = json.loads(key_path.read_text())
    kek_entry = document["keks"][ring.primary_kek_id]
    kek_entry["key"] = kek_entry["key"][:-4]
    write_key_file(key_path, document)

    with pytest.raises(KeyRingError) as raised:
        KeyRing.load(key_path)

    assert kek_entry["key"] not in str(raised.value)
    assert f"keks.{ring.primary_kek_id}.key" in str(raised.value)


def test_from_env_json_and_base64(ring: KeyRing, key_path: Path) -> None:
    text = key_path.read_text()
    dek = new_data_key()
    kek_id, wrapped = ring.wrap(dek)

    from_json = KeyRing.from_env(text)
    from_base64 = KeyRing.from_env(base64.b64encode(text.encode()).decode())

    assert from_json.unwrap(kek_id, wrapped) == dek
    assert from_base64.unwrap(kek_id, wrapped) == dek


@pytest.mark.parametrize("value", ["", "   ", "not base64 ###", base64.b64encode(b"[1, 2]").decode()])
def test_from_env_invalid(value: str) -> None:
    with pytest.raises(KeyRingError, match="environment value"):
        KeyRing.from_env(value)


def test_wrap_unwrap(ring: KeyRing) -> None:
    dek = new_data_key()

    kek_id, wrapped = ring.wrap(dek)

    assert kek_id == ring.primary_kek_id
    assert len(wrapped) == 40
    assert dek not in wrapped
    assert ring.unwrap(kek_id, wrapped) == dek


def test_wrap_rejects_short_key(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ring.wrap(bytes(16))


def test_unwrap_damaged(ring: KeyRing) -> None:
    kek_id, wrapped = ring.wrap(new_data_key())
    damaged = bytes([wrapped[0] ^ 1]) + wrapped[1:]

    with pytest.raises(WrappedKeyInvalid, match=kek_id):
        ring.unwrap(kek_id, damaged)


def test_unwrap_other_key_file(ring: KeyRing, tmp_path: Path) -> None:
    other = KeyRing.create(tmp_path / "other.json")
    _, wrapped = other.wrap(new_data_key())

    with pytest.raises(WrappedKeyInvalid):
        ring.unwrap(ring.primary_kek_id, wrapped)
    with pytest.raises(KeyUnavailable, match="not in this key ring"):
        ring.unwrap(other.primary_kek_id, wrapped)


def test_rotate_then_retire(ring: KeyRing, key_path: Path) -> None:
    old_id = ring.primary_kek_id
    dek = new_data_key()
    _, old_wrapped = ring.wrap(dek)

    new_id = ring.rotate(key_path)

    assert new_id != old_id
    assert ring.primary_kek_id == new_id
    assert KeyRing.load(key_path).primary_kek_id == new_id
    assert ring.unwrap(old_id, old_wrapped) == dek

    rewrapped_id, rewrapped = ring.rewrap(old_id, old_wrapped)
    ring.retire(key_path, old_id)
    reloaded = KeyRing.load(key_path)

    assert rewrapped_id == new_id
    assert reloaded.unwrap(rewrapped_id, rewrapped) == dek
    assert reloaded.kek_ids == [new_id]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    for holder in (ring, reloaded):
        with pytest.raises(KeyUnavailable, match="retired"):
            holder.unwrap(old_id, old_wrapped)


def test_rotate_keeps_secrets(ring: KeyRing, key_path: Path) -> None:
    ring.rotate(key_path)
    reloaded = KeyRing.load(key_path)

    for purpose in SECRET_PURPOSES:
        assert reloaded.secret(purpose) == ring.secret(purpose)


def test_retire_primary_rejected(ring: KeyRing, key_path: Path) -> None:
    with pytest.raises(KeyRingError, match="rotate"):
        ring.retire(key_path, ring.primary_kek_id)


def test_retire_unknown_rejected(ring: KeyRing, key_path: Path) -> None:
    with pytest.raises(KeyUnavailable):
        ring.retire(key_path, "00000000")


def test_retire_twice_rejected(ring: KeyRing, key_path: Path) -> None:
    old_id = ring.primary_kek_id
    ring.rotate(key_path)
    ring.retire(key_path, old_id)

    with pytest.raises(KeyUnavailable, match="retired"):
        ring.retire(key_path, old_id)


def test_secrets_separate_per_purpose(ring: KeyRing) -> None:
    values = [ring.secret(purpose) for purpose in SECRET_PURPOSES]

    assert all(len(value) == 32 for value in values)
    assert len(set(values)) == len(values)


def test_secret_unknown_purpose(ring: KeyRing) -> None:
    with pytest.raises(KeyError, match="Unknown secret purpose"):
        ring.secret("kek")


def test_checkpoint_key_stable(ring: KeyRing, key_path: Path) -> None:
    signing_key = ring.checkpoint_signing_key()
    signature = signing_key.sign(b"tree size 7")

    assert isinstance(signing_key, Ed25519PrivateKey)
    KeyRing.load(key_path).checkpoint_signing_key().public_key().verify(signature, b"tree size 7")


def test_repr_hides_keys(ring: KeyRing) -> None:
    text = repr(ring)

    assert ring.primary_kek_id in text
    for purpose in SECRET_PURPOSES:
        assert base64.b64encode(ring.secret(purpose)).decode() not in text
