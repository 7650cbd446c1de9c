"""Evidence bundles: an untouched bundle verifies, and each kind of tampering is named."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.audit.bundle import BundleError, verify_bundle, write_bundle
from portal.audit.canonical import canonical_event_bytes, event_leaf_hash
from portal.audit.checkpoint import Checkpoint, public_key_text, sign_checkpoint
from portal.audit.merkle import MerkleTree, root_hash

ORIGIN = "clinic.example/access-log"
# A filtered export: the seqs are not contiguous, so only the manifest records what belongs in it.
EXPORTED = [2, 3, 5, 8, 9, 11]
FILTERS = {"patient": "k7x2mqplw3zb4rtyvnc5hjaedg", "from": "2025-03-01"}


def build(signed_log: Any, path: Path, seqs: list[int] = EXPORTED) -> Path:
    events = [event for event in signed_log.events if event["seq"] in seqs]
    with path.open("wb") as out:
        write_bundle(
            out,
            events,
            signed_log.leaves,
            signed_log.note,
            signed_log.key_text,
            FILTERS,
            signing_key=signed_log.key,
            exported_at="2025-04-01T12:00:00.000000Z",
        )
    return path


def rewrite(source: Path, target: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy a bundle, letting `change` edit the member contents on the way."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def edit_lines(members: dict[str, bytes], name: str, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = members[name].splitlines(keepends=True)
    members[name] = b"".join(edit(lines))


@pytest.fixture
def bundle(signed_log: Any, tmp_path: Path) -> Path:
    return build(signed_log, tmp_path / "bundle.zip")


def test_untouched_bundle_verifies(bundle: Path, signed_log: Any) -> None:
    report = verify_bundle(bundle, signed_log.key_text)

    assert report.first_failure is None
    assert report.ok
    assert report.checked == len(EXPORTED)
    assert report.trusted_key
    assert report.checkpoint is not None
    assert report.checkpoint.tree_size == 12


def test_untouched_bundle_without_trusted_key(bundle: Path) -> None:
    report = verify_bundle(bundle)

    assert report.ok
    assert not report.trusted_key


def test_full_unfiltered_bundle_verifies(signed_log: Any, tmp_path: Path) -> None:
    path = build(signed_log, tmp_path / "all.zip", seqs=list(range(1, 13)))

    report = verify_bundle(path, signed_log.key_text)
    assert report.ok
    assert report.checked == 12


def test_empty_bundle_verifies(signed_log: Any, tmp_path: Path) -> None:
    path = build(signed_log, tmp_path / "empty.zip", seqs=[])

    report = verify_bundle(path, signed_log.key_text)
    assert report.ok
    assert report.checked == 0


def test_bundle_contents(bundle: Path, signed_log: Any) -> None:
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        events = archive.read("events.jsonl").decode().splitlines()
        proofs = [json.loads(line) for line in archive.read("proofs.jsonl").splitlines()]
        manifest = json.loads(archive.read("manifest.json"))["manifest"]
        readme = archive.read("README.txt").decode()

    assert names == {
        "events.jsonl",
        "proofs.jsonl",
        "checkpoint.txt",
        "public-key.txt",
        "manifest.json",
        "README.txt",
    }
    assert [json.loads(line)["seq"] for line in events] == EXPORTED
    assert [(proof["seq"], proof["leaf_index"], proof["tree_size"]) for proof in proofs] == [
        (seq, seq - 1, 12) for seq in EXPORTED
    ]
    assert manifest["seq_ranges"] == [[2, 3], [5, 5], [8, 9], [11, 11]]
    assert manifest["event_count"] == 6
    assert manifest["filters"] == FILTERS
    assert "How to verify offline" in readme
    assert "k7x2mqplw3zb4rtyvnc5hjaedg" in readme


def test_bundle_is_reproducible(signed_log: Any, tmp_path: Path) -> None:
    first = build(signed_log, tmp_path / "first.zip").read_bytes()
    second = build(signed_log, tmp_path / "second.zip").read_bytes()

    assert first == second


def test_bundle_to_unseekable_stream(signed_log: Any, tmp_path: Path) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, chunk: Any) -> int:
            self.data += chunk
            return len(chunk)

    stream = Unseekable()
    write_bundle(
        stream,  # type: ignore[arg-type]
        signed_log.events[:3],
        signed_log.leaves,
        signed_log.note,
        signed_log.key_text,
        {},
        signing_key=signed_log.key,
    )
    path = tmp_path / "streamed.zip"
    path.write_bytes(bytes(stream.data))

    assert verify_bundle(path, signed_log.key_text).ok


def test_detects_edited_field(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        # The third exported event is seq 5; its actor is changed but the line stays canonical.
        edit_lines(
            members,
            "events.jsonl",
            lambda lines: [
                line.replace(b'"actor":"recipient:', b'"actor":"staff:') if index == 2 else line
                for index, line in enumerate(lines)
            ],
        )

    report = verify_bundle(rewrite(bundle, tmp_path / "edited.zip", change), signed_log.key_text)

    assert not report.ok
    assert report.checked == 2
    assert "event seq 5 (events.jsonl line 3)" in str(report.first_failure)
    assert "edited" in str(report.first_failure)


def test_detects_reformatted_line(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        edit_lines(
            members,
            "events.jsonl",
            lambda lines: [
                json.dumps(json.loads(line), indent=1).replace("\n", " ").encode() + b"\n"
                if index == 0
                else line
                for index, line in enumerate(lines)
            ],
        )

    report = verify_bundle(rewrite(bundle, tmp_path / "reformatted.zip", change), signed_log.key_text)

    assert not report.ok
    assert "event seq 2" in str(report.first_failure)
    assert "canonical form" in str(report.first_failure)


def test_detects_deleted_event(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", lambda lines: lines[:2] + lines[3:])

    report = verify_bundle(rewrite(bundle, tmp_path / "deleted.zip", change), signed_log.key_text)

    assert not report.ok
    assert "seq 5 was deleted or moved" in str(report.first_failure)


def test_detects_deleted_event_and_proof(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", lambda lines: lines[:2] + lines[3:])
        edit_lines(members, "proofs.jsonl", lambda lines: lines[:2] + lines[3:])

    report = verify_bundle(rewrite(bundle, tmp_path / "deleted.zip", change), signed_log.key_text)

    assert not report.ok
    assert report.checked == 2
    assert "line 3 contains seq 8 where the signed manifest lists seq 5" in str(report.first_failure)


def test_detects_swapped_events(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", lambda lines: [lines[0], lines[2], lines[1], *lines[3:]])

    report = verify_bundle(rewrite(bundle, tmp_path / "swapped.zip", change), signed_log.key_text)

    assert not report.ok
    assert "line 2 contains seq 5 where the signed manifest lists seq 3" in str(report.first_failure)


def test_detects_swapped_events_and_proofs(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def swap(lines: list[bytes]) -> list[bytes]:
        return [lines[0], lines[2], lines[1], *lines[3:]]

    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", swap)
        edit_lines(members, "proofs.jsonl", swap)

    report = verify_bundle(rewrite(bundle, tmp_path / "swapped.zip", change), signed_log.key_text)

    assert not report.ok
    assert report.checked == 1
    assert "seq 3 was deleted or moved" in str(report.first_failure)


def test_detects_truncated_tail(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", lambda lines: lines[:-2])
        edit_lines(members, "proofs.jsonl", lambda lines: lines[:-2])

    report = verify_bundle(rewrite(bundle, tmp_path / "truncated.zip", change), signed_log.key_text)

    assert not report.ok
    assert report.checked == 4
    assert "ends after 4 events but the signed manifest lists 6" in str(report.first_failure)
    assert "seq 9" in str(report.first_failure)


def test_detects_cut_last_line(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        members["events.jsonl"] = members["events.jsonl"][:-40]

    report = verify_bundle(rewrite(bundle, tmp_path / "cut.zip", change), signed_log.key_text)

    assert not report.ok
    assert "events.jsonl line 6 has no line end" in str(report.first_failure)


def test_detects_truncated_archive(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[:-200])

    report = verify_bundle(cut, signed_log.key_text)

    assert not report.ok
    assert "not a readable zip archive" in str(report.first_failure)


def test_detects_inserted_event(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    inserted = canonical_event_bytes(signed_log.events[3]) + b"\n"

    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", lambda lines: [*lines[:2], inserted, *lines[2:]])

    report = verify_bundle(rewrite(bundle, tmp_path / "inserted.zip", change), signed_log.key_text)

    assert not report.ok
    assert "seq 4, which the signed manifest does not list" in str(report.first_failure)


def test_detects_checkpoint_by_other_key(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    forger = Ed25519PrivateKey.generate()
    checkpoint = Checkpoint(origin=ORIGIN, tree_size=12, root_hash=root_hash(signed_log.leaves))

    def change(members: dict[str, bytes]) -> None:
        members["checkpoint.txt"] = sign_checkpoint(checkpoint, forger, ORIGIN).encode()

    forged = rewrite(bundle, tmp_path / "forged.zip", change)

    for trusted in (signed_log.key_text, None):
        report = verify_bundle(forged, trusted)
        assert not report.ok
        assert "checkpoint.txt: the note has no signature by key" in str(report.first_failure)


def test_detects_altered_checkpoint_root(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        lines = members["checkpoint.txt"].decode().split("\n")
        root = bytearray(lines[2].encode())
        root[0] = ord("A") if root[0] != ord("A") else ord("B")
        lines[2] = root.decode()
        members["checkpoint.txt"] = "\n".join(lines).encode()

    report = verify_bundle(rewrite(bundle, tmp_path / "root.zip", change), signed_log.key_text)

    assert not report.ok
    assert "checkpoint.txt" in str(report.first_failure)
    assert "does not verify" in str(report.first_failure)


def test_detects_bundle_resigned_by_other_key(
    bundle: Path, signed_log: Any, make_event: Any, tmp_path: Path
) -> None:
    # A forger rebuilds the whole bundle with their own key and an edited event. Only the trusted
    # key distinguishes it from the real bundle.
    forger = Ed25519PrivateKey.generate()
    events = [dict(event) for event in signed_log.events]
    events[4] = make_event(5, outcome="success")
    leaves = [event_leaf_hash(event) for event in events]
    checkpoint = Checkpoint(origin=ORIGIN, tree_size=12, root_hash=root_hash(leaves))
    forged = tmp_path / "resigned.zip"
    with forged.open("wb") as out:
        write_bundle(
            out,
            [event for event in events if event["seq"] in EXPORTED],
            leaves,
            sign_checkpoint(checkpoint, forger, ORIGIN),
            public_key_text(forger, ORIGIN),
            FILTERS,
            signing_key=forger,
        )

    trusted = verify_bundle(forged, signed_log.key_text)
    untrusted = verify_bundle(forged)

    assert not trusted.ok
    assert "public-key.txt contains key" in str(trusted.first_failure)
    assert "not the trusted key" in str(trusted.first_failure)
    assert untrusted.ok
    assert not untrusted.trusted_key


def test_detects_altered_manifest_filters(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        document = json.loads(members["manifest.json"])
        document["manifest"]["filters"]["from"] = "2025-01-01"
        members["manifest.json"] = json.dumps(document).encode()

    report = verify_bundle(rewrite(bundle, tmp_path / "manifest.zip", change), signed_log.key_text)

    assert not report.ok
    assert report.checked == 0
    assert "manifest.json: the signature does not verify" in str(report.first_failure)


def test_detects_manifest_matching_deletion(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    # Deleting seq 5 and removing it from the manifest's seq list still breaks the signature.
    def change(members: dict[str, bytes]) -> None:
        edit_lines(members, "events.jsonl", lambda lines: lines[:2] + lines[3:])
        edit_lines(members, "proofs.jsonl", lambda lines: lines[:2] + lines[3:])
        document = json.loads(members["manifest.json"])
        document["manifest"]["seq_ranges"] = [[2, 3], [8, 9], [11, 11]]
        document["manifest"]["event_count"] = 5
        members["manifest.json"] = json.dumps(document).encode()

    report = verify_bundle(rewrite(bundle, tmp_path / "manifest.zip", change), signed_log.key_text)

    assert not report.ok
    assert "manifest.json: the signature does not verify" in str(report.first_failure)


def test_detects_altered_proof(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        lines = members["proofs.jsonl"].splitlines(keepends=True)
        record = json.loads(lines[1])
        record["audit_path"][0] = record["audit_path"][1]
        lines[1] = json.dumps(record).encode() + b"\n"
        members["proofs.jsonl"] = b"".join(lines)

    report = verify_bundle(rewrite(bundle, tmp_path / "proof.zip", change), signed_log.key_text)

    assert not report.ok
    assert "event seq 3 (events.jsonl line 2) does not match the signed checkpoint root" in str(
        report.first_failure
    )


def test_detects_reformatted_proof(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    # The proof still verifies, so only the signed hash of proofs.jsonl shows the change.
    def change(members: dict[str, bytes]) -> None:
        edit_lines(
            members,
            "proofs.jsonl",
            lambda lines: [
                json.dumps(json.loads(line)).encode() + b"\n" if index == 0 else line
                for index, line in enumerate(lines)
            ],
        )

    report = verify_bundle(rewrite(bundle, tmp_path / "proof.zip", change), signed_log.key_text)

    assert not report.ok
    assert report.checked == len(EXPORTED)
    assert "proofs.jsonl: its SHA-256 differs from the signed manifest" in str(report.first_failure)


def test_detects_trailing_bytes(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        members["proofs.jsonl"] += b"{}\n"

    report = verify_bundle(rewrite(bundle, tmp_path / "trailing.zip", change), signed_log.key_text)

    assert not report.ok
    assert "proofs.jsonl has more lines" in str(report.first_failure)


def test_detects_duplicate_member(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    doubled = tmp_path / "doubled.zip"
    doubled.write_bytes(bundle.read_bytes())
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(doubled, "a") as archive,
    ):
        archive.writestr("events.jsonl", b"")

    report = verify_bundle(doubled, signed_log.key_text)

    assert not report.ok
    assert "more than one entry" in str(report.first_failure)


def test_detects_missing_member(bundle: Path, signed_log: Any, tmp_path: Path) -> None:
    def change(members: dict[str, bytes]) -> None:
        del members["proofs.jsonl"]

    report = verify_bundle(rewrite(bundle, tmp_path / "missing.zip", change), signed_log.key_text)

    assert not report.ok
    assert "lacks ['proofs.jsonl']" in str(report.first_failure)


def test_write_rejects_altered_row(signed_log: Any, make_event: Any, tmp_path: Path) -> None:
    events = [dict(event) for event in signed_log.events]
    events[2] = make_event(3, purpose="changed in the database")

    with (
        (tmp_path / "x.zip").open("wb") as out,
        pytest.raises(BundleError, match="event seq 3 does not match"),
    ):
        write_bundle(
            out,
            events,
            signed_log.leaves,
            signed_log.note,
            signed_log.key_text,
            {},
            signing_key=signed_log.key,
        )


def test_write_rejects_unordered_events(signed_log: Any, tmp_path: Path) -> None:
    events = [signed_log.events[3], signed_log.events[1]]

    with (tmp_path / "x.zip").open("wb") as out, pytest.raises(BundleError, match="ascending seq order"):
        write_bundle(
            out,
            events,
            signed_log.leaves,
            signed_log.note,
            signed_log.key_text,
            {},
            signing_key=signed_log.key,
        )


def test_write_rejects_event_after_checkpoint(signed_log: Any, make_event: Any, tmp_path: Path) -> None:
    with (
        (tmp_path / "x.zip").open("wb") as out,
        pytest.raises(BundleError, match="newer than the checkpoint"),
    ):
        write_bundle(
            out,
            [make_event(13)],
            signed_log.leaves,
            signed_log.note,
            signed_log.key_text,
            {},
            signing_key=signed_log.key,
        )


def test_write_rejects_leaves_for_other_root(signed_log: Any, tmp_path: Path) -> None:
    leaves = list(signed_log.leaves)
    leaves[0] = leaves[1]

    with (
        (tmp_path / "x.zip").open("wb") as out,
        pytest.raises(BundleError, match="do not give the signed root"),
    ):
        write_bundle(out, [], leaves, signed_log.note, signed_log.key_text, {}, signing_key=signed_log.key)


def test_write_rejects_other_signing_key(signed_log: Any, tmp_path: Path) -> None:
    with (
        (tmp_path / "x.zip").open("wb") as out,
        pytest.raises(BundleError, match="signing key does not belong"),
    ):
        write_bundle(
            out,
            [],
            MerkleTree(signed_log.leaves),
            signed_log.note,
            signed_log.key_text,
            {},
            signing_key=Ed25519PrivateKey.generate(),
        )
