"""The dashboard's alarm panel in a real headless Chromium: an operator signs in, acknowledges an
alarm and shelves another with the buttons, and the store records both under the token's name;
station tiles show their alarms and the alarm-load figures are drawn."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from faultline.alarm_schema import ANOMALY, SILENT, STATION_WIDE, AlarmKey, AlarmTransition
from faultline.clock import SystemClock
from faultline.store import AlarmHistory, MemoryStore
from faultline.tokens import Role
from tests.api.helpers import FixedModels, Served, serve, tiny_model
from tests.browser.test_dashboard import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _write, wait_js
from tests.contract.batches import write_batch
from tests.tokens import token_for

pytestmark = pytest.mark.browser

TEMP = AlarmKey("s-01", "temperature", ANOMALY)
QUIET = AlarmKey("s-02", STATION_WIDE, SILENT)
HOUR = 3_600_000


def row(key: AlarmKey) -> str:
    return f'#alarms-body tr[data-alarm-id="{key.id}"]'


def tile(station: str) -> str:
    return f'#stations [data-station-id="{station}"]'


def sign_in(page: Page, token: str) -> None:
    """With the sign-in form open: sign in and wait for the form to close."""
    page.fill("#token-input", token)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in", state="hidden", timeout=WAIT_MS)


def wait_data(page: Page, selector: str, name: str, value: str) -> None:
    """Wait until the element exists and its data attribute `name` (camelCase) is `value`."""
    wait_js(page, f"document.querySelector('{selector}')?.dataset.{name} === '{value}'", WAIT_MS)


def wait_text(page: Page, selector: str, fragment: str) -> None:
    """Wait until the element exists and its text holds `fragment`."""
    wait_js(
        page, f"document.querySelector('{selector}')?.textContent.includes('{fragment}')", WAIT_MS
    )


def dataset(page: Page, selector: str) -> dict[str, str]:
    found: dict[str, str] | None = page.eval_on_selector(selector, "e => ({...e.dataset})")
    assert found is not None
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    clock = SystemClock()
    # A model, so that health is ok: a 503 would be a console error in the page.
    with serve(tmp_path, clock, models=FixedModels(tiny_model()), store=MemoryStore()) as s:
        now = clock.now_ms()
        _write(s, "s-01", now - 60_000 + 1000 * np.arange(60), anomalies=[59])
        _write(s, "s-02", now - 600_000 + 1000 * np.arange(60), anomalies=[])  # silent since
        s.store.write(
            write_batch(
                processed_at=now,
                alarm_transitions=(
                    AlarmTransition(
                        TEMP,
                        "raise",
                        now - 20_000,
                        now - 20_000,
                        severity="high",
                        sensors=(("temperature", 0.8), ("humidity", 0.2)),
                    ),
                    AlarmTransition(QUIET, "raise", now - 500_000, now - 500_000, severity="high"),
                ),
            )
        )
        yield s


@dataclass
class Browsing:
    """A page in headless Chromium, with what it requested and every error it logged."""

    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def assert_local_and_quiet(self) -> None:
        hosts = {urlsplit(u).hostname for u in self.requests if not u.startswith("data:")}
        assert hosts == {"127.0.0.1"}
        assert self.problems == []


@pytest.fixture
def browsing() -> Iterator[Browsing]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            b = Browsing(browser.new_page(viewport={"width": 1400, "height": 1200}))
            b.page.on("request", lambda request: b.requests.append(request.url))
            b.page.on("console", lambda m: b.problems.append(m.text) if m.type == "error" else None)
            b.page.on("pageerror", lambda error: b.problems.append(str(error)))
            yield b
        finally:
            browser.close()


def open_page(served: Served, browsing: Browsing, role: Role) -> tuple[Page, str]:
    """The dashboard open in the browser, and a fresh token of `role` to sign in with."""
    token = token_for(served.ctx.tokens, role)
    browsing.page.goto(f"{served.url}/")
    return browsing.page, token


def test_an_operator_acknowledges_and_shelves_alarms_with_the_buttons(
    served: Served, browsing: Browsing
) -> None:
    page, operator = open_page(served, browsing, Role.OPERATOR)

    # Both alarms shown, active and unacknowledged; the silent one is station-wide.
    page.wait_for_selector(row(TEMP), timeout=WAIT_MS)
    page.wait_for_selector(row(QUIET), timeout=WAIT_MS)
    shown = page.eval_on_selector_all(
        "#alarms-body tr[data-alarm-id]", "rows => rows.map(r => r.dataset.alarmId)"
    )
    assert shown == [TEMP.id, QUIET.id]  # both high and unacknowledged: latest first
    temp = dataset(page, row(TEMP))
    assert (temp["active"], temp["acknowledged"], temp["severity"]) == (
        "true",
        "false",
        "high",
    )
    assert "unacked" in (page.get_attribute(row(TEMP), "class") or "")
    tags = page.eval_on_selector_all(
        f"{row(TEMP)} .alarm-sensors .tag", "tags => tags.map(t => t.textContent)"
    )
    assert tags == ["temperature 80%", "humidity 20%"]

    # Station tiles carry their alarm: a high anomaly alarm, and a silence.
    wait_data(page, tile("s-02"), "alarmKind", "silent")
    assert dataset(page, tile("s-01"))["alarm"] == "high"
    assert dataset(page, tile("s-01"))["alarmUnacked"] == "true"
    assert (page.text_content(f"{tile('s-02')} .station-alarm") or "").startswith("silent since")

    # The alarm-load figures: two activations in the last 24 hours.
    wait_js(page, "document.querySelector('#load-activations').textContent === '2'", WAIT_MS)
    assert page.get_attribute("#load-chart", "data-windows") == "144"

    # Not signed in: the button asks for a token and records nothing.
    page.click(f"{row(TEMP)} button.ack")
    page.wait_for_selector("#sign-in:not([hidden])", timeout=WAIT_MS)
    assert _actions(served, TEMP) == ["raise"]

    sign_in(page, operator)
    page.click(f"{row(TEMP)} button.ack")
    wait_data(page, row(TEMP), "acknowledged", "true")
    assert page.inner_text(f"{row(TEMP)} .alarm-acked").startswith("tests-operator ")
    assert page.is_hidden(f"{row(TEMP)} button.ack")
    history = served.store.query(AlarmHistory(TEMP.id))
    assert [(r.transition.action, r.transition.actor) for r in history] == [
        ("raise", "engine"),
        ("ack", "tests-operator"),
    ]
    assert "acknowledged" in page.inner_text("#alarm-message")

    # Shelve the silence for an hour: the panel and the store say until when.
    page.select_option(f"{row(QUIET)} select.shelve-for", "60")
    clicked = SystemClock().now_ms()
    page.click(f"{row(QUIET)} button.shelve")
    wait_data(page, row(QUIET), "shelved", "true")
    shelving = served.store.query(AlarmHistory(QUIET.id))[-1].transition
    assert (shelving.action, shelving.actor) == ("shelve", "tests-operator")
    assert shelving.until is not None
    assert shelving.until - shelving.ts == pytest.approx(HOUR, abs=60_000)
    assert shelving.ts >= clicked - 60_000
    wait_data(page, tile("s-02"), "alarmShelved", "true")
    assert page.is_visible(f"{row(QUIET)} button.unshelve")

    page.click(f"{row(QUIET)} button.unshelve")
    wait_data(page, row(QUIET), "shelved", "false")
    assert _actions(served, QUIET) == ["raise", "shelve", "unshelve"]
    browsing.assert_local_and_quiet()


def _actions(served: Served, key: AlarmKey) -> list[str]:
    return [r.transition.action for r in served.store.query(AlarmHistory(key.id))]


def test_a_viewer_is_told_that_acknowledging_needs_an_operator(
    served: Served, browsing: Browsing
) -> None:
    page, viewer = open_page(served, browsing, Role.VIEWER)
    page.click("#sign-in-toggle")
    sign_in(page, viewer)
    page.click(f"{row(TEMP)} button.ack")
    wait_text(page, "#alarm-message", "operator role")
    assert "error" in (page.get_attribute("#alarm-message", "class") or "")
    assert dataset(page, row(TEMP))["acknowledged"] == "false"
    assert _actions(served, TEMP) == ["raise"]


def detail(key: AlarmKey) -> str:
    return f'#alarms-body tr[data-detail-for="{key.id}"]'


def send_comment(page: Page, key: AlarmKey, text: str) -> None:
    """With the alarm's details open: type a comment and send it."""
    page.fill(f"{detail(key)} input.comment-text", text)
    page.click(f"{detail(key)} button.comment")


def test_an_operator_opens_an_alarms_history_and_comments_on_it(
    served: Served, browsing: Browsing
) -> None:
    page, operator = open_page(served, browsing, Role.OPERATOR)
    page.wait_for_selector(row(TEMP), timeout=WAIT_MS)

    # Opening the alarm shows its history beneath its row: the engine's raise, as stored.
    page.click(f"{row(TEMP)} button.details")
    wait_data(page, detail(TEMP), "entries", "1")
    assert page.get_attribute(f"{row(TEMP)} button.details", "aria-expanded") == "true"
    (raised,) = page.eval_on_selector_all(
        f"{detail(TEMP)} .alarm-history li",
        "items => items.map(i => [i.dataset.action, i.querySelector('.history-by').textContent,"
        " i.querySelector('.history-what').textContent])",
    )
    assert raised == ["raise", "engine", "high · temperature 80%, humidity 20%"]
    # The details row follows its alarm's row through the polls that reorder the table.
    order = "rows => rows.map(r => r.dataset.alarmId || `detail ${r.dataset.detailFor}`)"
    assert page.eval_on_selector_all("#alarms-body tr", order)[:2] == [TEMP.id, f"detail {TEMP.id}"]

    page.click("#sign-in-toggle")
    sign_in(page, operator)
    send_comment(page, TEMP, "valve 3 opened by hand <b>not html</b>")
    wait_data(page, detail(TEMP), "entries", "2")
    comment = f"{detail(TEMP)} .alarm-history li[data-action=comment]"
    assert page.inner_text(f"{comment} .history-by") == "tests-operator"
    assert page.inner_text(f"{comment} .history-what") == "valve 3 opened by hand <b>not html</b>"
    assert page.input_value(f"{detail(TEMP)} input.comment-text") == ""  # sent: the box empties
    assert "commented" in page.inner_text(f"{detail(TEMP)} .comment-message")
    recorded = served.store.query(AlarmHistory(TEMP.id))[-1].transition
    assert (recorded.action, recorded.actor, recorded.comment) == (
        "comment",
        "tests-operator",
        "valve 3 opened by hand <b>not html</b>",
    )

    # Closing it removes the details; the alarm's own row stays.
    page.click(f"{row(TEMP)} button.details")
    page.wait_for_selector(detail(TEMP), state="detached", timeout=WAIT_MS)
    assert page.is_visible(row(TEMP))
    browsing.assert_local_and_quiet()


def test_a_comment_the_api_refuses_shows_its_reason_and_records_nothing(
    served: Served, browsing: Browsing
) -> None:
    page, viewer = open_page(served, browsing, Role.VIEWER)
    page.click("#sign-in-toggle")
    sign_in(page, viewer)
    page.click(f"{row(QUIET)} button.details")
    wait_data(page, detail(QUIET), "entries", "1")
    send_comment(page, QUIET, "looking into it")
    note = f"{detail(QUIET)} .comment-message"
    wait_text(page, note, "operator role")
    assert "error" in (page.get_attribute(note, "class") or "")
    assert page.input_value(f"{detail(QUIET)} input.comment-text") == "looking into it"  # kept
    assert _actions(served, QUIET) == ["raise"]
    assert dataset(page, detail(QUIET))["entries"] == "1"

    # An operator's comment over the length limit: the validation error's words.
    page.click("#sign-out")
    page.click("#sign-in-toggle")
    sign_in(page, token_for(served.ctx.tokens, Role.OPERATOR))
    limit = served.ctx.settings.alarms.max_comment_chars
    send_comment(page, QUIET, "x" * (limit + 1))
    wait_text(page, note, f"at most {limit} characters")
    assert _actions(served, QUIET) == ["raise"]
