"""The recipient's language: chosen per share, it sets the slip and the copy's footer."""

from __future__ import annotations

import re

import pypdfium2
from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.i18n import LANGUAGE_COOKIE
from tests.conftest import csrf_from
from tests.helpers import CLINICIAN, create_share, redeem, simple_pdf, token_for, upload_pdf
from tests.integration.test_dashboard import CODE_PATTERN, only_share, share_from_page, signed_in_upload


def page_texts(pdf: bytes, password: str | None = None) -> list[str]:
    document = pypdfium2.PdfDocument(pdf, password=password)
    try:
        return [document[index].get_textpage().get_text_range() for index in range(len(document))]
    finally:
        document.close()


async def test_slip_copy_and_pages_in_recipient_language(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    document_id = await signed_in_upload(app, client)
    form = await client.get(f"/staff/documents/{document_id}")
    assert '<option value="en" lang="en" selected>English</option>' in form.text, "the clinician's language"

    created = await share_from_page(client, document_id, language="fr")
    assert created.status_code == 201, created.text
    share = await only_share(app)
    assert share.language == "fr"
    # The page around the slip stays in the clinician's language; the slip is in French.
    assert "Share created" in created.text
    slip = created.text.split('<section class="slip"', 1)[1].split("</section>", 1)[0]
    assert 'lang="fr"' in slip
    assert "Ouvrez cette adresse dans un navigateur web" in slip
    assert "Open this address" not in slip

    code = CODE_PATTERN.search(created.text)
    assert code
    slip_pdf = await client.post(
        f"/staff/shares/{share.id}/slip", data={"_csrf_token": csrf_from(created.text), "code": code.group(1)}
    )
    assert slip_pdf.status_code == 200
    assert "Ouvrez cette adresse dans un navigateur web" in page_texts(slip_pdf.content)[0]

    # The recipient's pages follow the browser, not the share: this client asks for no language.
    client.cookies.clear()
    opened = await redeem(client, code.group(1))
    assert str(opened.url).endswith("/access/share")
    assert client.cookies.get(LANGUAGE_COOKIE) is None
    assert '<html lang="en">' in opened.text

    copy = await client.get("/access/download")
    assert copy.status_code == 200
    for number, text in enumerate(page_texts(copy.content, password=code.group(1)), start=1):
        footer = re.sub(r"\s+", " ", text)
        assert (
            f"Copie personnelle pour Jan Nowak · {share.created_at:%Y-%m-%d} · {share.reference}" in footer
        ), f"page {number}"
        assert "Personal copy" not in footer, f"page {number}"


async def test_api_language_field(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    document_ids = [uploaded.json()["id"]]

    german = await create_share(client, headers, document_ids, language="de")
    assert german.status_code == 201, german.text
    assert german.json()["language"] == "de"

    # Without the field the share takes the language of the request.
    default = await create_share(client, {**headers, "Accept-Language": "fr-CH, de;q=0.5"}, document_ids)
    assert default.status_code == 201, default.text
    assert default.json()["language"] == "fr"

    unknown = await create_share(client, headers, document_ids, language="xx")
    assert unknown.status_code == 400
    assert "Language 'xx' is not available. Use one of: en, de, fr." in unknown.text
    assert unknown.json()["error"]["code"] == "invalid_input"
