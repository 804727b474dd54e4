"""Operations: health, statistics, dead letters and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from faultline.api.context import AppContext, Probe
from faultline.api.responses import DeadLetterOut, Health, Stats
from faultline.api.security import PUBLIC, reads
from faultline.clock import iso_ms
from faultline.models.base import ModelInfo
from faultline.store import DeadLetterCount, DeadLetters, Stations

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@runtime_checkable
class _ReportsClosed(Protocol):
    """Buses that can tell whether they were closed (the in-process one can)."""

    @property
    def closed(self) -> bool: ...


def _component(check: Probe) -> dict[str, str]:
    try:
        problem = check()
    except Exception as exc:
        # A health check that crashes is itself the finding; the endpoint must still answer.
        problem = f"check failed: {type(exc).__name__}: {exc}"
    if problem is None:
        return {"status": "ok", "detail": "ok"}
    return {"status": "error", "detail": problem}


def _model_info(ctx: AppContext) -> ModelInfo | None:
    """The serving model's identity, or None when there is none (stats must still answer)."""
    if ctx.models is None:
        return None
    try:
        return ctx.models.current().info
    except Exception:
        # /api/health reports why; here the fields are simply null.
        return None


def ops_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(tags=["operations"])
    store = ctx.store
    sensors = [
        {"name": name, "unit": spec.unit, "min": spec.min, "max": spec.max}
        for name, spec in ctx.settings.sensors.items()
    ]

    def store_check() -> str | None:
        store.ping()
        return None

    def bus_check() -> str | None:
        if isinstance(ctx.bus, _ReportsClosed) and ctx.bus.closed:
            return "the bus is closed"
        return None

    def model_check() -> str | None:
        if ctx.models is None:
            return "no model configured: /api/predict and drift checks are unavailable"
        info = ctx.models.current().info
        if not info.run_id:
            return f"model {info.name} has no run id"
        return None

    checks: dict[str, Probe] = {
        "store": store_check,
        "bus": bus_check,
        "model": model_check,
        **ctx.probes,
    }

    @router.get(
        "/api/health",
        dependencies=[PUBLIC],
        response_model=Health,
        responses={503: {"model": Health, "description": "Some component is not ok"}},
    )
    def health() -> JSONResponse:
        """Liveness (it answers) and readiness (every component ok): 200 when ready, else 503."""
        components = {name: _component(check) for name, check in checks.items()}
        ready = all(c["status"] == "ok" for c in components.values())
        body = Health.model_validate(
            {
                "status": "ok" if ready else "error",
                "live": True,
                "ready": ready,
                "components": components,
            }
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)

    @router.get("/api/dead_letters", response_model=list[DeadLetterOut], dependencies=[reads(ctx)])
    def dead_letters(
        limit: Annotated[int, Query(ge=1, le=1000, description="How many, newest first")] = 100,
    ) -> list[dict[str, Any]]:
        """Messages that could not become readings, with the reason, newest first."""
        return [
            {
                "id": row.id,
                "received_at": iso_ms(row.received_at),
                "source": row.source,
                "reason": row.reason,
                "payload": row.payload.decode("utf-8", errors="replace"),
            }
            for row in store.query(DeadLetters(limit=limit))
        ]

    @router.get("/api/stats", response_model=Stats, dependencies=[reads(ctx)])
    def stats() -> dict[str, Any]:
        """Ingest rate, serving model and totals, for the dashboard's header."""
        now = ctx.clock.now_ms()
        stations = store.query(Stations())
        info = _model_info(ctx)
        return {
            "now": iso_ms(now),
            "now_ms": now,
            "ingest_rate": ctx.metrics.ingest_rate.rate(),
            "model_name": None if info is None else info.name,
            "model_version": None if info is None else info.run_id,
            "registry_version": None if info is None else info.version,
            "stations": len(stations),
            "readings": sum(s.readings for s in stations),
            "anomalies": sum(s.anomalies for s in stations),
            "dead_letters": store.query(DeadLetterCount()),
            "sensors": sensors,
        }

    @router.get(
        "/metrics",
        dependencies=[reads(ctx)],
        response_class=Response,
        responses={200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}}},
    )
    def metrics() -> Response:
        """Prometheus text format: readings, anomalies, dead letters, batch latency and more."""
        return Response(ctx.metrics.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    return router
