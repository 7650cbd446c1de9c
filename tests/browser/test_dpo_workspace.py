"""The DPO workspace in a real Chromium, after a share was created, opened and downloaded.

The DPO filters the access log, opens one event, reads the disclosure report of the share's patient
reference, scopes a breach of that share, and exports the share's events as CSV and JSON Lines. Then the
DPO searches by patient reference, pages to older events and exports both formats, and no address the
browser requested, nor the server's log, holds that reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Locator, Page, expect

from portal.audit.exporters import EXPORT_FIELDS
from tests.browser.conftest import PortalServer, Visitor
from tests.browser.test_flows import (
    EVENT_TYPES_JS,
    PATIENT_REF,
    RECIPIENT,
    create_share,
    download,
    redeem_code,
    sign_in,
    upload_report,
    wait_for_page_images,
    wait_for_status,
)
from tests.helpers import CLINICIAN, DPO

pytestmark = pytest.mark.browser

OpenVisitor = Callable[[str], Visitor]

REPORT_TITLE = "Disclosure walk report"
REPORT_PAGES = 6
PURPOSE = "Second look at the healing wound"
PROFILE_LABEL = "Patient"
SHARE_EVENTS = {"share.created", "code.redeemed", "access.download.completed"}
MINUTE_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")
SHARE_PATH = re.compile(r"/staff/shares/([0-9a-f-]+)$")
# Rows on one page of the DPO's results, as in portal.dpo.controllers.PAGE_SIZE.
PAGE_SIZE = 50
# Each view of the share page records one event per page image, so this many more views push the
# patient's events past one page of results.
EXTRA_VIEWS = 7


def share_once_downloaded(open_visitor: OpenVisitor, tmp_path: Path) -> tuple[str, Visitor]:
    """Upload a report, share it with the patient, redeem and download it; return the share id and recipient."""
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    upload_report(clinician, REPORT_TITLE)
    code = create_share(clinician, PURPOSE)
    clinician.page.get_by_role("link", name="Follow this share").click()
    clinician.page.wait_for_url(SHARE_PATH)
    share_url = clinician.page.url
    share_id = SHARE_PATH.search(share_url)
    assert share_id is not None, f"no share id in {share_url}"

    recipient = open_visitor("recipient")
    redeem_code(recipient, code)
    wait_for_page_images(recipient, REPORT_PAGES)
    download(recipient, recipient.page.get_by_role("link", name="Download the report (PDF)"), tmp_path)

    status = wait_for_status(clinician, share_url, "downloaded")
    assert status == "downloaded", "the download was recorded before the DPO looks at the log"
    clinician.assert_console_clean()
    recipient.assert_console_clean()
    return share_id.group(1), recipient


def table_row(table: Locator, row: Locator) -> dict[str, str]:
    """Return one body row of ``table`` as a mapping from column heading to cell text."""
    headings = [text.strip() for text in table.locator("thead th").all_inner_texts()]
    cells = [text.strip() for text in row.locator("td").all_inner_texts()]
    assert len(headings) == len(cells), f"{len(cells)} cells under {len(headings)} headings: {cells}"
    return dict(zip(headings, cells, strict=True))


def summary_value(page: Page, term: str) -> Locator:
    return page.locator(f"dl.summary dt:text-is('{term}') + dd")


def swap_with_htmx(page: Page, path: str, submit: Locator, status: int = 200) -> None:
    """Click a filter form's submit button and check that htmx fetched only the partial."""
    with page.expect_response(
        lambda response: response.url.endswith(path) and response.request.method == "POST"
    ) as swap:
        submit.click()
    assert swap.value.request.headers.get("hx-request") == "true", f"{path} was not requested by htmx"
    assert swap.value.status == status, f"{swap.value.url} answered {swap.value.status}"
    assert page.url.endswith(path), "the filter swaps the results without changing the address"
    expect(page.get_by_role("heading", level=1)).to_have_count(1)


def test_dpo_workspace_walk(open_visitor: OpenVisitor, portal_server: PortalServer, tmp_path: Path) -> None:
    share_id, recipient = share_once_downloaded(open_visitor, tmp_path)

    dpo = open_visitor("dpo")
    requested: list[str] = []
    dpo.page.on("request", lambda request: requested.append(request.url))
    sign_in(dpo, DPO)
    page = dpo.page
    assert page.url.endswith("/dpo/events")
    expect(page.locator("#results tbody tr").first).to_be_visible()
    dpo.shot("events")

    # Access log filtered by the share: every row belongs to it, and the share's steps are all there.
    page.get_by_label("Share reference or id").fill(share_id)
    swap_with_htmx(page, "/dpo/events", page.get_by_role("button", name="Search"))
    rows = page.locator("#results tbody tr")
    # The Share column names the share by its printed reference and keeps the id in the title.
    share_cell = rows.first.locator("td:nth-child(6) span")
    expect(share_cell).to_have_attribute("title", share_id)
    reference = share_cell.inner_text()
    assert re.fullmatch(r"S-[0-9A-Z]{8}", reference), f"{reference!r} is not a share reference"
    dpo.shot("events-of-share")
    assert set(page.locator("#results tbody td:nth-child(6)").all_inner_texts()) == {reference}
    actors = set(page.locator("#results tbody td:nth-child(5)").all_inner_texts())
    assert CLINICIAN in actors, "the clinician's events name their e-mail address"
    assert f"Recipient of {reference}" in actors
    recipient_reference = page.locator("#results tbody td:nth-child(5) .nowrap").first
    expect(recipient_reference).to_have_text(reference)
    assert recipient_reference.evaluate("element => getComputedStyle(element).whiteSpace") == "nowrap"
    types = set(page.locator("#results tbody td[data-event-type]").evaluate_all(EVENT_TYPES_JS))
    assert types >= SHARE_EVENTS, f"the share's events lack {sorted(SHARE_EVENTS - types)}"

    # Event detail of the completed download, with the share it belongs to.
    completed = rows.filter(has=page.locator('td[data-event-type="access.download.completed"]'))
    expect(completed).to_have_count(1)
    completed.locator("td:first-child a").click()
    page.wait_for_url(re.compile(r"/dpo/events/\d+$"))
    dpo.shot("event-detail")
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Event \d+$"))
    expect(summary_value(page, "Event")).to_have_text("Download completed (access.download.completed)")
    expect(summary_value(page, "Outcome")).to_have_text("Success")
    # Actor and share carry the names the table shows, above the ids the log stores.
    expect(summary_value(page, "Share")).to_have_text(f"{reference}{share_id}")
    expect(summary_value(page, "Actor")).to_have_text(
        re.compile(rf"^Recipient of {reference}recipient:{share_id}$")
    )
    expect(summary_value(page, "Leaf hash (SHA-256)")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    share_panel = page.get_by_role("region", name=re.compile(r"^Share "))
    expect(share_panel).to_contain_text(RECIPIENT)
    expect(share_panel).to_contain_text(PURPOSE)
    expect(page.get_by_role("listitem").filter(has_text=REPORT_TITLE)).to_have_count(1)

    # Back to the list: the page loads afresh, so the form must not show the old filter above unfiltered
    # results (an export from there would hold every event).
    page.go_back()
    page.wait_for_url(re.compile(r"/dpo/events$"))
    expect(page.get_by_label("Share reference or id")).to_have_value("")

    # Text that is neither a share reference nor an id: the error summary replaces the results instead of
    # stale rows.
    dpo.allowed_errors.append(re.compile(r"status of 400 .*/dpo/events\]$"))
    page.get_by_label("Share reference or id").fill("S-NOTANID")
    swap_with_htmx(page, "/dpo/events", page.get_by_role("button", name="Search"), status=400)
    expect(page.locator("#results")).to_contain_text("is neither a share reference nor a share id")
    expect(page.locator("#results tbody tr")).to_have_count(0)
    dpo.shot("events-invalid-filter")

    # Disclosure report for the patient reference: who received which report, why, and when.
    page.get_by_role("link", name="Disclosures per patient").click()
    page.wait_for_url("**/dpo/disclosures")
    page.get_by_label("Patient reference").fill(PATIENT_REF)
    swap_with_htmx(page, "/dpo/disclosures", page.get_by_role("button", name="Show disclosures"))
    disclosures = page.locator("#disclosures table")
    disclosure = disclosures.locator("tbody tr").filter(has_text=REPORT_TITLE)
    expect(disclosure).to_have_count(1)
    dpo.shot("disclosures")
    cells = table_row(disclosures, disclosure)
    assert cells["Recipient"] == RECIPIENT
    assert cells["Profile"] == PROFILE_LABEL
    assert cells["Purpose"] == PURPOSE
    assert MINUTE_STAMP.match(cells["Created (UTC)"]), f"created: {cells['Created (UTC)']!r}"
    assert MINUTE_STAMP.match(cells["Opened (UTC)"]), f"opened: {cells['Opened (UTC)']!r}"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \(1\u00d7\)", cells["Downloaded (UTC)"]), (
        f"downloaded: {cells['Downloaded (UTC)']!r}"
    )
    assert cells["Opened (UTC)"] >= cells["Created (UTC)"]
    assert cells["Downloaded (UTC)"][:16] >= cells["Opened (UTC)"]

    # Breach scope of the share since the day it was created: one share, one report, one patient.
    page.get_by_role("link", name="Breach scope").click()
    page.wait_for_url("**/dpo/breach")
    page.get_by_label("Share reference or id").fill(share_id)
    page.get_by_label("From (UTC)").fill(cells["Created (UTC)"][:10])
    swap_with_htmx(page, "/dpo/breach", page.get_by_role("button", name="Show scope"))
    scope = page.locator("#scope")
    expect(scope.get_by_role("heading", level=2)).to_have_text(re.compile(r"^\d+ events$"))
    dpo.shot("breach-scope")
    expect(summary_value(page, "Shares touched")).to_have_text("1")
    expect(summary_value(page, "Reports touched")).to_have_text("1")
    expect(summary_value(page, "Patients affected")).to_have_text("1")
    by_type = set(scope.locator("table").first.locator("tbody td:first-child").all_inner_texts())
    assert by_type >= SHARE_EVENTS, f"the breach scope lacks {sorted(SHARE_EVENTS - by_type)}"
    shares_table = scope.locator("table").filter(has=page.locator("caption", has_text="Shares"))
    share_cells = table_row(shares_table, shares_table.locator("tbody tr"))
    assert share_cells["Recipient"] == RECIPIENT
    assert share_cells["Profile"] == PROFILE_LABEL
    expect(scope.locator("table").filter(has=page.locator("caption", has_text="Reports"))).to_contain_text(
        REPORT_TITLE
    )

    # The whole log checks out from the workspace too.
    page.get_by_role("link", name="Check the log", exact=True).click()
    page.wait_for_url("**/dpo/verify")
    swap_with_htmx(page, "/dpo/verify", page.get_by_role("button", name="Check the log now"))
    expect(page.get_by_test_id("verify-ok")).to_contain_text("the log is intact")

    # Exports of the share's events, from the filtered access log.
    page.goto(f"/dpo/events?share_id={share_id}")
    expect(page.locator("#results tbody tr").first).to_be_visible()
    dpo.shot("events-before-export")
    csv_path, csv_name = download(dpo, page.get_by_role("button", name="Export CSV"), tmp_path)
    jsonl_path, jsonl_name = download(dpo, page.get_by_role("button", name="Export JSONL"), tmp_path)
    dpo.shot("after-exports")
    assert csv_name == "access-log.csv"
    assert jsonl_name == "access-log.jsonl"

    csv_lines = csv_path.read_text(encoding="utf-8").splitlines()
    assert csv_lines[0] == ",".join(EXPORT_FIELDS)
    assert len(csv_lines) > len(SHARE_EVENTS), f"the CSV export has only {len(csv_lines) - 1} events"
    assert all(share_id in line for line in csv_lines[1:]), "the CSV export holds events of other shares"

    jsonl_lines = jsonl_path.read_text(encoding="utf-8").splitlines()
    assert len(jsonl_lines) == len(csv_lines) - 1, "the two exports hold different numbers of events"
    events = [json.loads(line) for line in jsonl_lines]
    assert all(set(event) == set(EXPORT_FIELDS) for event in events)
    assert {event["share_id"] for event in events} == {share_id}
    assert {event["share_reference"] for event in events} == {reference}, "the export names the slip's reference"
    created = [event for event in events if event["event_type"] == "share.created"]
    assert [event["actor_email"] for event in created] == [CLINICIAN], "the export names the clinician"
    exported_types = {event["event_type"] for event in events}
    assert exported_types >= SHARE_EVENTS, f"the JSONL export lacks {sorted(SHARE_EVENTS - exported_types)}"

    # More views of the share page, so the patient's events fill more than one page of results.
    for _view in range(EXTRA_VIEWS):
        recipient.page.reload()
        wait_for_page_images(recipient, REPORT_PAGES)

    # Search by patient reference, page to the older events, and export both formats from there.
    page.get_by_role("link", name="Search events").click()
    page.wait_for_url("**/dpo/events")
    page.get_by_label("Patient reference").fill(PATIENT_REF)
    swap_with_htmx(page, "/dpo/events", page.get_by_role("button", name="Search"))
    expect(rows).to_have_count(PAGE_SIZE)
    newest = [int(seq) for seq in page.locator("#results tbody td:first-child").all_inner_texts()]
    dpo.shot("events-of-patient")
    swap_with_htmx(page, "/dpo/events", page.get_by_role("button", name="Older events"))
    expect(rows.first.locator("td:first-child")).not_to_have_text(str(newest[0]))
    older = [int(seq) for seq in page.locator("#results tbody td:first-child").all_inner_texts()]
    dpo.shot("older-events-of-patient")
    assert older, "the second page lists events"
    assert max(older) < min(newest), f"the second page repeats events: {older} after {newest}"
    expect(page.get_by_label("Patient reference")).to_have_value(PATIENT_REF)

    csv_path, _csv_name = download(dpo, page.get_by_role("button", name="Export CSV"), tmp_path)
    jsonl_path, _jsonl_name = download(dpo, page.get_by_role("button", name="Export JSONL"), tmp_path)
    patient_events = [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()]
    assert sorted((event["seq"] for event in patient_events), reverse=True) == newest + older
    assert len(csv_path.read_text(encoding="utf-8").splitlines()) == len(patient_events) + 1

    leaked = [url for url in requested if PATIENT_REF in url or quote(PATIENT_REF) in url]
    assert not leaked, f"the patient reference is in requested addresses: {leaked}"
    assert any(url.endswith("/dpo/export") for url in requested), "the exports were requested"
    server_log = portal_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert PATIENT_REF not in server_log, "the patient reference is in the server's log"

    dpo.assert_console_clean()
    recipient.assert_console_clean()


def test_language_switch_keeps_filters(open_visitor: OpenVisitor) -> None:
    dpo = open_visitor("dpo")
    sign_in(dpo, DPO)
    page = dpo.page
    page.goto("/dpo/events")
    with page.expect_response(lambda response: response.url.endswith("/dpo/events")):
        page.locator("#event_type").select_option("staff.login")

    # The filters travel in the POST body, so the language link posts the form again instead of a bare GET.
    with page.expect_navigation():
        page.locator(".language-switcher a[hreflang='de']").click()
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.locator("#event_type")).to_have_value("staff.login")
    assert page.url.endswith("/dpo/events")
    assert "lang=" not in page.url
    dpo.assert_console_clean()

    # Without a filter set, the link is a plain GET that switches back.
    page.goto("/dpo/events")
    with page.expect_navigation():
        page.locator(".language-switcher a[hreflang='en']").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#event_type")).to_have_value("")
