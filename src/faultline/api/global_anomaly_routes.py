"""Global anomalies: what the daily S-H-ESD job found in a day's 1-minute means, and the record
of its latest run over that day (none: it never ran for the day)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from faultline.api.context import AppContext
from faultline.api.params import DATE_QUERY, query_day
from faultline.api.responses import ApiModel
from faultline.api.security import reads
from faultline.batch.days import DAY_EXAMPLE, previous_day
from faultline.clock import datetime_to_ms, iso_ms
from faultline.schema import GlobalAnomalyRun
from faultline.store import GlobalAnomalies, GlobalAnomalyRuns


class GlobalAnomalyOut(ApiModel):
    station_id: str
    sensor: str
    minute: str = Field(description="Start of the anomalous minute, ISO 8601 UTC")
    minute_ms: int = Field(description="Start of the minute, epoch milliseconds UTC")
    value: float = Field(description="The sensor's mean over that minute")
    expected: float = Field(description="The seasonal baseline it was tested against")
    score: float = Field(description="Distance from the baseline in robust standard deviations")


class GlobalAnomalyRunOut(ApiModel):
    status: Literal["succeeded", "failed"]
    started_at: str = Field(description="When the run started, ISO 8601 UTC")
    finished_at: str = Field(description="When it succeeded or failed, ISO 8601 UTC")
    series: int = Field(description="Station/sensor series tested")
    skipped: int = Field(description="Series not tested (too few minutes with readings)")
    skipped_by_reason: dict[str, int] = Field(description="Skipped series by reason")
    anomalies: int = Field(description="Anomalies the run found (all stored, when it succeeded)")
    error: str | None = Field(description="Why a failed run failed; null when it succeeded")


class GlobalAnomaliesOut(ApiModel):
    day: str = Field(description="The UTC day, YYYY-MM-DD")
    from_: str = Field(alias="from", description="Start of the day (included), ISO 8601 UTC")
    to: str = Field(description="End of the day (excluded), ISO 8601 UTC")
    station_id: str | None
    anomalies: list[GlobalAnomalyOut] = Field(description="By station, sensor, then minute")
    run: GlobalAnomalyRunOut | None = Field(
        description="The job's latest run over the whole day (null: it never ran for the day, "
        "so no anomalies does not mean none were found). After a failed run the anomalies "
        "are those of the last run that succeeded, if any."
    )


def global_anomaly_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["global anomalies"])

    @router.get(
        "/global_anomalies",
        dependencies=[reads(ctx)],
        response_model=GlobalAnomaliesOut,
        responses={400: {"description": f"day is not YYYY-MM-DD (e.g. {DAY_EXAMPLE})"}},
    )
    def global_anomalies(
        day: Annotated[
            str | None,
            Query(
                description="UTC day, YYYY-MM-DD; default: yesterday (UTC)",
                json_schema_extra=DATE_QUERY,  # so that fuzzers try every day
            ),
        ] = None,
        station_id: Annotated[str | None, Query(description="Only this station")] = None,
    ) -> dict[str, Any]:
        """The anomalies the daily global-anomaly job stored for one day, with the record of
        its latest run over the day (null until it ran)."""
        wanted, start, end = query_day(day, previous_day(ctx.clock.now_ms()))
        found = ctx.store.query(GlobalAnomalies(wanted, station_id=station_id))
        runs = ctx.store.query(GlobalAnomalyRuns(wanted))
        return {
            "day": wanted.isoformat(),
            "from": iso_ms(start),
            "to": iso_ms(end),
            "station_id": station_id,
            "anomalies": [
                {
                    "station_id": a.station_id,
                    "sensor": a.sensor,
                    "minute": iso_ms(a.minute),
                    "minute_ms": a.minute,
                    "value": a.value,
                    "expected": a.expected,
                    "score": a.score,
                }
                for a in found
            ],
            "run": _run_out(runs[0]) if runs else None,
        }

    return router


def _run_out(run: GlobalAnomalyRun) -> dict[str, Any]:
    return {
        "status": run.status,
        "started_at": iso_ms(datetime_to_ms(run.started_at)),
        "finished_at": iso_ms(datetime_to_ms(run.finished_at)),
        "series": run.series,
        "skipped": sum(run.skipped.values()),
        "skipped_by_reason": dict(run.skipped),
        "anomalies": run.anomalies,
        "error": run.error,
    }
