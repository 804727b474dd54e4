"""Stations: who is reporting, who is anomalous, who went silent; and one station's history."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import Field, create_model

from faultline.api.context import AppContext
from faultline.api.params import decode_cursor, encode_cursor, instant_ms
from faultline.api.responses import ApiModel, ReadingShape, StationsOut, StationStatus
from faultline.clock import iso_ms
from faultline.config import Settings
from faultline.store import StationReadings, Stations, StationSummary

DEFAULT_WINDOW_MS = 3_600_000
_ENCODER = msgspec.json.Encoder()
MIN_SILENT_MS = 10_000
SILENT_INTERVALS = 3


def _json(payload: dict[str, Any]) -> Response:
    return Response(_ENCODER.encode(payload), media_type="application/json")


def silent_after_ms(settings: Settings) -> int:
    """No reading for three expected intervals (at least 10 s) makes a station silent.

    The expected interval is the configured station rate's (rate 0 means "as fast as possible",
    so no interval); 10 s keeps a busy engine's batching and a loaded machine's hiccups from
    flapping stations to silent.
    """
    rate = settings.simulate.rate_hz
    interval_ms = 1000 / rate if rate > 0 else 0
    return max(MIN_SILENT_MS, round(SILENT_INTERVALS * interval_ms))


def station_status(
    summary: StationSummary, now_ms: int, silent_ms: int, warmup: int
) -> StationStatus:
    if now_ms - summary.last_received_at > silent_ms:
        return "silent"
    if summary.last_is_anomaly:
        return "anomalous"
    # The streaming detector gives no verdict until it has seen `warmup` readings of a station.
    if summary.readings < warmup:
        return "warming_up"
    return "ok"


def station_router(ctx: AppContext, shape: ReadingShape) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["stations"])
    store = ctx.store
    silent_ms = silent_after_ms(ctx.settings)
    warmup = ctx.settings.detect.warmup
    page_model = create_model(
        "StationReadingsPage",
        __base__=ApiModel,
        station_id=(str, ...),
        from_=(str, Field(alias="from", description="Start (included), ISO 8601 UTC")),
        to=(str, Field(description="End (excluded), ISO 8601 UTC")),
        readings=(list[shape.model], Field(description="Oldest first")),  # type: ignore[name-defined]
        next_cursor=(
            str | None,
            Field(description="Pass as cursor for the next page; null on the last page"),
        ),
    )

    @router.get("/stations", response_model=StationsOut)
    def stations() -> Response:
        """Every station seen, with its latest reading and its status."""
        now = ctx.clock.now_ms()
        # Encoded here rather than validated into StationsOut and serialised by FastAPI: with
        # thousands of stations, polled by the dashboard every 1.5 s, that took six times the
        # query (bench/bench_stations.py). The values are finite and typed as StationsOut says.
        return _json(
            {
                "now": iso_ms(now),
                "silent_after_s": silent_ms / 1000,
                "stations": [
                    {
                        "station_id": s.station_id,
                        "status": station_status(s, now, silent_ms, warmup),
                        "last_record_time": iso_ms(s.last_ts),
                        "last_ts_ms": s.last_ts,
                        "last_received_at": iso_ms(s.last_received_at),
                        "silent_for_s": max(0, now - s.last_received_at) / 1000,
                        "last_values": s.last_values,
                        "last_is_outlier": s.last_is_anomaly,
                        "readings": s.readings,
                        "anomalies": s.anomalies,
                    }
                    for s in store.query(Stations())
                ],
            }
        )

    @router.get(
        "/stations/{station_id}/readings",
        response_model=page_model,
        responses={
            400: {"description": "from/to not ISO 8601 with a timezone, or a foreign cursor"},
            404: {"description": "No such station"},
        },
    )
    def station_readings(
        station_id: str,
        from_: Annotated[
            str | None,
            Query(alias="from", description="ISO 8601 with timezone; default: an hour before to"),
        ] = None,
        to: Annotated[str | None, Query(description="ISO 8601 with timezone; default: now")] = None,
        limit: Annotated[int, Query(ge=1, le=5000, description="Readings per page")] = 1000,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> dict[str, Any]:
        """One station's readings with from <= event time < to, oldest first, a page at a time."""
        end = ctx.clock.now_ms() if to is None else instant_ms("to", to)
        start = end - DEFAULT_WINDOW_MS if from_ is None else instant_ms("from", from_)
        if start >= end:
            raise HTTPException(400, f"from ({iso_ms(start)}) must be before to ({iso_ms(end)})")
        after = None if cursor is None else decode_cursor(cursor)
        page = store.query(
            StationReadings(station_id, start_ms=start, end_ms=end, limit=limit, after=after)
        )
        if not page.rows and all(s.station_id != station_id for s in store.query(Stations())):
            raise HTTPException(404, f"no station {station_id!r} has sent a reading")
        return {
            "station_id": station_id,
            "from": iso_ms(start),
            "to": iso_ms(end),
            "readings": [shape.row(row) for row in page.rows],
            "next_cursor": None if page.next_cursor is None else encode_cursor(page.next_cursor),
        }

    return router
