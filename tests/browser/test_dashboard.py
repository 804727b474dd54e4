"""The dashboard in a real headless Chromium: it shows the store's data and keeps up with it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from faultline.clock import SystemClock
from tests.api.helpers import RUN_ID, FixedModels, Served, serve, tiny_model
from tests.contract.batches import reading_frame, write_batch

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000  # the page polls every 1.5 s; a loaded machine gets plenty of slack

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps`", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (Debian package chromium)", allow_module_level=True)


def wait_js(page: Page, expression: str, timeout: float) -> None:
    """Wait for a JS expression to hold; handed over as a function, which the page's CSP
    allows, where a bare string would have to go through eval, which it forbids."""
    page.wait_for_function(f"() => ({expression})", timeout=timeout)


def _write(served: Served, station: str, ts: np.ndarray, anomalies: list[int]) -> None:
    flags = np.isin(np.arange(len(ts)), anomalies)
    served.store.write(
        write_batch(
            reading_frame(
                station,
                ts,
                is_anomaly=flags,
                sensor_mask=np.where(flags, 0b010, 0),
                model_version=RUN_ID,
            )
        )
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    clock = SystemClock()
    with serve(tmp_path, clock, models=FixedModels(tiny_model())) as s:
        now = clock.now_ms()
        recent = now - 120_000 + 1000 * np.arange(120)
        _write(s, "s-01", recent, anomalies=[30, 90])
        _write(s, "s-02", recent, anomalies=[60])
        _write(s, "s-03", recent - 60_000, anomalies=[])  # its last reading is a minute old
        yield s


def test_the_dashboard_shows_live_data_from_local_assets_only(served: Served) -> None:
    requests: list[str] = []
    problems: list[str] = []
    navigations: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "framenavigated",
                lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
            )
            page.goto(f"{served.url}/")

            wait_js(
                page,
                "document.querySelectorAll('#stations [data-station-id]').length === 3",
                timeout=WAIT_MS,
            )
            statuses = page.eval_on_selector_all(
                "#stations [data-station-id]",
                "tiles => tiles.map(t => [t.dataset.stationId, t.dataset.status])",
            )
            assert statuses == [["s-01", "ok"], ["s-02", "ok"], ["s-03", "silent"]]
            wait_js(
                page,
                "document.querySelectorAll('#anomalies-body tr[data-station-id]').length === 3",
                timeout=WAIT_MS,
            )
            rows = page.eval_on_selector_all(
                "#anomalies-body tr[data-station-id]", "rows => rows.map(r => r.dataset.stationId)"
            )
            assert rows == ["s-01", "s-02", "s-01"]
            wait_js(
                page, "document.querySelector('#charts').dataset.points === '120'", timeout=WAIT_MS
            )
            assert page.inner_text("#model-version").startswith(RUN_ID[:8])
            assert page.inner_text("#dead-letter-count") == "0"
            assert page.inner_text("#chart-station") == "s-01"
            first_last_ts = int(page.get_attribute("#charts", "data-last-ts") or 0)

            # New data arrives: a new station with a fresh anomaly, and more of s-01.
            now = SystemClock().now_ms()
            _write(served, "s-04", now - 40_000 + 1000 * np.arange(40), anomalies=[39])
            _write(served, "s-01", now + 1000 * np.arange(1), anomalies=[])

            wait_js(
                page,
                "document.querySelector('#stations [data-station-id=\"s-04\"]')"
                "?.dataset.status === 'anomalous'",
                timeout=WAIT_MS,
            )
            wait_js(
                page,
                "document.querySelector('#anomalies-body tr[data-station-id]')"
                ".dataset.stationId === 's-04'",
                timeout=WAIT_MS,
            )
            wait_js(
                page,
                f"Number(document.querySelector('#charts').dataset.lastTs) > {first_last_ts}",
                timeout=WAIT_MS,
            )
            assert page.inner_text("#station-count") == "4"

            # Picking another station redraws the chart with that station's readings.
            page.select_option("#station-picker", "s-04")
            wait_js(
                page,
                "document.querySelector('#charts').dataset.station === 's-04' && "
                "document.querySelector('#charts').dataset.points === '40'",
                timeout=WAIT_MS,
            )
        finally:
            browser.close()

    assert len(navigations) == 1, f"the page reloaded: {navigations}"
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}
    assert problems == []
