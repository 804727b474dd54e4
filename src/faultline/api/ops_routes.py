"""Operations: health, statistics, dead letters and Prometheus metrics."""

from __future__ import annotations

import threading
import time
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
# /api/health answers within this even when a check hangs (a store's ping is bounded itself;
# this bounds the ones that are not, and says which did not answer).
HEALTH_DEADLINE_S = 4.0


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


class _Running:
    """One run of a check, in a daemon thread of its own so that a check that hangs holds
    neither the request nor Faultline's exit."""

    def __init__(self, check: Probe) -> None:
        self.finished = threading.Event()
        self.result: dict[str, str] = {}
        threading.Thread(target=self._run, args=(check,), name="health-check", daemon=True).start()

    def _run(self, check: Probe) -> None:
        self.result = _component(check)
        self.finished.set()


class _BoundedChecks:
    """Runs every check at once and waits for them up to a deadline. A check still running
    from an earlier request is waited for again, not started twice, so a hanging one costs a
    single thread however often /api/health is asked."""

    def __init__(self, checks: dict[str, Probe], deadline_s: float) -> None:
        self._checks = checks
        self._deadline_s = deadline_s
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}

    def __call__(self) -> dict[str, dict[str, str]]:
        with self._lock:
            for name, check in self._checks.items():
                earlier = self._running.get(name)
                if earlier is None or earlier.finished.is_set():
                    self._running[name] = _Running(check)
            runs = dict(self._running)
        deadline = time.monotonic() + self._deadline_s
        components = {}
        for name, run in runs.items():
            if run.finished.wait(max(0.0, deadline - time.monotonic())):
                components[name] = run.result
            else:
                detail = f"no answer within {self._deadline_s:g} s"
                components[name] = {"status": "error", "detail": detail}
        return components


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
    run_checks = _BoundedChecks(checks, HEALTH_DEADLINE_S)

    @router.get(
        "/api/health",
        dependencies=[PUBLIC],
        response_model=Health,
        responses={503: {"model": Health, "description": "Some component is not ok"}},
    )
    def health() -> JSONResponse:
        """Liveness (it answers) and readiness (every component ok): 200 when ready, else 503."""
        components = run_checks()
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
