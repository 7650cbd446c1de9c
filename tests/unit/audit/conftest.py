"""Fixtures for the access-log tests: events, a fixed log key and a signed log of twelve events."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.audit.canonical import event_leaf_hash
from portal.audit.checkpoint import Checkpoint, public_key_text, sign_checkpoint
from portal.audit.merkle import root_hash

ORIGIN = "clinic.example/access-log"
EventFactory = Callable[..., dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class SignedLog:
    """A log of events with its leaf hashes, a signed checkpoint over all of them and the key."""

    events: list[dict[str, Any]]
    leaves: list[bytes]
    note: str
    key: Ed25519PrivateKey
    key_text: str


@pytest.fixture
def make_event() -> EventFactory:
    """Return a factory for valid events; keyword arguments replace fields."""

    def factory(seq: int, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "seq": seq,
            "time": f"2025-03-{1 + seq % 28:02d}T09:{seq % 60:02d}:00.{seq:06d}Z",
            "event_type": "access.download.completed",
            "outcome": "success",
            "actor": f"recipient:7d3e1c52-0c1f-4c55-9a39-{seq:012d}",
            "share_id": f"7d3e1c52-0c1f-4c55-9a39-{seq:012d}",
            "document_id": "3f0b8a44-2d6e-4f7a-8d8e-0a4c1b2e3d4f",
            "patient_pseudonym": "k7x2mqplw3zb4rtyvnc5hjaedg",
            "purpose": "follow-up care",
            "ip_prefix": "203.0.113.0/24",
            "user_agent_family": "Firefox",
            "request_id": f"req-{seq:04d}",
            "details": {"pages": 4, "second_factor": False},
        }
        event.update(fields)
        return event

    return factory


@pytest.fixture(scope="session")
def log_key() -> Ed25519PrivateKey:
    """Return a fixed Ed25519 key, so golden output stays stable."""
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def signed_log(make_event: EventFactory, log_key: Ed25519PrivateKey) -> SignedLog:
    """Return twelve events, their leaf hashes and a checkpoint signed over all twelve."""
    events = [make_event(seq) for seq in range(1, 13)]
    events[4] = make_event(5, event_type="code.failed", outcome="failure", details={"attempt": 2})
    leaves = [event_leaf_hash(event) for event in events]

    checkpoint = Checkpoint(origin=ORIGIN, tree_size=len(leaves), root_hash=root_hash(leaves))
    note = sign_checkpoint(checkpoint, log_key, ORIGIN)
    return SignedLog(events, leaves, note, log_key, public_key_text(log_key, ORIGIN))
