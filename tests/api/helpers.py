"""Real pieces for API tests: a small trained model and a served app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from faultline.api.app import create_app
from faultline.api.context import AppContext, ModelLifecycle
from faultline.api.server import ApiServer
from faultline.bus import MemoryBus
from faultline.clock import Clock
from faultline.config import Settings, load_settings
from faultline.metrics import Metrics
from faultline.models.base import LoadedModel, ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.simulate import normal_frame
from faultline.store import SqliteStore, Store
from faultline.tokens import TokenStore
from tests.tokens import JSON, admin_token, bearer

RUN_ID = "90e6bef02af84f3186e0e068e9fa4e4d"  # the seed README's example run id
SENSORS = ("temperature", "humidity", "noise_level")


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@cache
def tiny_model() -> SklearnModel:
    """Seed 000's model shape (scaler + forest), small enough to train in a fraction of a second."""
    settings = load_settings()
    train = normal_frame(settings.sensors, 3000, seed=1)
    pipeline = train_isolation_forest(
        train, SENSORS, n_estimators=50, contamination=0.00125, seed=0
    )
    info = ModelInfo("faultline-isolation-forest", "3", RUN_ID, "champion", 1_767_225_600_000)
    return SklearnModel(pipeline, info, SENSORS, train.iloc[:2000])


class FixedModels:
    """A ModelSource serving one model."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def current(self) -> LoadedModel:
        return self.model


class MissingModels:
    """A ModelSource whose registry has no model under the alias."""

    def current(self) -> LoadedModel:
        raise LookupError("no version of faultline-isolation-forest has the alias 'champion'")


@dataclass
class Served:
    ctx: AppContext
    app: FastAPI
    server: ApiServer
    bus: MemoryBus
    store: Store
    token: str  # an admin token: reaches every handler

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)

    @property
    def json_auth(self) -> dict[str, str]:
        """Headers for a write: the token, and the JSON content type writes must declare."""
        return {**self.auth, **JSON}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client on the served app, signed in as admin, sending JSON."""
        return httpx.Client(base_url=self.url, headers=self.json_auth, timeout=10, **kwargs)


@contextmanager
def serve(
    tmp_path: Path,
    clock: Clock,
    *,
    models: FixedModels | MissingModels | None = None,
    probes: dict[str, Callable[[], str | None]] | None = None,
    bus: MemoryBus | None = None,
    settings: Settings | None = None,
    store: Store | None = None,
    lifecycle: ModelLifecycle | None = None,
) -> Iterator[Served]:
    """The app over a real store (default: SQLite) and an in-process bus, on a real port."""
    settings = settings or settings_for(tmp_path)
    tokens = TokenStore(tmp_path / "tokens.db", clock)
    store = store or SqliteStore(tmp_path / "api.db")
    bus = bus or MemoryBus()
    ctx = AppContext(
        settings=settings,
        store=store,
        bus=bus,
        metrics=Metrics(clock),
        clock=clock,
        models=models,
        tokens=tokens,
        probes=probes or {},
        lifecycle=lifecycle,
    )
    app = create_app(ctx)
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    try:
        yield Served(ctx, app, server, bus, store, admin_token(tokens))
    finally:
        server.stop()
        tokens.close()
        bus.close()
        store.close()
