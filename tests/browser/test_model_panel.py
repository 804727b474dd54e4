"""The dashboard's models panel in a real headless Chromium: the serving version, a challenger
with its gate, the drift per sensor and the champion history; the admin buttons appear only for
an admin token, and promote, roll back and retrain through the API under the token's name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from faultline.clock import SystemClock
from faultline.store import MemoryStore
from faultline.tokens import Role
from tests.api.fake_lifecycle import FakeLifecycle
from tests.api.helpers import FixedModels, Served, serve, tiny_model
from tests.browser.test_alarm_panel import (
    Browsing,
    browsing,  # noqa: F401 (the fixture, shared with the alarm panel's test)
    open_page,
    sign_in,
    wait_data,
    wait_text,
)
from tests.browser.test_dashboard import _write
from tests.tokens import token_for

pytestmark = pytest.mark.browser

PANEL = "#models-panel"


@pytest.fixture
def lifecycle() -> FakeLifecycle:
    fake = FakeLifecycle(SystemClock())
    fake.check_drift()
    fake.gate(fake.retrain().version)  # v2, a challenger that passed its gate
    return fake


@pytest.fixture
def served(tmp_path: Path, lifecycle: FakeLifecycle) -> Iterator[Served]:
    clock = SystemClock()
    with serve(
        tmp_path,
        clock,
        models=FixedModels(tiny_model()),
        store=MemoryStore(),
        lifecycle=lifecycle,
    ) as s:
        _write(s, "s-01", clock.now_ms() - 60_000 + 1000 * np.arange(60), anomalies=[])
        yield s


def test_the_panel_shows_the_lifecycle_and_an_admin_changes_it(
    served: Served,
    browsing: Browsing,  # noqa: F811 (the fixture imported above)
    lifecycle: FakeLifecycle,
) -> None:
    page, viewer = open_page(served, browsing, Role.VIEWER)
    admin = token_for(served.ctx.tokens, Role.ADMIN)

    wait_data(page, PANEL, "champion", "1")
    assert page.inner_text("#model-serving").startswith("v1 · ")
    challenger = '#model-challengers li[data-version="2"]'
    assert page.get_attribute(challenger, "data-gate") == "true"
    assert "gate passed" in page.inner_text(challenger)
    assert "fewer false alarms" in page.inner_text(f"{challenger} .gate-reason")
    drifted = page.eval_on_selector_all(
        "#model-drift-body tr[data-sensor]", "rows => rows.map(r => r.dataset.drifted)"
    )
    assert drifted == ["false", "true"]  # temperature, humidity
    assert "0.40 % against 0.13 % expected: no score drift" in page.inner_text("#model-score-drift")
    assert page.inner_text("#model-checked").startswith("drift · checked ")
    # Not signed in, or as a viewer: no admin controls.
    assert page.is_hidden("#model-admin")
    assert page.query_selector(f"{challenger} button.promote") is None
    page.click("#sign-in-toggle")
    sign_in(page, viewer)
    wait_data(page, PANEL, "admin", "false")
    assert page.is_hidden("#model-admin")

    page.click("#sign-out")
    page.click("#sign-in-toggle")
    sign_in(page, admin)
    wait_data(page, PANEL, "admin", "true")
    # A change needs a reason.
    page.click(f"{challenger} button.promote")
    wait_text(page, "#model-message", "Give a reason first")
    assert lifecycle.history() == []

    page.fill("#model-reason", "better at night")
    page.click(f"{challenger} button.promote")
    wait_data(page, PANEL, "champion", "2")
    wait_data(page, "#model-history", "entries", "1")
    assert page.inner_text("#model-message") == "Version 2 now serves (was 1)."
    (change,) = lifecycle.history()
    assert (change.operation, change.to_version, change.actor, change.reason) == (
        "promote",
        "2",
        "tests-admin",
        "better at night",
    )
    assert "v1 → v2" in page.inner_text('#model-history li[data-operation="promote"]')

    page.click("#model-rollback")
    wait_data(page, PANEL, "champion", "1")
    wait_data(page, "#model-history", "entries", "2")
    assert lifecycle.history()[0].operation == "rollback"

    # A second rollback finds nothing earlier: the API's refusal is shown as it is.
    page.click("#model-rollback")
    wait_text(page, "#model-message", "no earlier champion to roll back to")

    page.click("#model-retrain")
    wait_data(page, "#model-job", "state", "done")
    assert "done: version 3 (gate passed)" in page.inner_text("#model-job")
    wait_data(page, '#model-challengers li[data-version="3"]', "gate", "true")
    # The one refusal asked for is the one error the browser logs.
    assert browsing.problems == [
        "Failed to load resource: the server responded with a status of 409 (Conflict)"
    ]
    browsing.problems.clear()
    browsing.assert_local_and_quiet()
