"""HTTP ingest, for stations that speak neither Kafka nor MQTT: readings straight onto the bus.

Only the shape is checked here (JSON, an object or a list of objects, not too big). Full
validation is the engine's: it dead-letters a bad reading with its reason, exactly as it would
for one that came over Kafka, so there is one set of rules and one place bad input ends up.

A request is published all or nothing: 202 means every reading is on the bus (on the embedded
SQLite bus: on disk, surviving kill -9), 503 means none is and the same request can be sent
again. A request may carry an `Idempotency-Key`: sent again with the same key and body (a retry
after a lost answer) it gets the first answer and publishes nothing, so readings without their
own `ts`/`seq` (seed 000's form, whose identity the bus gives them) are not stored twice.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Header, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from faultline.api.context import AppContext
from faultline.api.responses import Accepted
from faultline.bus import BusError, IdempotencyConflict, PublishTooLarge, Record

MAX_BODY_BYTES = 1_048_576
PUBLISH_TIMEOUT_S = 2.0  # a full bus answers 503 after this, rather than holding the client
MAX_IDEMPOTENCY_KEY = 200
REPLAYED = "Idempotent-Replayed"  # on the answer to a retry that published nothing


class _Keyed(msgspec.Struct):
    """Just enough of a reading to route it; msgspec skips every other field unparsed."""

    station_id: Any = None


_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_ONE = msgspec.json.Decoder(_Keyed)


def records(body: bytes) -> list[Record]:
    """One record per reading, carrying the reading's own bytes, keyed by its station."""
    text = body.lstrip()
    if not text:
        raise HTTPException(400, "empty body: send a reading object or a list of them")
    try:
        try:
            items = _LIST.decode(text) if text[:1] == b"[" else [msgspec.Raw(text)]
        except RecursionError:
            raise HTTPException(400, "malformed JSON: nested too deeply") from None
        if not items:
            raise HTTPException(400, "empty list: send at least one reading")
        out = []
        for i, raw in enumerate(items):
            try:
                station = _ONE.decode(raw).station_id
            except msgspec.ValidationError:
                where = f"item {i}" if text[:1] == b"[" else "the body"
                raise HTTPException(
                    400, f"{where} is not a JSON object: send a reading object or a list of them"
                ) from None
            except RecursionError:
                station = None  # the engine's decoder dead-letters it with its reason
            key = station.encode() if isinstance(station, str) else None
            out.append(Record(value=bytes(raw), key=key))
        return out
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from None


def ingest_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["ingest"])
    topic = ctx.settings.readings_topic

    @router.post(
        "/readings",
        status_code=202,
        response_model=Accepted,
        responses={
            400: {"description": "Not JSON, or not an object or a list of objects"},
            413: {"description": "Body larger than the API or the bus takes in one request"},
            422: {"description": "Idempotency-Key already used for a different body"},
            503: {"description": "The bus is full or closed, nothing was taken; retry later"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [{"type": "object"}, {"type": "array"}]},
                        "examples": {
                            "faultline": {
                                "value": {
                                    "station_id": "s-01",
                                    "ts": "2026-01-01T12:00:00.000Z",
                                    "seq": 7,
                                    "values": {"temperature": 25.1, "humidity": 60.2},
                                }
                            },
                            "seed 000": {
                                "value": {
                                    "station_id": "s-01",
                                    "temperature": 25.1,
                                    "humidity": 60.2,
                                    "noise_level": 50.3,
                                }
                            },
                        },
                    }
                },
            }
        },
    )
    async def post_readings(
        request: Request,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                max_length=MAX_IDEMPOTENCY_KEY,
                pattern=r"^[\x21-\x7e]+$",
                description="Any unique string per request (e.g. a UUID): a retry with the same "
                "key and body is answered as the first request was and stores nothing twice",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Accept one reading or a list of them for the engine (202: queued, not yet judged)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _too_large()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise _too_large()
        batch = records(bytes(body))
        try:
            published = await run_in_threadpool(
                partial(ctx.bus.publish, idempotency_key=idempotency_key),
                topic,
                batch,
                PUBLISH_TIMEOUT_S,
            )
        except PublishTooLarge as exc:
            raise HTTPException(413, f"readings not accepted: {exc}") from exc
        except IdempotencyConflict as exc:
            raise HTTPException(422, str(exc)) from exc
        except BusError as exc:
            raise HTTPException(
                503,
                f"none of the readings accepted, retry later: {exc}",
                headers={"Retry-After": "1"},
            ) from exc
        if published.duplicate:
            response.headers[REPLAYED] = "true"
        else:
            ctx.metrics.http_ingested.inc(published.count)
        return {"accepted": published.count}

    return router


def _too_large() -> HTTPException:
    return HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes: send smaller batches")
