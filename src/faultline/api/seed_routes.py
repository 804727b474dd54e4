"""Seed 000's four endpoints, with its paths, parameters and field names.

Additions over the seed are new fields only, never renamed or retyped ones, so clients written
against the seed keep working.
"""

# No `from __future__ import annotations` here: FastAPI must see the request model built at
# runtime as a class, not as the name of a local variable it cannot resolve.
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import APIRouter, HTTPException, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from faultline.api.context import AppContext
from faultline.api.model_access import current_model
from faultline.api.model_routes import drift_cycle
from faultline.api.params import parse_time_range
from faultline.api.responses import DriftCheck, OutliersCount, Prediction, ReadingShape
from faultline.api.security import reads, requires
from faultline.clock import iso_ms
from faultline.config import SensorSpec
from faultline.detect.isolation_forest import ThresholdedModel
from faultline.store import AnomalyCount, LatestAnomalies
from faultline.tokens import Role, TokenInfo


def _in_range(name: str, spec: SensorSpec) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not spec.min <= value <= spec.max:
            raise ValueError(
                f"{name}={value:g} is outside its physical range "
                f"[{spec.min:g}, {spec.max:g}]{' ' + spec.unit if spec.unit else ''}"
            )
        return value

    return check


def predict_request_model(sensors: dict[str, SensorSpec]) -> type[BaseModel]:
    """Every configured sensor required, as a finite number inside its physical range."""
    fields: dict[str, Any] = {
        name: (
            Annotated[
                float,
                # strict: "65.2" or true are mistakes to report, not values to guess at.
                Field(strict=True, allow_inf_nan=False, description=f"{name} {spec.unit}".strip()),
                AfterValidator(_in_range(name, spec)),
            ],
            ...,
        )
        for name, spec in sensors.items()
    }
    example: dict[str, Any] = {name: spec.mean for name, spec in sensors.items()}
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
        **fields,
    )


def seed_router(ctx: AppContext, shape: ReadingShape) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["seed 000"])
    store = ctx.store
    PredictRequest = predict_request_model(ctx.settings.sensors)

    @router.get("/latest_anomalies", response_model=list[shape.model], dependencies=[reads(ctx)])  # type: ignore[name-defined]
    def latest_anomalies(
        limit: Annotated[int, Query(ge=1, le=1000, description="How many, newest first")] = 10,
        station_id: Annotated[str | None, Query(description="Only this station")] = None,
    ) -> list[dict[str, Any]]:
        """The newest anomalous readings, newest event time first."""
        rows = store.query(LatestAnomalies(limit=limit, station_id=station_id))
        return [shape.row(row) for row in rows]

    @router.get(
        "/outliers_count",
        dependencies=[reads(ctx)],
        response_model=OutliersCount,
        responses={400: {"description": "time_range missing or not like 5m, 4h or 30d"}},
    )
    def outliers_count(
        time_range: Annotated[
            str | None, Query(description="How far back from now: 30s, 5m, 4h, 30d")
        ] = None,
    ) -> dict[str, Any]:
        """Anomalous readings whose event time lies in [now - time_range, now)."""
        label, span = parse_time_range(time_range)
        end = ctx.clock.now_ms()
        start = end - span
        count = store.query(AnomalyCount(start_ms=start, end_ms=end))
        return {
            "time_range": label,
            "outliers_count": count,
            "from": iso_ms(start),
            "to": iso_ms(end),
        }

    # Scoring takes a forest's worth of CPU: at most `slots` run at once, on threads of their
    # own, so that a burst of predictions cannot take the threads every other route runs on.
    slots = ctx.settings.api.predict_concurrency
    scorers = anyio.CapacityLimiter(slots)
    busy = 0  # predictions admitted; only the event loop's thread touches it

    def score(features: dict[str, float]) -> dict[str, Any]:
        model = current_model(ctx)
        row = np.array([[features[name] for name in model.sensors]], np.float64)
        info = model.info
        return {
            "is_anomaly": bool(model.is_anomaly(row)[0]),
            "features": features,
            "model_version": info.run_id,
            "score": float(model.anomaly_score(row)[0]),
            "threshold": model.anomaly_threshold if isinstance(model, ThresholdedModel) else None,
            "model_name": info.name,
            "registry_version": info.version,
        }

    @router.post(
        "/predict",
        dependencies=[requires(ctx, Role.VIEWER)],
        response_model=Prediction,
        responses={
            429: {"description": f"{slots} predictions are being scored already; retry later"},
            503: {"description": "No model is available"},
        },
    )
    async def predict(body: PredictRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        """Score one set of sensor values with the serving model."""
        nonlocal busy
        if busy >= slots:
            raise HTTPException(
                429,
                f"{slots} predictions are being scored already: retry in a moment",
                headers={"Retry-After": "1"},
            )
        busy += 1
        try:
            features = body.model_dump()  # type: ignore[attr-defined]
            return await anyio.to_thread.run_sync(score, features, limiter=scorers)
        finally:
            busy -= 1

    # One drift cycle at a time per process, on a thread of its own: a retraining takes
    # minutes, and must not hold a thread every other route runs on.
    cycles = anyio.CapacityLimiter(1)

    @router.get(
        "/check_drift_retrain",
        response_model=DriftCheck,
        responses={
            409: {"description": "The lifecycle refused to go on; the message says why"},
            503: {"description": "No model is available"},
        },
    )
    async def check_drift_retrain(
        token: Annotated[TokenInfo | None, reads(ctx)],
    ) -> dict[str, Any]:
        """Compare the newest readings with the model's training data, per sensor and by its
        anomaly rate; with an admin token, on drift also retrain a challenger, gate it beside
        the champion and promote it when it passes. The answer says what was done, or why not.
        """
        return await anyio.to_thread.run_sync(drift_cycle, ctx, token, limiter=cycles)

    return router
