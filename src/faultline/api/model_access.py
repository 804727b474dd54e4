"""Getting the serving model, or a 503 that says why there is none."""

from __future__ import annotations

from fastapi import HTTPException

from faultline.api.context import AppContext
from faultline.models.base import LoadedModel


def current_model(ctx: AppContext) -> LoadedModel:
    if ctx.models is None:
        raise HTTPException(503, "no model is configured: start Faultline with a model registry")
    try:
        return ctx.models.current()
    except Exception as exc:
        # Whatever the registry raises (no version under the alias, an unreachable tracking
        # store, an unreadable artifact) means the same to a client: no model to serve, for now.
        raise HTTPException(503, f"no model available: {exc}") from exc
