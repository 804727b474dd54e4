"""The notify section of the settings: what it refuses, and the secret kept out of sight."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from faultline.config import NotifySettings, ReceiverSettings, load_settings

HOOK = {"name": "ops", "kind": "webhook", "url": "https://hooks.example/x", "secret": "k"}


def test_receivers_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTLINE_NOTIFY__RECEIVERS", json.dumps([HOOK]))
    monkeypatch.setenv("FAULTLINE_NOTIFY__POLL_S", "0.5")
    notify = load_settings().notify
    assert notify.poll_s == 0.5
    [hook] = notify.receivers
    assert hook.secret is not None and hook.secret.get_secret_value() == "k"
    assert "'k'" not in repr(notify)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "https://user:pw@hooks.example/x"}, "must not carry credentials"),
        ({"url": "ftp://hooks.example/x"}, "http(s)"),
        ({"secret": None}, "needs a secret"),
        ({"secret": ""}, "needs a secret"),
        ({"kind": "alertmanager"}, "takes no secret"),
        ({"name": "has space"}, "pattern"),
        ({"kind": "email"}, "alertmanager"),
    ],
)
def test_a_receiver_that_cannot_work_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ReceiverSettings(**{**HOOK, **change})


def test_receiver_names_are_unique_and_backoff_ordered() -> None:
    hook = ReceiverSettings(**HOOK)
    with pytest.raises(ValidationError, match="more than once"):
        NotifySettings(receivers=(hook, hook))
    with pytest.raises(ValidationError, match="backoff_initial_s"):
        NotifySettings(backoff_initial_s=10, backoff_max_s=5)
    with pytest.raises(ValidationError, match="max_age_s"):
        NotifySettings(max_age_s=10, margin_s=30)
