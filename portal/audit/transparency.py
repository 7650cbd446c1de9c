"""Other disclosures of a patient's reports, as shown on the patient's own recipient page.

When a share's profile is `patient`, the recipient page lists the other shares of the same documents:
the recipient profile's label (e.g. "Referring GP"), when the share was created and when it was first
opened. Names of other recipients are never shown, because a name typed by staff may identify someone
the patient should not learn about; the profile label says which kind of recipient it was.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.models import Share, ShareDocument
from portal.policies import Policies, profile_label

PATIENT_PROFILE = "patient"


@dataclass(frozen=True)
class OtherDisclosure:
    """Another share of the patient's reports, reduced to what the patient may see."""

    profile_label: str
    created_at: dt.datetime
    first_opened_at: dt.datetime | None
    revoked: bool


async def other_disclosures(db: AsyncSession, policies: Policies, share: Share) -> list[OtherDisclosure]:
    """List the other shares of this share's documents, oldest first.

    Returns an empty list unless the share's profile is `patient`.
    """
    if share.profile != PATIENT_PROFILE:
        return []

    document_ids = [link.document_id for link in share.documents]
    others = select(ShareDocument.share_id).where(ShareDocument.document_id.in_(document_ids))
    query = select(Share).where(Share.id.in_(others), Share.id != share.id).order_by(Share.created_at)
    result = []
    for other in (await db.scalars(query)).all():
        result.append(
            OtherDisclosure(
                profile_label=profile_label(policies, other.profile),
                created_at=other.created_at,
                first_opened_at=other.first_opened_at,
                revoked=other.revoked_at is not None,
            )
        )
    return result
