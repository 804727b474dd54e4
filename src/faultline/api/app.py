"""The FastAPI application: routers over an AppContext, the dashboard at `/`, docs at `/docs`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from faultline import __version__
from faultline.api.alarm_routes import alarm_router
from faultline.api.context import AppContext
from faultline.api.errors import install_error_handlers
from faultline.api.global_anomaly_routes import global_anomaly_router
from faultline.api.ingest_routes import ingest_router
from faultline.api.model_routes import model_router
from faultline.api.ops_routes import ops_router
from faultline.api.responses import ReadingShape
from faultline.api.security import PUBLIC, Shield, check_every_route_decided, mark_public
from faultline.api.seed_routes import seed_router
from faultline.api.station_routes import station_router
from faultline.dashboard import DOCS, INDEX, STATIC_DIR

DESCRIPTION = """Real-time anomaly detection for industrial IoT sensor streams.

Seed 000's endpoints keep their paths, parameters and field names; new fields are additions.
Times are ISO 8601 UTC with milliseconds (`record_time`) plus epoch milliseconds (`ts_ms`).

Writes need a token (`Authorization: Bearer ...`, from `faultline token create`) of the role
each endpoint names; reads need a viewer token when the API listens beyond loopback.

Alarm ids are `station|sensor|kind`; in a path they go percent-encoded (`|` is `%7C`), e.g.
`/api/alarms/s-01%7C*%7Csilent/ack` (JavaScript's encodeURIComponent does it).
"""


def swagger_ui_dir() -> Path:
    """Swagger UI's files as the swagger-ui-py wheel ships them: the docs load nothing remote."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: reinstall faultline")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def create_app(ctx: AppContext) -> FastAPI:
    # FastAPI's own docs load Swagger UI from a CDN, through an inline script: ours are local.
    app = FastAPI(
        title="Faultline",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    shape = ReadingShape(ctx.settings.sensor_names)
    app.include_router(seed_router(ctx, shape))
    app.include_router(station_router(ctx, shape))
    app.include_router(ingest_router(ctx))
    app.include_router(ops_router(ctx))
    app.include_router(global_anomaly_router(ctx))
    app.include_router(alarm_router(ctx))
    app.include_router(model_router(ctx))
    install_error_handlers(app)

    # The schema is public: it describes this open-source API and holds no data.
    @app.get("/openapi.json", include_in_schema=False, dependencies=[PUBLIC])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[PUBLIC])
    def docs() -> FileResponse:
        return FileResponse(DOCS, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False, dependencies=[PUBLIC])
    def dashboard() -> FileResponse:
        return FileResponse(INDEX, headers={"Cache-Control": "no-cache"})

    app.mount("/static", mark_public(StaticFiles(directory=STATIC_DIR)), name="static")
    app.mount(
        "/docs/assets", mark_public(StaticFiles(directory=swagger_ui_dir())), name="docs-assets"
    )
    check_every_route_decided(app)
    app.add_middleware(Shield, settings=ctx.settings.api)
    return app
