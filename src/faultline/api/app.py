"""The FastAPI application: routers over an AppContext, the dashboard at `/`, docs at `/docs`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from faultline import __version__
from faultline.api.context import AppContext
from faultline.api.errors import install_error_handlers
from faultline.api.global_anomaly_routes import global_anomaly_router
from faultline.api.ingest_routes import ingest_router
from faultline.api.ops_routes import ops_router
from faultline.api.responses import ReadingShape
from faultline.api.seed_routes import seed_router
from faultline.api.station_routes import station_router
from faultline.dashboard import INDEX, STATIC_DIR

DESCRIPTION = """Real-time anomaly detection for industrial IoT sensor streams.

Seed 000's endpoints keep their paths, parameters and field names; new fields are additions.
Times are ISO 8601 UTC with milliseconds (`record_time`) plus epoch milliseconds (`ts_ms`).
"""


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="Faultline", version=__version__, description=DESCRIPTION)
    shape = ReadingShape(ctx.settings.sensor_names)
    app.include_router(seed_router(ctx, shape))
    app.include_router(station_router(ctx, shape))
    app.include_router(ingest_router(ctx))
    app.include_router(ops_router(ctx))
    app.include_router(global_anomaly_router(ctx))
    install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(INDEX, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
