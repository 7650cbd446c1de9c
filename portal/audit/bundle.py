"""Evidence bundles: an export of access-log events that a recipient can verify offline.

A bundle is a zip archive with these members:

    events.jsonl     the exported events, one canonical JSON object per line, in ascending seq order
    proofs.jsonl     one line per event: seq, leaf index (seq - 1), tree size and RFC 9162 audit path
    checkpoint.txt   the signed checkpoint (C2SP signed note) the proofs lead to
    public-key.txt   the log's public key as a vkey line
    manifest.json    the filters, the exported seqs as ranges, SHA-256 of events.jsonl, proofs.jsonl and
                     checkpoint.txt, and an Ed25519 signature over all of it by the log key
    README.txt       what the bundle proves and how to verify it

The inclusion proofs show that each event is in the log at its position with exactly this content.
The signed manifest lists which seqs the export contains, so deleting, reordering or truncating events
of a filtered export (whose seqs are not contiguous) is detected as well. The manifest signature uses
its own context string, so it can never be mistaken for a checkpoint signature.

The bundle cannot show that the filter selected every matching event: the server chose the events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.audit.canonical import EventInvalid, canonical_event_bytes
from portal.audit.checkpoint import (
    Checkpoint,
    CheckpointInvalid,
    VerifierKey,
    open_checkpoint,
    parse_public_key_text,
)
from portal.audit.merkle import MerkleTree, leaf_hash, verify_inclusion

BUNDLE_FORMAT = "clinic-share-portal/audit-bundle/v1"
# Prefixed to the canonical manifest before signing, so a manifest signature is never valid for a
# signed note or for any other message the log key signs.
MANIFEST_SIGNATURE_CONTEXT = b"clinic-share-portal audit bundle manifest v1\n"

EVENTS_NAME = "events.jsonl"
PROOFS_NAME = "proofs.jsonl"
CHECKPOINT_NAME = "checkpoint.txt"
PUBLIC_KEY_NAME = "public-key.txt"
MANIFEST_NAME = "manifest.json"
README_NAME = "README.txt"
REQUIRED_MEMBERS = (EVENTS_NAME, PROOFS_NAME, CHECKPOINT_NAME, PUBLIC_KEY_NAME, MANIFEST_NAME)

# Read limits for the verifier, which opens archives from anywhere. An event line is well under 4 KiB,
# and so is a proof line for any 64-bit tree size. The manifest of a filtered export of a million
# separate seqs is about 20 MB.
MAX_LINE_BYTES = 64 * 1024
MAX_SMALL_MEMBER_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

_FILTER_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FILTER_VALUE = 256

# Fixed member timestamps make two exports of the same data byte-identical.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BundleError(Exception):
    """The bundle cannot be written because its inputs disagree (events, leaf hashes, checkpoint)."""


@dataclass(frozen=True)
class VerifyReport:
    """The result of `verify_bundle`.

    Attributes:
        ok: True only if every check passed.
        checked: number of events whose inclusion proof verified before the first failure.
        first_failure: the first failed check, naming the member, line and seq; None when ok.
        trusted_key: True if the checks used a key given by the caller. False means the key came
            from the bundle itself, which proves integrity against the log key but not whose key it is.
        checkpoint: the verified tree head, or None if verification failed before it.
    """

    ok: bool
    checked: int
    first_failure: str | None
    trusted_key: bool = False
    checkpoint: Checkpoint | None = None


class _Failure(Exception):
    """One failed verification check; the message becomes VerifyReport.first_failure."""


def write_bundle(
    out: BinaryIO,
    events: Iterable[Mapping[str, Any]],
    leaves_for_proofs: Sequence[bytes] | MerkleTree,
    checkpoint_note: str,
    public_key_text: str,
    filters: Mapping[str, str],
    *,
    signing_key: Ed25519PrivateKey,
    exported_at: str | None = None,
) -> None:
    """Write an evidence bundle for `events` to `out` as a zip archive.

    Events are streamed into the archive, so memory grows only with the number of exported seqs
    (one int each) and with the proof tree.

    Args:
        out: a binary file opened for writing; it need not be seekable.
        events: the exported events in ascending seq order, all with seq <= the checkpoint size.
        leaves_for_proofs: the leaf hash of every log event from seq 1 to the checkpoint's tree size
            (index = seq - 1), or a `MerkleTree` built from them.
        checkpoint_note: the signed checkpoint the proofs lead to.
        public_key_text: the log's vkey line; it must belong to `signing_key`.
        filters: the export filters as shown to the user, e.g. {"patient": "<pseudonym>"}.
        signing_key: the log's Ed25519 key, which signs the manifest.
        exported_at: the export time (UTC RFC 3339), recorded in the manifest.

    Raises:
        BundleError: the inputs disagree. The message names the event or hash, because a stored row
            that no longer matches its leaf hash means the database was altered.
    """
    verifier = _verifier_for_signing(public_key_text, signing_key)
    checkpoint = _open_own_checkpoint(checkpoint_note, verifier)
    tree = _proof_tree(leaves_for_proofs, checkpoint)
    clean_filters = _check_filters(filters)

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        seqs, events_digest = _write_events(archive, events, tree, checkpoint)
        proofs_digest = _write_proofs(archive, seqs, tree)
        _write_member(archive, CHECKPOINT_NAME, checkpoint_note.encode("utf-8"))
        _write_member(archive, PUBLIC_KEY_NAME, (public_key_text.strip() + "\n").encode("utf-8"))

        manifest = {
            "format": BUNDLE_FORMAT,
            "origin": checkpoint.origin,
            "tree_size": checkpoint.tree_size,
            "root_hash": _b64(checkpoint.root_hash),
            "checkpoint_sha256": hashlib.sha256(checkpoint_note.encode("utf-8")).hexdigest(),
            "public_key": public_key_text.strip(),
            "filters": clean_filters,
            "exported_at": exported_at,
            "event_count": len(seqs),
            "seq_ranges": _seq_ranges(seqs),
            "events_sha256": events_digest,
            "proofs_sha256": proofs_digest,
        }
        signature = signing_key.sign(MANIFEST_SIGNATURE_CONTEXT + _canonical_json(manifest))
        document = {
            "manifest": manifest,
            "signature": {
                "algorithm": "Ed25519",
                "key_name": verifier.name,
                "key_id": verifier.key_id.hex(),
                "value": _b64(signature),
            },
        }
        manifest_text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        _write_member(archive, MANIFEST_NAME, manifest_text.encode("utf-8"))
        _write_member(archive, README_NAME, _readme(checkpoint, verifier, len(seqs), clean_filters))


def verify_bundle(path: Path, trusted_public_key_text: str | None = None) -> VerifyReport:
    """Verify an evidence bundle offline and report the first check that fails.

    The checks run in this order. First the public key, the checkpoint signature, the manifest
    signature and the manifest's agreement with the checkpoint. Then each event line, against the
    manifest's seq list and its inclusion proof. Last, the SHA-256 of events.jsonl and proofs.jsonl.

    Args:
        path: the bundle file.
        trusted_public_key_text: the log's vkey line obtained outside the bundle. Without it the key
            in public-key.txt is used and the report has trusted_key=False.
    """
    state = _VerifyState()
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(archive)
            key = _choose_key(archive, trusted_public_key_text, state)
            state.checkpoint = _verify_checkpoint(archive, key)
            manifest = _verify_manifest(archive, key, state.checkpoint)
            events_digest, proofs_digest = _verify_events(archive, manifest, state.checkpoint, state)
            if events_digest != manifest["events_sha256"]:
                raise _Failure(
                    f"{EVENTS_NAME}: its SHA-256 differs from the signed manifest although every event "
                    "verified; bytes outside the events were changed"
                )
            if proofs_digest != manifest["proofs_sha256"]:
                raise _Failure(f"{PROOFS_NAME}: its SHA-256 differs from the signed manifest")
    except _Failure as failure:
        return state.report(str(failure))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        return state.report(f"{path.name} is not a readable zip archive ({type(error).__name__}: {error})")

    return state.report(None)


class _VerifyState:
    def __init__(self) -> None:
        self.checked = 0
        self.trusted_key = False
        self.checkpoint: Checkpoint | None = None

    def report(self, failure: str | None) -> VerifyReport:
        return VerifyReport(
            ok=failure is None,
            checked=self.checked,
            first_failure=failure,
            trusted_key=self.trusted_key,
            checkpoint=self.checkpoint,
        )


# Writing


def _verifier_for_signing(public_key_text: str, signing_key: Ed25519PrivateKey) -> VerifierKey:
    try:
        verifier = parse_public_key_text(public_key_text)
    except CheckpointInvalid as error:
        raise BundleError(f"the public key line is invalid: {error}") from None

    signing_public = signing_key.public_key()
    if signing_public != verifier.public_key:
        raise BundleError(
            f"the signing key does not belong to public key {verifier.name}+{verifier.key_id.hex()}; "
            "pass the log's checkpoint key and its vkey line"
        )
    return verifier


def _open_own_checkpoint(note: str, verifier: VerifierKey) -> Checkpoint:
    try:
        return open_checkpoint(note, verifier.public_key, verifier.name)
    except CheckpointInvalid as error:
        raise BundleError(f"the checkpoint does not verify with the log key: {error}") from None


def _proof_tree(leaves: Sequence[bytes] | MerkleTree, checkpoint: Checkpoint) -> MerkleTree:
    tree = leaves if isinstance(leaves, MerkleTree) else MerkleTree(leaves)
    if tree.size != checkpoint.tree_size:
        raise BundleError(
            f"{tree.size} leaf hashes were given for a checkpoint of tree size {checkpoint.tree_size}; "
            "pass the leaf hashes of seq 1 to the checkpoint's tree size"
        )
    if tree.root() != checkpoint.root_hash:
        raise BundleError(
            f"the stored leaf hashes of seq 1..{checkpoint.tree_size} do not give the signed root; "
            "the access_event table differs from what was signed, so investigate before exporting"
        )
    return tree


def _check_filters(filters: Mapping[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not _FILTER_KEY_PATTERN.fullmatch(key):
            raise BundleError(f"filter name {key!r} does not match {_FILTER_KEY_PATTERN.pattern!r}")
        if not isinstance(value, str) or len(value) > MAX_FILTER_VALUE:
            raise BundleError(f"filter {key}: expected a string of at most {MAX_FILTER_VALUE} characters")
        clean[key] = value
    return clean


def _write_events(
    archive: zipfile.ZipFile, events: Iterable[Mapping[str, Any]], tree: MerkleTree, checkpoint: Checkpoint
) -> tuple[list[int], str]:
    seqs: list[int] = []
    digest = hashlib.sha256()

    with archive.open(_member_info(EVENTS_NAME), "w", force_zip64=True) as member:
        for event in events:
            line = canonical_event_bytes(event)
            seq = event["seq"]
            _check_export_order(seq, seqs, checkpoint)

            # A row whose bytes no longer give the leaf hash recorded at write time was altered in the
            # database. Exporting it would hand out evidence that fails verification.
            stored = tree.leaf(seq - 1)
            if leaf_hash(line) != stored:
                raise BundleError(
                    f"event seq {seq} does not match its stored leaf hash; the row was altered after it "
                    "was logged, so investigate before exporting"
                )

            member.write(line + b"\n")
            digest.update(line + b"\n")
            seqs.append(seq)

    return seqs, digest.hexdigest()


def _check_export_order(seq: int, seqs: list[int], checkpoint: Checkpoint) -> None:
    if seqs and seq <= seqs[-1]:
        raise BundleError(f"event seq {seq} follows seq {seqs[-1]}; pass events in ascending seq order")
    if seq > checkpoint.tree_size:
        raise BundleError(
            f"event seq {seq} is newer than the checkpoint (tree size {checkpoint.tree_size}); "
            "sign a new checkpoint before exporting it"
        )


def _write_proofs(archive: zipfile.ZipFile, seqs: list[int], tree: MerkleTree) -> str:
    digest = hashlib.sha256()
    with archive.open(_member_info(PROOFS_NAME), "w", force_zip64=True) as member:
        for seq in seqs:
            record = {
                "seq": seq,
                "leaf_index": seq - 1,
                "tree_size": tree.size,
                "audit_path": [_b64(node) for node in tree.inclusion_proof(seq - 1)],
            }
            line = _canonical_json(record) + b"\n"
            member.write(line)
            digest.update(line)
    return digest.hexdigest()


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    archive.writestr(_member_info(name), data)


def _member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _seq_ranges(seqs: list[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for seq in seqs:
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


# Verifying


def _check_members(archive: zipfile.ZipFile) -> None:
    names = archive.namelist()
    # A zip archive may hold two entries of one name, and readers disagree about which one counts.
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise _Failure(f"the archive contains more than one entry named {duplicates}")
    missing = [name for name in REQUIRED_MEMBERS if name not in names]
    if missing:
        raise _Failure(f"the archive lacks {missing}; it is not a complete evidence bundle")


def _choose_key(archive: zipfile.ZipFile, trusted_text: str | None, state: _VerifyState) -> VerifierKey:
    try:
        bundled = parse_public_key_text(_read_text(archive, PUBLIC_KEY_NAME, MAX_SMALL_MEMBER_BYTES))
    except CheckpointInvalid as error:
        raise _Failure(f"{PUBLIC_KEY_NAME}: {error}") from None
    if trusted_text is None:
        return bundled

    try:
        trusted = parse_public_key_text(trusted_text)
    except CheckpointInvalid as error:
        raise _Failure(f"the trusted public key given for verification is invalid: {error}") from None
    state.trusted_key = True

    if (bundled.name, bundled.key_id, bundled.public_key) != (
        trusted.name,
        trusted.key_id,
        trusted.public_key,
    ):
        raise _Failure(
            f"{PUBLIC_KEY_NAME} contains key {bundled.name}+{bundled.key_id.hex()}, not the trusted key "
            f"{trusted.name}+{trusted.key_id.hex()}; the bundle was signed by another key"
        )
    return trusted


def _verify_checkpoint(archive: zipfile.ZipFile, key: VerifierKey) -> Checkpoint:
    note = _read_text(archive, CHECKPOINT_NAME, MAX_SMALL_MEMBER_BYTES)
    try:
        return open_checkpoint(note, key.public_key, key.name)
    except CheckpointInvalid as error:
        raise _Failure(f"{CHECKPOINT_NAME}: {error}") from None


def _verify_manifest(archive: zipfile.ZipFile, key: VerifierKey, checkpoint: Checkpoint) -> dict[str, Any]:
    document = _parse_json(_read_text(archive, MANIFEST_NAME, MAX_MANIFEST_BYTES), MANIFEST_NAME)
    if not isinstance(document, dict) or set(document) != {"manifest", "signature"}:
        raise _Failure(f"{MANIFEST_NAME}: expected an object with 'manifest' and 'signature'")
    manifest, signature = document["manifest"], document["signature"]
    if not isinstance(manifest, dict) or not isinstance(signature, dict):
        raise _Failure(f"{MANIFEST_NAME}: 'manifest' and 'signature' must be objects")

    _verify_manifest_signature(manifest, signature, key)
    _check_manifest_fields(manifest, checkpoint, archive)
    return manifest


def _verify_manifest_signature(manifest: dict[str, Any], signature: dict[str, Any], key: VerifierKey) -> None:
    if signature.get("key_name") != key.name or signature.get("key_id") != key.key_id.hex():
        raise _Failure(
            f"{MANIFEST_NAME}: signed by key {signature.get('key_name')}+{signature.get('key_id')}, "
            f"not by {key.name}+{key.key_id.hex()}"
        )
    value = signature.get("value")
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""

    try:
        key.public_key.verify(raw, MANIFEST_SIGNATURE_CONTEXT + _canonical_json(manifest))
    except (InvalidSignature, ValueError, TypeError):
        raise _Failure(
            f"{MANIFEST_NAME}: the signature does not verify; the manifest (filters, seq list or "
            "hashes) was altered after export"
        ) from None


def _check_manifest_fields(
    manifest: dict[str, Any], checkpoint: Checkpoint, archive: zipfile.ZipFile
) -> None:
    if manifest.get("format") != BUNDLE_FORMAT:
        raise _Failure(f"{MANIFEST_NAME}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}")

    signed_head = (manifest.get("origin"), manifest.get("tree_size"), manifest.get("root_hash"))
    if signed_head != (checkpoint.origin, checkpoint.tree_size, _b64(checkpoint.root_hash)):
        raise _Failure(f"{MANIFEST_NAME}: origin, tree size or root differ from {CHECKPOINT_NAME}")
    note_bytes = _read_text(archive, CHECKPOINT_NAME, MAX_SMALL_MEMBER_BYTES).encode("utf-8")
    if manifest.get("checkpoint_sha256") != hashlib.sha256(note_bytes).hexdigest():
        raise _Failure(f"{MANIFEST_NAME}: the checkpoint hash differs from {CHECKPOINT_NAME}")

    ranges = manifest.get("seq_ranges")
    total = _check_seq_ranges(ranges, checkpoint.tree_size)
    if manifest.get("event_count") != total:
        raise _Failure(f"{MANIFEST_NAME}: event_count differs from the number of seqs in seq_ranges")
    for name in ("events_sha256", "proofs_sha256"):
        if not isinstance(manifest.get(name), str):
            raise _Failure(f"{MANIFEST_NAME}: {name} is missing")


def _check_seq_ranges(ranges: Any, tree_size: int) -> int:
    if not isinstance(ranges, list):
        raise _Failure(f"{MANIFEST_NAME}: seq_ranges is not a list")

    total = 0
    previous_last = 0
    for item in ranges:
        valid = (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(bound, int) and not isinstance(bound, bool) for bound in item)
        )
        if not valid or not previous_last < item[0] <= item[1] <= tree_size:
            raise _Failure(
                f"{MANIFEST_NAME}: seq range {item!r} is malformed, out of order, overlapping "
                f"or beyond tree size {tree_size}"
            )
        total += item[1] - item[0] + 1
        previous_last = item[1]
    return total


def _verify_events(
    archive: zipfile.ZipFile, manifest: dict[str, Any], checkpoint: Checkpoint, state: _VerifyState
) -> tuple[str, str]:
    expected_seqs = _iterate_ranges(manifest["seq_ranges"])
    listed = _RangeSet(manifest["seq_ranges"])
    events_digest = hashlib.sha256()
    proofs_digest = hashlib.sha256()

    with archive.open(EVENTS_NAME) as events, archive.open(PROOFS_NAME) as proofs:
        line_number = 0
        while True:
            raw = _read_line(events, EVENTS_NAME, line_number + 1)
            if raw is None:
                break
            line_number += 1
            events_digest.update(raw)

            event = _parse_event_line(raw, line_number)
            seq = event["seq"]
            _check_position(seq, next(expected_seqs, None), listed, line_number)

            proof_raw = _read_line(proofs, PROOFS_NAME, line_number)
            if proof_raw is None:
                raise _Failure(f"{PROOFS_NAME} ends before the proof of seq {seq} (line {line_number})")
            proofs_digest.update(proof_raw)
            path = _parse_proof_line(proof_raw, line_number, seq, checkpoint)

            canonical = _canonical_event(event, seq, line_number)
            if not verify_inclusion(
                seq - 1, checkpoint.tree_size, leaf_hash(canonical), path, checkpoint.root_hash
            ):
                raise _Failure(
                    f"event seq {seq} ({EVENTS_NAME} line {line_number}) does not match the signed "
                    "checkpoint root: a field of this event was edited, or its proof was altered"
                )
            if canonical + b"\n" != raw:
                raise _Failure(
                    f"event seq {seq} ({EVENTS_NAME} line {line_number}) is not in canonical form; "
                    "the line was rewritten"
                )
            state.checked += 1

        missing = next(expected_seqs, None)
        if missing is not None:
            raise _Failure(
                f"{EVENTS_NAME} ends after {line_number} events but the signed manifest lists "
                f"{manifest['event_count']}; seq {missing} and any later ones are missing (truncated)"
            )
        if _read_line(proofs, PROOFS_NAME, line_number + 1) is not None:
            raise _Failure(f"{PROOFS_NAME} has more lines than {EVENTS_NAME} has events")

    return events_digest.hexdigest(), proofs_digest.hexdigest()


def _check_position(seq: int, expected: int | None, listed: _RangeSet, line_number: int) -> None:
    where = f"{EVENTS_NAME} line {line_number}"
    if expected is None:
        raise _Failure(f"{where} contains seq {seq}, beyond the last seq the signed manifest lists")
    if seq == expected:
        return
    if seq not in listed:
        raise _Failure(
            f"{where} contains seq {seq}, which the signed manifest does not list (inserted or edited)"
        )
    if seq > expected:
        raise _Failure(
            f"{where} contains seq {seq} where the signed manifest lists seq {expected}; "
            f"seq {expected} was deleted or moved"
        )
    raise _Failure(
        f"{where} contains seq {seq} where the signed manifest lists seq {expected}; "
        f"seq {seq} is out of order or repeated"
    )


def _parse_event_line(raw: bytes, line_number: int) -> dict[str, Any]:
    where = f"{EVENTS_NAME} line {line_number}"
    event = _parse_json(_decode_line(raw, where), where)
    if not isinstance(event, dict):
        raise _Failure(f"{EVENTS_NAME} line {line_number} is not a JSON object")
    seq = event.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise _Failure(f"{EVENTS_NAME} line {line_number} has no integer seq")
    return event


def _canonical_event(event: dict[str, Any], seq: int, line_number: int) -> bytes:
    try:
        return canonical_event_bytes(event)
    except EventInvalid as error:
        raise _Failure(
            f"event seq {seq} ({EVENTS_NAME} line {line_number}) is not a valid event: {error}"
        ) from None


def _parse_proof_line(raw: bytes, line_number: int, seq: int, checkpoint: Checkpoint) -> list[bytes]:
    where = f"{PROOFS_NAME} line {line_number}"
    record = _parse_json(_decode_line(raw, where), where)
    if not isinstance(record, dict):
        raise _Failure(f"{where} is not a JSON object")

    if record.get("seq") != seq or record.get("leaf_index") != seq - 1:
        raise _Failure(
            f"{where} is the proof of seq {record.get('seq')!r}, but {EVENTS_NAME} line {line_number} "
            f"contains seq {seq}; the two files are out of step"
        )
    if record.get("tree_size") != checkpoint.tree_size:
        raise _Failure(f"{where} is for tree size {record.get('tree_size')!r}, not {checkpoint.tree_size}")

    path = record.get("audit_path")
    if not isinstance(path, list) or not all(isinstance(node, str) for node in path):
        raise _Failure(f"{where}: audit_path is not a list of base64 strings")
    try:
        return [base64.b64decode(node, validate=True) for node in path]
    except (binascii.Error, ValueError):
        raise _Failure(f"{where}: audit_path contains invalid base64") from None


def _read_line(member: IO[bytes], name: str, line_number: int) -> bytes | None:
    raw = member.readline(MAX_LINE_BYTES + 1)
    if not raw:
        return None
    if len(raw) > MAX_LINE_BYTES:
        raise _Failure(f"{name} line {line_number} is longer than {MAX_LINE_BYTES} bytes")
    if not raw.endswith(b"\n"):
        raise _Failure(f"{name} line {line_number} has no line end; the file was cut off")
    return raw


def _read_text(archive: zipfile.ZipFile, name: str, limit: int) -> str:
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise _Failure(f"{name} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failure(f"{name} is not valid UTF-8") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError) as error:
        raise _Failure(f"{where} is not valid JSON ({error})") from None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate keys, readers disagree about which value counts; Python keeps the last one.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _decode_line(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failure(f"{where} is not valid UTF-8") from None


def _iterate_ranges(ranges: list[list[int]]) -> Iterator[int]:
    for first, last in ranges:
        yield from range(first, last + 1)


class _RangeSet:
    """Membership test over sorted, disjoint, inclusive seq ranges by binary search."""

    def __init__(self, ranges: list[list[int]]) -> None:
        self._firsts = [first for first, _ in ranges]
        self._lasts = [last for _, last in ranges]

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        low, high = 0, len(self._firsts)
        while low < high:
            middle = (low + high) // 2
            if self._lasts[middle] < seq:
                low = middle + 1
            else:
                high = middle
        return low < len(self._firsts) and self._firsts[low] <= seq


# Shared


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _readme(checkpoint: Checkpoint, verifier: VerifierKey, count: int, filters: Mapping[str, str]) -> bytes:
    filter_lines = "\n".join(f"    {key} = {value}" for key, value in sorted(filters.items())) or "    (none)"
    text = _README_TEMPLATE.format(
        count=count,
        origin=checkpoint.origin,
        tree_size=checkpoint.tree_size,
        key_line=f"{verifier.name}+{verifier.key_id.hex()}",
        filters=filter_lines,
    )
    return text.encode("utf-8")


_README_TEMPLATE = """\
Access-log evidence bundle
==========================

This archive is an export of {count} events from the access log "{origin}".
The log had {tree_size} events when its checkpoint was signed.
Filters used for the export:
{filters}

What the bundle proves
----------------------
If verification succeeds:
  - every event in events.jsonl is in the log, at position seq, with exactly the content shown;
  - the log's key signed a checkpoint of {tree_size} events that contains them all. Every later
    checkpoint that is consistent with this one (RFC 9162 consistency proof) still contains these
    events unchanged;
  - nothing was removed from, added to, reordered in or cut off the end of this export after it
    was made, because the signed manifest.json lists the seqs it contains and hashes every file.

What it does not prove
----------------------
  - That the filter selected every matching event: the portal chose which events to export.
    Gaps in seq numbers are events outside the filter; the log itself has no gaps.
  - Anything about events after the checkpoint (seq above {tree_size}).
  - Who holds the signing key. Compare the key below with the one the clinic published or gave you
    separately, and verify against that copy, not only against public-key.txt.

Signing key (key name + key ID): {key_line}
The full public key line is in public-key.txt.

How to verify offline
---------------------
With the portal's command line tool, and the public key line obtained separately:

    portal audit verify bundle.zip --public-key "<public key line>"

It prints the number of events checked, or the first event, proof or file that fails.

To verify with other tools, follow these published formats:
  1. checkpoint.txt is a C2SP signed note (c2sp.org/signed-note) holding a C2SP checkpoint
     (c2sp.org/tlog-checkpoint): origin, tree size, base64 root hash. The signature is Ed25519.
     public-key.txt uses the note verifier key form <name>+<key ID>+<base64 key>.
  2. manifest.json: the Ed25519 signature in "signature" covers the bytes
     "clinic-share-portal audit bundle manifest v1" + newline + the "manifest" object serialised as
     JSON with sorted keys, no spaces and UTF-8 text. The manifest lists the seqs as inclusive
     ranges and the SHA-256 of events.jsonl, proofs.jsonl and checkpoint.txt.
  3. Each line of events.jsonl, without its final newline, is the log entry. Its leaf hash is
     SHA-256(0x00 || line). Line N of proofs.jsonl holds the RFC 9162 audit path (base64, lowest
     level first) from that leaf, at leaf index seq - 1, to the checkpoint's root hash
     (RFC 9162 section 2.1.3.2).

Times are UTC. Patient references appear only as keyed pseudonyms; IP addresses only as network
prefixes.
"""
