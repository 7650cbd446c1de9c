"""Every route of the app, checked for anonymous and wrong-role access, so no route ships unguarded.

A route that is in none of the tables below fails the test: adding a route means deciding who may use it.
"""

from __future__ import annotations

import re
import uuid

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from tests.conftest import csrf_from
from tests.helpers import CLINICIAN, DPO, add_staff, sign_in, token_for

# Routes anyone may call; the value is the status an anonymous caller gets with no cookies or CSRF token.
PUBLIC = {
    ("GET", "/"): {303},
    ("GET", "/access"): {200},
    ("POST", "/access"): {403},  # the CSRF check answers first
    ("GET", "/access/share"): {410},
    ("GET", "/access/share/downloads"): {410},
    ("GET", "/access/download"): {410},
    ("GET", "/access/pages/{page:int}"): {410},
    ("POST", "/access/end"): {403},
    ("GET", "/staff/login"): {200},
    ("GET", "/healthz"): {200},
    ("POST", "/staff/login"): {403},
    ("POST", "/staff/logout"): {403},
    ("GET", "/staff/login/verify"): {303},
    ("POST", "/staff/login/verify"): {403},
    ("GET", "/staff/invitations/{token:str}"): {410},
    ("POST", "/staff/invitations/{token:str}"): {403},
    ("GET", "/staff/password-reset/{token:str}"): {410},
    ("POST", "/staff/password-reset/{token:str}"): {403},
}

# Path prefixes and the roles allowed there. Browser routes use the staff session, API routes a token.
ROLE_RULES = [
    ("/api/v1/openapi.json", "token", {"clinician", "dpo", "admin"}),
    ("/api/v1/audit", "token", {"dpo", "admin"}),
    ("/api/v1/", "token", {"clinician", "admin"}),
    ("/dpo/", "session", {"dpo", "admin"}),
    ("/admin", "session", {"admin"}),
    ("/staff/totp", "session", {"clinician", "dpo", "admin"}),
    ("/staff/home", "session", {"clinician", "dpo", "admin"}),
    ("/staff/password", "session", {"clinician", "dpo", "admin"}),
    ("/staff", "session", {"clinician", "admin"}),
]

# The DPO workspace's routes. Exports and every search take their filters in a POST body, so a patient
# reference or a recipient name never reaches an address; a GET route there accepts at most a share id.
DPO_ROUTES = {
    ("GET", "/dpo/events"),
    ("POST", "/dpo/events"),
    ("GET", "/dpo/events/{seq:int}"),
    ("GET", "/dpo/disclosures"),
    ("POST", "/dpo/disclosures"),
    ("GET", "/dpo/breach"),
    ("POST", "/dpo/breach"),
    ("POST", "/dpo/export"),
    ("POST", "/dpo/bundle"),
    ("GET", "/dpo/verify"),
    ("POST", "/dpo/verify"),
}


def concrete(path: str) -> str:
    path = re.sub(r"\{[a-z_]+:int\}", "1", path)
    return re.sub(r"\{[a-z_]+:(str|uuid)\}", str(uuid.uuid4()), path)


def inventory(app: Litestar) -> list[tuple[str, str]]:
    routes = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/static"):
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, route.path))
    return routes


def rule_for(path: str) -> tuple[str, set[str]] | None:
    for prefix, kind, roles in ROLE_RULES:
        if path.startswith(prefix):
            return kind, roles
    return None


async def test_every_route_is_classified(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    unclassified = [
        (method, path)
        for method, path in inventory(app)
        if (method, path) not in PUBLIC and rule_for(path) is None
    ]
    assert not unclassified, f"routes without an access rule: {unclassified}"


async def test_dpo_filters_only_by_post(app: Litestar) -> None:
    assert {route for route in inventory(app) if route[1].startswith("/dpo/")} == DPO_ROUTES


async def test_anonymous_gets_nothing(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    for method, path in inventory(app):
        answer = await client.request(method, concrete(path), follow_redirects=False)
        if (method, path) in PUBLIC:
            assert answer.status_code in PUBLIC[(method, path)], (method, path, answer.status_code)
            continue
        assert answer.status_code in (303, 401, 403), (method, path, answer.status_code)
        if answer.status_code == 303:
            assert answer.headers["location"] == "/staff/login"


async def test_wrong_role_gets_403(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    tokens = {
        "clinician": await token_for(app, CLINICIAN, "clinician"),
        "dpo": await token_for(app, DPO, "dpo"),
    }
    await add_staff(app, CLINICIAN, "clinician")

    checked = 0
    for signed_in in ("clinician", "dpo"):
        client.cookies.clear()
        await sign_in(client, CLINICIAN if signed_in == "clinician" else DPO)
        csrf = csrf_from((await client.get("/staff/login")).text)
        for method, path in inventory(app):
            rule = rule_for(path)
            if (method, path) in PUBLIC or rule is None:
                continue
            kind, roles = rule
            if signed_in in roles:
                continue
            headers = tokens[signed_in] if kind == "token" else {"x-csrftoken": csrf}
            answer = await client.request(method, concrete(path), headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (signed_in, method, path, answer.status_code)
            checked += 1
    assert checked >= 10
