"""Property-based tests of the JSON API against its own OpenAPI schema, with schemathesis.

One ``portal serve`` process on 127.0.0.1 (SQLite, filesystem blobs) serves the schema at
``/api/v1/openapi.json``. Schemathesis generates requests for every API operation from that schema and
checks each response: no 5xx, a status code the schema lists, and a body that matches the documented
schema. Requests are valid and invalid (schemathesis' positive and negative modes); invalid ones include
requests without the token. The token belongs to an admin and has every scope, so the valid requests
reach the handlers.

The strategies mix stored objects into the generated requests. Some uploads carry a real PDF from the
corpus, with generated or valid fields, share requests sometimes name a stored document, and path ids
sometimes name a stored share or document. So the success responses get checked too, not only the 4xx ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.conftest import CORPUS_DIR
from tests.load.servers import STAFF_PASSWORD, Deployment

pytestmark = pytest.mark.slow

ADMIN_EMAIL = "api-admin@riverside.test"
ZERO_ID = "00000000-0000-0000-0000-000000000000"
# A one-page report with /Rotate 90 from the corpus (892 bytes) that the portal accepts.
SAMPLE_PDF = "rotate-90-single-page.pdf"
VALID_UPLOAD_FIELDS = {
    "title": "Wound healing progress",
    "patient_ref": "PAT-0042",
    "report_date": "2026-11-30",
}
# Per operation. The module took 25 to 40 s on a 2-core machine, including about 10 s of server start-up.
MAX_EXAMPLES = 25
REQUEST_TIMEOUT_SECONDS = 30.0
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

# Every operation the schema lists. Erasure comes last because it erases a stored document.
API_OPERATIONS = [
    ("POST", "/api/v1/documents"),
    ("POST", "/api/v1/shares"),
    ("GET", "/api/v1/shares/{share_id}"),
    ("POST", "/api/v1/shares/{share_id}/reissue"),
    ("POST", "/api/v1/shares/{share_id}/revoke"),
    ("GET", "/api/v1/audit/events"),
    ("GET", "/api/v1/audit/bundle"),
    ("POST", "/api/v1/documents/{document_id}/erase"),
]


@dataclass(frozen=True)
class ApiServer:
    """A running portal with an admin token and a few stored objects for the strategies to use."""

    url: str
    headers: dict[str, str]
    pdf: bytes
    document_ids: tuple[str, ...]
    share_ids: tuple[str, ...]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Start ``portal serve`` on loopback, add an admin with an all-scope token and store two shares."""
    root = tmp_path_factory.mktemp("api-schema")
    deployment = Deployment(
        root=root,
        database_url=f"sqlite+aiosqlite:///{root / 'portal.db'}",
        extra_env={"PORTAL_BLOB_STORE": "filesystem"},
    )
    server = deployment.server("api")
    server.start()
    try:
        password = STAFF_PASSWORD + "\n"
        deployment.cli("users", "add", ADMIN_EMAIL, "--role", "admin", "--password-stdin", stdin=password)
        created = deployment.cli("tokens", "create", "--user", ADMIN_EMAIL, "--label", "schema test")
        token = created.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        pdf = (CORPUS_DIR / SAMPLE_PDF).read_bytes()
        yield _seed(server.url, headers, pdf)
    finally:
        deployment.stop_all()


def _seed(url: str, headers: dict[str, str], pdf: bytes) -> ApiServer:
    """Upload three reports and share two of them. The third one is for the erasure operation."""
    with httpx.Client(base_url=url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        document_ids = []
        for _ in range(3):
            files = {"file": ("report.pdf", pdf, "application/pdf")}
            uploaded = client.post("/api/v1/documents", files=files, data=VALID_UPLOAD_FIELDS)
            assert uploaded.status_code == 201, uploaded.text
            document_ids.append(uploaded.json()["id"])

        share_ids = []
        for document_id in document_ids[:2]:
            body = {
                "document_ids": [document_id],
                "profile": "patient",
                "recipient_name": "Zoë Łukasiewicz",
                "purpose": "Follow-up after treatment",
            }
            shared = client.post("/api/v1/shares", json=body)
            assert shared.status_code == 201, shared.text
            share_ids.append(shared.json()["id"])

    return ApiServer(url, headers, pdf, tuple(document_ids), tuple(share_ids))


@pytest.fixture(scope="module")
def api_schema(api_server: ApiServer) -> BaseSchema:
    """The schema as the server serves it to the admin token."""
    loaded = schemathesis.openapi.from_url(
        f"{api_server.url}/api/v1/openapi.json", headers=api_server.headers, timeout=REQUEST_TIMEOUT_SECONDS
    )
    loaded.config.update(base_url=api_server.url)
    return loaded


def cases_for(operation: APIOperation, server: ApiServer) -> st.SearchStrategy[Case]:
    """Return valid and invalid generated requests, some of them with a real PDF or a stored object's id."""
    generated = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )
    key = (operation.method.upper(), operation.path)

    if key == ("POST", "/api/v1/documents"):
        with_pdf = generated.map(lambda case: _replace_body(case, file=server.pdf))
        valid = generated.map(lambda case: _set_body(case, {"file": server.pdf, **VALID_UPLOAD_FIELDS}))
        return st.one_of(generated, with_pdf, valid)
    if key == ("POST", "/api/v1/shares"):
        stored = st.tuples(generated, st.sampled_from(server.document_ids[:2]))
        return st.one_of(generated, stored.map(lambda pair: _replace_body(pair[0], document_ids=[pair[1]])))
    if "{share_id}" in operation.path:
        stored = st.tuples(generated, st.sampled_from(server.share_ids))
        return st.one_of(generated, stored.map(lambda pair: _set_path(pair[0], share_id=pair[1])))
    if "{document_id}" in operation.path:
        # Only the third document: erasing it leaves the two shared ones to the other operations.
        erasable = server.document_ids[2]
        return st.one_of(generated, generated.map(lambda case: _set_path(case, document_id=erasable)))
    return generated


def _replace_body(case: Case, **fields: Any) -> Case:
    # Negative cases may carry a list or a string instead of an object. Those stay as generated.
    if isinstance(case.body, dict):
        case.body = {**case.body, **fields}
    return case


def _set_body(case: Case, body: dict[str, Any]) -> Case:
    case.body = body
    return case


def _set_path(case: Case, **values: str) -> Case:
    case.path_parameters = {**(case.path_parameters or {}), **values}
    return case


def test_schema_fetch_keeps_error_object(api_server: ApiServer) -> None:
    with httpx.Client(base_url=api_server.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        schema_answer = client.get("/api/v1/openapi.json", headers=api_server.headers)
        missing = client.get(f"/api/v1/shares/{ZERO_ID}", headers=api_server.headers)
        anonymous = client.get("/api/v1/audit/events")

    assert schema_answer.status_code == 200
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"


def test_schema_lists_api_routes(api_schema: BaseSchema) -> None:
    listed = {
        (result.ok().method.upper(), result.ok().path)
        for result in api_schema.get_all_operations()
        if isinstance(result, Ok)
    }
    errors = [result.err() for result in api_schema.get_all_operations() if not isinstance(result, Ok)]

    assert errors == []
    assert listed == set(API_OPERATIONS)


# NOTE: schemathesis.pytest.from_fixture fails on pytest 9.2 (schemathesis 4.32.5 sets Node._nodeid,
# which pytest 9.2 no longer has), so each operation runs its own Hypothesis test here.
@pytest.mark.parametrize(("method", "path"), API_OPERATIONS, ids=[f"{m} {p}" for m, p in API_OPERATIONS])
def test_operation_conforms(method: str, path: str, api_server: ApiServer, api_schema: BaseSchema) -> None:
    operation = api_schema[path][method]

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases_for(operation, api_server))
    def check(case: Case) -> None:
        case.call_and_validate(headers=api_server.headers, checks=CHECKS, timeout=REQUEST_TIMEOUT_SECONDS)

    check()
