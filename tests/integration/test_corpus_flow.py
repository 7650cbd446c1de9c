"""Every file of the real-world PDF corpus through the HTTP API: upload, share, redeem, download.

``process`` files must yield a copy that opens only with the access code and shows the recipient's name on
every page; ``reject`` files must get a 4xx JSON error with a message and leave nothing stored; ``either``
files may go either way, but a copy must then be correct.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pikepdf
import pypdfium2
import pytest
import pytest_asyncio
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.models import Blob, Document
from tests.conftest import (
    BASE_URL,
    CorpusFile,
    corpus_files,
    database_backends,
    fresh_database,
    make_settings,
)
from tests.helpers import CLINICIAN, create_share, portal_of, token_for, upload_pdf

RECIPIENT = "Zoë Łukasiewicz"
FILES = corpus_files()

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=database_backends())
async def corpus_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Litestar, AsyncTestClient[Litestar], dict[str, str]]]:
    folder = tmp_path_factory.mktemp("corpus")
    with fresh_database(request.param, folder) as url:
        app = create_app(make_settings(folder / "data", url), pdf_workers=2)
        async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
            headers = await token_for(app, CLINICIAN, "clinician")
            yield app, client, headers


def extract_texts(data: bytes, password: str) -> list[str]:
    document = pypdfium2.PdfDocument(data, password=password)
    try:
        return [document[index].get_textpage().get_text_range() for index in range(len(document))]
    finally:
        document.close()


async def stored_counts(app: Litestar) -> tuple[int, int]:
    async with portal_of(app).transaction() as db:
        documents = await db.scalar(select(func.count()).select_from(Document))
        blobs = await db.scalar(select(func.count()).select_from(Blob))
    return documents or 0, blobs or 0


def stored_files(app: Litestar) -> int:
    root = Path(portal_of(app).settings.blob_dir)
    return sum(1 for path in root.rglob("*") if path.is_file()) if root.exists() else 0


async def share_and_download(
    client: AsyncTestClient[Litestar], headers: dict[str, str], document_id: str
) -> tuple[str, bytes]:
    shared = await create_share(client, headers, [document_id], recipient_name=RECIPIENT)
    assert shared.status_code == 201, shared.text
    code = shared.json()["access_code"]

    client.cookies.clear()
    landing = await client.get("/access")
    token = landing.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
    redeemed = await client.post("/access", data={"code": code, "_csrf_token": token})
    assert redeemed.status_code == 200, redeemed.text
    downloaded = await client.get("/access/download")
    assert downloaded.status_code == 200
    return code, downloaded.content


@pytest.mark.parametrize("corpus_file", FILES, ids=[entry.name for entry in FILES])
async def test_corpus_file_outcome(
    corpus_client: tuple[Litestar, AsyncTestClient[Litestar], dict[str, str]], corpus_file: CorpusFile
) -> None:
    app, client, headers = corpus_client
    before = await stored_counts(app)
    files_before = stored_files(app)

    answer = await upload_pdf(
        client, headers, corpus_file.path.read_bytes(), title=f"Corpus {corpus_file.name}"
    )
    assert answer.status_code < 500, answer.text

    if answer.status_code != 201:
        assert corpus_file.expected in ("reject", "either"), f"expected {corpus_file.expected}: {answer.text}"
        assert 400 <= answer.status_code < 500
        error = answer.json()["error"]
        assert error["code"]
        assert len(error["message"]) > 20
        assert await stored_counts(app) == before, "a rejected file left a row behind"
        assert stored_files(app) == files_before, "a rejected file left a blob behind"
        return

    assert corpus_file.expected in ("process", "either"), f"expected a rejection, got {answer.text}"
    code, copy = await share_and_download(client, headers, answer.json()["id"])

    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(copy))
    with pikepdf.open(io.BytesIO(copy), password=code) as opened:
        assert opened.encryption.R == 6
        pages = len(opened.pages)
    texts = extract_texts(copy, code)
    assert len(texts) == pages
    for number, text in enumerate(texts, start=1):
        assert RECIPIENT in text, f"page {number} has no watermark text"
