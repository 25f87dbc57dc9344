"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import select

from syncline.api.auth import Role
from syncline.store import deliveries
from tests.api._stack import PASSWORD, Stack, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("SYNCLINE_CHROMIUM", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (.ci/run installs it)"),
]

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def stack(store_url: str) -> Iterator[Stack]:
    with running_stack(store_url) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with playwright_sync.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


def _sign_in(page: Page, url: str, role: Role) -> None:
    page.goto(f"{url}/console/")
    page.fill("input[name=username]", f"{role}-user")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-password")
    page.wait_for_url(f"{url}/console/")


def _delivery_state(stack: Stack, canonical_id: str) -> str:
    with stack.syncline.engine.connect() as conn:
        return str(conn.execute(select(deliveries.c.state).where(deliveries.c.canonical_id == canonical_id)).scalar())


def test_operator_finds_edits_and_retries_a_parked_invoice_until_it_is_delivered(
    stack: Stack, browser: Browser
) -> None:
    stack.park_invoice("inv_browser")
    context = browser.new_context()
    page = context.new_page()
    try:
        _sign_in(page, stack.url, Role.OPERATOR)
        page.click("text=Needs attention")
        page.click("a.open-exception:has-text('inv_browser')")
        assert "tax code TX-99 is unknown" in page.inner_text("dd.reason")
        page.fill("input[name='f:number']", "INV-2026-0042")
        page.fill("input[name=note]", "tax code fixed in the ERP; number corrected")
        page.click("#save-retry")
        assert "Saved and sent again" in page.inner_text("p.flash")
        deadline = time.monotonic() + 30
        while "Sent" not in page.inner_text("#delivery-state") and time.monotonic() < deadline:
            time.sleep(0.2)
            page.reload()
        assert "Sent" in page.inner_text("#delivery-state")
        assert "Resolved" in page.inner_text("#exception-status")
        page.click("text=see the whole timeline")
        timeline = page.inner_text("ol.timeline")
        assert timeline.index("Needs attention") < timeline.index("Corrected") < timeline.rindex("Sent")
    finally:
        context.close()
    assert _delivery_state(stack, "inv_browser") == "done"
    delivered = [call for call in stack.vendor.calls if call[1] == "inv_browser"]
    assert delivered[-1][2]["number"] == "INV-2026-0042"


def test_a_viewer_sees_no_retry_button_and_the_api_refuses_them(stack: Stack, browser: Browser) -> None:
    exception_id = stack.park_invoice("inv_viewer")
    context = browser.new_context()
    page = context.new_page()
    try:
        _sign_in(page, stack.url, Role.VIEWER)
        page.goto(f"{stack.url}/console/exceptions/{exception_id}")
        assert "tax code TX-99 is unknown" in page.inner_text("dd.reason")
        assert page.locator("#retry").count() == 0
        assert page.locator("#save-retry").count() == 0
        page.goto(f"{stack.url}/console/exceptions")
        assert page.locator("#bulk-retry").count() == 0
    finally:
        context.close()
    refused = httpx.post(f"{stack.url}/v1/exceptions/{exception_id}/retry",
                         headers={"Authorization": f"Bearer {stack.keys[Role.VIEWER]}"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "role_insufficient"
    assert _delivery_state(stack, "inv_viewer") == "parked"
