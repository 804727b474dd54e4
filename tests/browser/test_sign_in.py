"""Signing in to the dashboard with a token, and the API docs, in a real headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from faultline.clock import SystemClock
from faultline.config import load_settings
from faultline.tokens import Role
from tests.api.helpers import FixedModels, Served, serve, tiny_model
from tests.browser.test_dashboard import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _write, wait_js
from tests.tokens import token_for

pytestmark = pytest.mark.browser


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Served]:
    """Served as beyond loopback: the dashboard's reads need a token."""
    clock = SystemClock()
    settings = load_settings(data_dir=tmp_path / "data", api={"reads_need_token": True})
    with serve(tmp_path, clock, models=FixedModels(tiny_model()), settings=settings) as s:
        _write(s, "s-01", clock.now_ms() - 60_000 + 1000 * np.arange(60), anomalies=[30])
        yield s


def _browse(check: object) -> None:
    assert callable(check)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            check(browser.new_page(viewport={"width": 1400, "height": 1000}))
        finally:
            browser.close()


def _stations(page: Page) -> int:
    return int(page.evaluate("document.querySelectorAll('#stations [data-station-id]').length"))


def test_the_dashboard_asks_for_a_token_and_shows_the_data_once_signed_in(
    guarded: Served,
) -> None:
    viewer = token_for(guarded.ctx.tokens, Role.VIEWER)
    problems: list[str] = []

    def check(page: Page) -> None:
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(f"{guarded.url}/")
        page.wait_for_selector("#sign-in:not([hidden])", timeout=WAIT_MS)
        assert "needs a token" in page.inner_text("#sign-in-message")
        assert _stations(page) == 0

        page.fill("#token-input", "fl_not-a-token")
        page.click("#sign-in button[type=submit]")
        wait_js(
            page,
            "document.querySelector('#sign-in-message').textContent.includes('refused')",
            timeout=WAIT_MS,
        )
        assert page.evaluate("sessionStorage.getItem('faultline.token')") is None

        page.fill("#token-input", viewer)
        page.click("#sign-in button[type=submit]")
        page.wait_for_selector("#stations [data-station-id='s-01']", timeout=WAIT_MS)
        assert page.is_hidden("#sign-in")
        assert page.inner_text("#auth-state") == "signed in"
        assert page.evaluate("sessionStorage.getItem('faultline.token')") == viewer

        page.reload()  # the tab keeps its token
        page.wait_for_selector("#stations [data-station-id='s-01']", timeout=WAIT_MS)
        assert page.is_hidden("#sign-in")

        guarded.ctx.tokens.revoke("tests-viewer")  # revoked while signed in: asked again
        page.wait_for_selector("#sign-in:not([hidden])", timeout=WAIT_MS)
        assert page.inner_text("#auth-state") == "not signed in"
        assert page.evaluate("sessionStorage.getItem('faultline.token')") is None

    _browse(check)
    assert problems == []


def test_the_api_docs_render_from_local_files_under_the_content_security_policy(
    tmp_path: Path,
) -> None:
    requests: list[str] = []
    problems: list[str] = []
    with serve(tmp_path, SystemClock(), models=FixedModels(tiny_model())) as served:

        def check(page: Page) -> None:
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{served.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
            paths = page.eval_on_selector_all(
                ".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)"
            )
            assert "/api/readings" in paths and "/api/predict" in paths
            assert page.is_visible(".auth-wrapper .authorize")  # where a token goes

        _browse(check)
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}
    assert problems == []
