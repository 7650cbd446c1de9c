"""The retention policy in ``policies/retention.toml``, validated strictly.

An unknown key, a missing key, a wrong type or a value outside its range raises ``PolicyError`` with the
file, the key and the reason, like the other policy files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from portal.policies import TableReader, load_toml

POLICY_FILE = "retention.toml"


@dataclass(frozen=True)
class RetentionPolicy:
    """The retention clocks, in whole days or years."""

    documents_days_after_last_share: int
    access_log_years: int
    ip_reduce_days: int
    digest: str  # SHA-256 of the file, so a purge can be traced to the policy it applied

    def document_cutoff(self, now: dt.datetime) -> dt.datetime:
        """Return the moment before which a last share must have ended for its document to be erased."""
        return now - dt.timedelta(days=self.documents_days_after_last_share)

    def access_log_cutoff(self, now: dt.datetime) -> dt.datetime:
        """Return the moment before which access events are past the log's clock (365-day years)."""
        return now - dt.timedelta(days=365 * self.access_log_years)

    def ip_cutoff(self, now: dt.datetime) -> dt.datetime:
        """Return the moment before which stored IP prefixes are cleared."""
        return now - dt.timedelta(days=self.ip_reduce_days)


def load_retention_policy(policy_dir: Path) -> RetentionPolicy:
    """Load and validate ``retention.toml`` from ``policy_dir``.

    Raises:
        PolicyError: the file is missing, not TOML, or a key is unknown, missing or out of range.
    """
    file = Path(policy_dir) / POLICY_FILE
    reader = TableReader(file, "", load_toml(file))

    policy = RetentionPolicy(
        documents_days_after_last_share=reader.integer("documents_days_after_last_share", 1, 3650),
        access_log_years=reader.integer("access_log_years", 3, 30),
        ip_reduce_days=reader.integer("ip_reduce_days", 1, 365),
        digest=hashlib.sha256(file.read_bytes()).hexdigest(),
    )
    reader.finish()

    return policy
