"""The recipient's steps over real HTTP, with cookies passed by hand.

httpx does not store ``Secure`` cookies for ``http://`` URLs, and the portal sets only ``__Host-`` cookies,
which are Secure. These helpers therefore read ``Set-Cookie`` themselves and send ``Cookie`` headers
explicitly, as a browser on ``https://`` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

CSRF_COOKIE = "__Host-csrftoken"
ACCESS_COOKIE = "__Host-portal-access"
_CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


def cookie_from(response: httpx.Response, name: str) -> str | None:
    """Return the value ``response`` sets for cookie ``name``, or None."""
    for header in response.headers.get_list("set-cookie"):
        key, _equals, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    return None


@dataclass(frozen=True)
class Redemption:
    status: int
    session_cookie: str | None


async def redeem(
    client: httpx.AsyncClient, base_url: str, code: str, *, forwarded_for: str | None = None
) -> Redemption:
    """Open the code form, post ``code`` and return the status and the recipient session cookie."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    form = await client.get(base_url + "/access", headers=headers)
    if form.status_code != 200:
        return Redemption(form.status_code, None)
    match = _CSRF_FIELD.search(form.text)
    csrf_cookie = cookie_from(form, CSRF_COOKIE)
    assert match and csrf_cookie, "GET /access returned no CSRF field or cookie"

    answer = await client.post(
        base_url + "/access",
        data={"code": code, "_csrf_token": match.group(1)},
        headers={**headers, "Cookie": f"{CSRF_COOKIE}={csrf_cookie}"},
    )
    session = cookie_from(answer, ACCESS_COOKIE) if answer.status_code == 303 else None
    return Redemption(answer.status_code, session)


async def download(client: httpx.AsyncClient, base_url: str, session_cookie: str) -> tuple[int, bytes]:
    """Download the copy of the session's share and return the status and the body."""
    response = await client.get(
        base_url + "/access/download", headers={"Cookie": f"{ACCESS_COOKIE}={session_cookie}"}
    )
    return response.status_code, response.content
