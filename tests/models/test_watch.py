"""The champion watcher: loads a moved alias's model in its own thread; a failing registry keeps
the model in use and never stops it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from faultline.models.base import ModelInfo
from faultline.models.watch import ChampionWatcher


@dataclass(frozen=True)
class FakeModel:
    info: ModelInfo


def model(version: str) -> FakeModel:
    return FakeModel(ModelInfo("m", version, f"run-{version}", "champion", 0))


class FakeRegistry:
    """An alias that tests move; loads that wait for `release`; looks or loads that fail while
    `failing` names them."""

    def __init__(self) -> None:
        self.alias = "1"
        self.failing: str | None = None  # "look" or "load"
        self.release = threading.Event()
        self.release.set()
        self.loading = threading.Event()
        self.loads: list[str] = []

    def current(self) -> FakeModel:
        return model(self.alias)

    def version_of(self, alias: str | None = None) -> str | None:
        if self.failing == "look":
            raise OSError("registry unreachable")
        return self.alias

    def load_version(self, version: str) -> FakeModel:
        self.loading.set()
        self.release.wait()
        if self.failing == "load":
            raise OSError("artifact missing")
        self.loads.append(version)
        return model(version)


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def running(registry: FakeRegistry) -> tuple[ChampionWatcher, threading.Thread, threading.Event]:
    watcher = ChampionWatcher(registry, model("1"), interval_s=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    yield watcher, thread, stop
    registry.release.set()
    stop.set()
    thread.join(10)


def test_a_moved_alias_is_loaded_in_the_watchers_thread_while_the_old_model_serves(
    registry: FakeRegistry, running: tuple[ChampionWatcher, threading.Thread, threading.Event]
) -> None:
    watcher, _, _ = running
    registry.release.clear()
    registry.alias = "2"
    assert registry.loading.wait(10)
    # The load is under way and blocked: a batch asking now gets the old model, at once.
    assert watcher.model.info.version == "1"
    registry.release.set()
    wait_until(lambda: watcher.model.info.version == "2", "the promoted model")
    registry.alias = "1"  # a rollback
    wait_until(lambda: watcher.model.info.version == "1", "the rolled-back model")
    assert registry.loads == ["2", "1"]  # each move loaded once, an unmoved alias never


@pytest.mark.parametrize("failing", ["look", "load"])
def test_a_failing_registry_keeps_the_model_logs_and_the_watch_goes_on(
    registry: FakeRegistry,
    running: tuple[ChampionWatcher, threading.Thread, threading.Event],
    caplog: pytest.LogCaptureFixture,
    failing: str,
) -> None:
    watcher, thread, _ = running
    caplog.set_level(logging.WARNING, logger="faultline.models.watch")
    registry.failing = failing
    registry.alias = "2"
    wait_until(lambda: watcher.last_error is not None, "the failure to be noticed")
    assert watcher.model.info.version == "1"
    assert any("keeping version 1" in r.getMessage() for r in caplog.records)
    registry.failing = None  # the registry answers again
    wait_until(lambda: watcher.model.info.version == "2", "the model once the registry answers")
    assert thread.is_alive()
    assert watcher.last_error is None
