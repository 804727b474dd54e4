"""The model lifecycle over HTTP: versions, gates, drift and champion history; retraining as a
background job; promotion and rollback; and the drift cycle behind seed 000's
`GET /api/check_drift_retrain`.

Every lifecycle call is synchronous and may take minutes (training, gating), so none runs on the
event loop: retraining is a job on a thread of its own (`POST /api/models/retrain` answers 202
with its id at once), the rest run on worker threads. One job at a time per process; the
newest `KEPT_JOBS` are remembered in memory only, so a restart forgets job statuses (the
challenger a finished job registered stays in the registry, listed by `GET /api/models`).

What changes the registry (retrain, promote, rollback, and the cycle behind check_drift_retrain)
needs an admin token; the Lifecycle serialises those operations across processes itself.
"""

# No `from __future__ import annotations` here: FastAPI must see the request bodies as classes.
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Body, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from faultline.api.context import AppContext, ModelLifecycle
from faultline.api.model_access import current_model
from faultline.api.params import bad_request, instant_or_epoch_ms
from faultline.api.responses import ChampionChangeOut, ModelJob, ModelsOut
from faultline.api.security import reads, requires
from faultline.clock import Clock, iso_ms
from faultline.metrics import Metrics
from faultline.models.base import DriftReport, ModelInfo
from faultline.models.drift import check_drift
from faultline.models.gate import GateFigures, GateResult
from faultline.models.lifecycle import ChampionChange, LifecycleRefused, RecordedDrift
from faultline.store import RecentReadings
from faultline.tokens import Role, TokenInfo

log = logging.getLogger(__name__)

KEPT_JOBS = 20  # finished jobs remembered, newest first; older ones are forgotten
TIME_HELP = "ISO 8601 with a timezone, or epoch milliseconds"
NO_LIFECYCLE = (
    "this process has no model lifecycle (no model registry): retraining, the gate and "
    "promotion are not available here"
)

JobStateName = Literal["queued", "running", "done", "failed"]


# ---- jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One background lifecycle job as it stands; replaced whole on every change."""

    id: str
    kind: Literal["retrain"]
    params: dict[str, str | int | None]
    actor: str
    created_at_ms: int
    state: JobStateName = "queued"
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    result: ModelInfo | None = None
    gate: GateResult | None = None
    error: str | None = None

    @property
    def busy(self) -> bool:
        return self.state in ("queued", "running")


class JobBusy(Exception):
    """A job is queued or running already: this process runs one at a time."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} ({job.kind}, {job.state}) is not finished yet")
        self.job = job


Work = Callable[[], tuple[ModelInfo, GateResult | None]]


class Jobs:
    """This process's lifecycle jobs: one at a time, each on a thread of its own, the newest
    `keep` remembered in memory (a restart forgets them)."""

    def __init__(self, clock: Clock, keep: int = KEPT_JOBS) -> None:
        self._clock = clock
        self._keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def submit(
        self, kind: Literal["retrain"], params: dict[str, str | int | None], actor: str, work: Work
    ) -> Job:
        with self._lock:
            running = next((j for j in self._jobs.values() if j.busy), None)
            if running is not None:
                raise JobBusy(running)
            job = Job(uuid.uuid4().hex, kind, params, actor, self._clock.now_ms())
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)  # the oldest: never the one just queued
        # A daemon: a stopping process does not wait minutes for a training to end.
        threading.Thread(
            target=self._run, args=(job.id, work), name=f"model-job-{job.id[:8]}", daemon=True
        ).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def latest(self) -> Job | None:
        """The running job, else the newest."""
        with self._lock:
            jobs = list(self._jobs.values())
        return next((j for j in jobs if j.busy), jobs[-1] if jobs else None)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _run(self, job_id: str, work: Work) -> None:
        self._update(job_id, state="running", started_at_ms=self._clock.now_ms())
        try:
            info, gate = work()
        except Exception as exc:  # the job's answer, not the process's end
            log.warning("model job %s failed: %s", job_id, exc, exc_info=True)
            self._update(
                job_id,
                state="failed",
                finished_at_ms=self._clock.now_ms(),
                error=str(exc) or type(exc).__name__,
            )
        else:
            self._update(
                job_id, state="done", finished_at_ms=self._clock.now_ms(), result=info, gate=gate
            )


# ---- answers --------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def info_out(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "trained_at": iso_ms(info.trained_at_ms),
        "trained_at_ms": info.trained_at_ms,
        "params": dict(info.params),
    }


def _figures_out(figures: GateFigures) -> dict[str, Any]:
    return {
        "readings": figures.readings,
        "false_alarms": figures.false_alarms,
        "false_alarm_rate": figures.false_alarm_rate,
        "alarms": figures.alarms,
        "faults": figures.faults,
        "faults_caught": figures.faults_caught,
        "detection_rate": figures.detection_rate,
    }


def gate_out(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    return {
        "challenger_version": gate.challenger_version,
        "champion_version": gate.champion_version,
        "passed": gate.passed,
        "reason": gate.reason,
        "challenger": _figures_out(gate.challenger),
        "champion": None if gate.champion is None else _figures_out(gate.champion),
        "window_from": iso_ms(gate.window_start_ms),
        "window_to": iso_ms(gate.window_end_ms),
        "window_start_ms": gate.window_start_ms,
        "window_end_ms": gate.window_end_ms,
        "gated_at": iso_ms(gate.gated_at_ms),
        "gated_at_ms": gate.gated_at_ms,
    }


def _report_out(report: DriftReport) -> dict[str, Any]:
    """The parts of a drift report both answers share: sizes, sensors, score drift."""
    score = report.score
    return {
        "drift_detected": report.drift_detected,
        "reference_size": report.reference_size,
        "recent_size": report.recent_size,
        "sensors": {
            name: {
                "ks_statistic": d.ks_statistic,
                "p_value": d.p_value,
                "psi": d.psi,
                "drifted": d.drifted,
                "shift": d.shift,
            }
            for name, d in report.sensors.items()
        },
        "score": None
        if score is None
        else {
            "anomaly_rate": score.anomaly_rate,
            "expected_rate": score.expected_rate,
            "p_value": score.p_value,
            "drifted": score.drifted,
            "rows": score.rows,
        },
    }


def drift_out(recorded: RecordedDrift | None) -> dict[str, Any] | None:
    if recorded is None:
        return None
    return {
        **_report_out(recorded.report),
        "message": recorded.report.message,
        "checked_at": iso_ms(recorded.checked_at_ms),
        "checked_at_ms": recorded.checked_at_ms,
        "model_version": recorded.model_version,
    }


def change_out(change: ChampionChange) -> dict[str, Any]:
    return {
        "operation": change.operation,
        "from_version": change.from_version,
        "to_version": change.to_version,
        "at": iso_ms(change.at_ms),
        "at_ms": change.at_ms,
        "actor": change.actor,
        "reason": change.reason,
    }


def job_out(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "params": job.params,
        "actor": job.actor,
        "created_at": iso_ms(job.created_at_ms),
        "started_at": _iso(job.started_at_ms),
        "finished_at": _iso(job.finished_at_ms),
        "result": None if job.result is None else info_out(job.result),
        "gate": gate_out(job.gate),
        "error": job.error,
    }


def observe_drift(metrics: Metrics, recorded: RecordedDrift) -> None:
    """A drift check's figures into the faultline_model_drift_* gauges."""
    report = recorded.report
    metrics.record_drift(
        checked_at_ms=recorded.checked_at_ms,
        detected=report.drift_detected,
        shifts={name: d.shift for name, d in report.sensors.items()},
        psis={name: d.psi for name, d in report.sensors.items()},
        anomaly_rate=None if report.score is None else report.score.anomaly_rate,
    )


# ---- the drift cycle (seed 000's GET /api/check_drift_retrain) ------------------------------


def _verdict(report: DriftReport) -> str:
    if report.drift_detected:
        return f"Model drift detected: {report.message}."
    return f"No model drift detected: {report.message}."


def _check_only(report: DriftReport, run_id: str, why: str, checked_at_ms: int | None) -> dict:
    return {
        **_report_out(report),
        "msg": f"{_verdict(report)} {why}; model {run_id} stays in service.",
        "retrained": False,
        "promoted": False,
        "model_version": run_id,
        "challenger": None,
        "gate": None,
        "checked_at": _iso(checked_at_ms),
    }


def drift_cycle(ctx: AppContext, token: TokenInfo | None) -> dict[str, Any]:
    """Check drift and, for an admin, retrain → gate → promote (Lifecycle.check_drift_retrain);
    for anyone else, or without a lifecycle, only the check, saying why no more. 409 when the
    lifecycle refuses (no champion to check against, say)."""
    lifecycle = ctx.lifecycle
    if lifecycle is None:
        model = current_model(ctx)
        sample = ctx.settings.lifecycle.drift_sample
        recent = ctx.store.query(RecentReadings(limit=sample, sensors=model.sensors))
        report = check_drift(model.reference, recent, model.sensors, model=model)
        why = f"Retraining is not available: {NO_LIFECYCLE}"
        return _check_only(report, model.info.run_id, why, None)
    try:
        if token is None or token.role < Role.ADMIN:
            recorded = lifecycle.check_drift()
            observe_drift(ctx.metrics, recorded)
            run_id = current_model(ctx).info.run_id
            why = "Retraining, the gate and promotion need an admin token"
            return _check_only(recorded.report, run_id, why, recorded.checked_at_ms)
        outcome = lifecycle.check_drift_retrain(actor=token.name)
    except LifecycleRefused as exc:
        raise HTTPException(409, str(exc)) from None
    observe_drift(ctx.metrics, outcome.drift)
    return {
        **_report_out(outcome.drift.report),
        "msg": outcome.msg,
        "retrained": outcome.challenger is not None,
        "promoted": outcome.promoted,
        "model_version": outcome.model_version,
        "challenger": None if outcome.challenger is None else info_out(outcome.challenger),
        "gate": gate_out(outcome.gate),
        "checked_at": iso_ms(outcome.drift.checked_at_ms),
    }


# ---- routes ---------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrainRequest(_Body):
    from_: str | int | None = Field(
        default=None,
        alias="from",
        description=f"Start of the training window (included): {TIME_HELP}; default: "
        "lifecycle.train_window_s before the gate's window",
        examples=["2026-01-01T00:00:00Z"],
    )
    to: str | int | None = Field(
        default=None,
        description=f"End of the training window (excluded): {TIME_HELP}; default: the start "
        "of the gate's window (lifecycle.gate_window_s before now)",
        examples=["2026-01-08T00:00:00Z"],
    )
    stations: str = Field(
        default="*",
        min_length=1,
        max_length=200,
        description="Only stations whose id matches this glob, e.g. line-1-*",
    )


class ChangeRequest(_Body):
    reason: str = Field(min_length=1, max_length=500, description="Why: kept in the history")


class PromoteRequest(ChangeRequest):
    force: bool = Field(
        default=False, description="Promote even though the version's latest gate did not pass"
    )


VersionPath = Annotated[
    str,
    Path(pattern=r"^[1-9][0-9]{0,8}$", description="Registry version number", examples=["3"]),
]
JobIdPath = Annotated[str, Path(max_length=64, description="The id POST /api/models/retrain gave")]
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The lifecycle refuses it now; the message says why"},
    503: {"description": "This process has no model lifecycle"},
}


def _need(ctx: AppContext) -> ModelLifecycle:
    if ctx.lifecycle is None:
        raise HTTPException(503, NO_LIFECYCLE)
    return ctx.lifecycle


def _actor(token: TokenInfo | None) -> str:
    # `requires` always hands over a token; its name is who did it.
    assert token is not None
    return token.name


def _changed(operation: Callable[[], ChampionChange]) -> dict[str, Any]:
    try:
        return change_out(operation())
    except LifecycleRefused as exc:
        raise HTTPException(409, str(exc)) from None
    except LookupError as exc:  # the registry's ModelNotFoundError: gone since it was listed
        raise HTTPException(404, str(exc)) from None


def model_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/models", tags=["models"])
    admin = requires(ctx, Role.ADMIN)
    viewer = reads(ctx)
    jobs = Jobs(ctx.clock)
    model = ctx.settings.model

    @router.get("", response_model=ModelsOut)
    def models(token: Annotated[TokenInfo | None, viewer]) -> dict[str, Any]:
        """Every registered version (newest first) with its aliases, latest gate and compiled
        form; the champion history; the latest recorded drift check; this process's job."""
        role = None if token is None else token.role.label
        latest = jobs.latest()
        answer: dict[str, Any] = {
            "available": ctx.lifecycle is not None,
            "detail": "" if ctx.lifecycle is not None else NO_LIFECYCLE,
            "alias": model.alias,
            "challenger_alias": model.challenger_alias,
            "champion": None,
            "challengers": [],
            "versions": [],
            "history": [],
            "drift": None,
            "job": None if latest is None else job_out(latest),
            "caller_role": role,
        }
        if ctx.lifecycle is None:
            return answer
        views = ctx.lifecycle.versions()
        answer.update(
            champion=next((v.info.version for v in views if model.alias in v.aliases), None),
            challengers=[v.info.version for v in views if model.challenger_alias in v.aliases],
            versions=[
                {
                    **info_out(v.info),
                    "aliases": list(v.aliases),
                    "compiled": v.compiled,
                    "gate": gate_out(v.gate),
                }
                for v in views
            ],
            history=[change_out(c) for c in ctx.lifecycle.history()],
            drift=drift_out(ctx.lifecycle.latest_drift()),
        )
        return answer

    @router.post(
        "/retrain",
        status_code=202,
        response_model=ModelJob,
        responses={
            400: {"description": "from/to not times, or not in order"},
            409: {"description": "A job is running already; the message names it"},
            503: _REFUSED[503],
        },
    )
    def retrain(
        token: Annotated[TokenInfo | None, admin],
        body: Annotated[RetrainRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """Start training a challenger on stored readings, then gating it beside the champion,
        in the background: 202 with the job to poll at GET /api/models/jobs/{id}.

        One job at a time in this process; its status is kept in memory only (a restart
        forgets it, not the challenger it registered)."""
        lifecycle = _need(ctx)
        request = body or RetrainRequest()
        start = None if request.from_ is None else instant_or_epoch_ms("from", str(request.from_))
        end = None if request.to is None else instant_or_epoch_ms("to", str(request.to))
        if start is not None and end is not None and start >= end:
            raise bad_request(f"from ({iso_ms(start)}) must be before to ({iso_ms(end)})")
        stations = request.stations

        def work() -> tuple[ModelInfo, GateResult | None]:
            challenger = lifecycle.retrain(start, end, stations)
            return challenger, lifecycle.gate(challenger.version)

        params: dict[str, str | int | None] = {"from": start, "to": end, "stations": stations}
        try:
            return job_out(jobs.submit("retrain", params, _actor(token), work))
        except JobBusy as exc:
            raise HTTPException(409, f"{exc}: one model job at a time") from None

    @router.get(
        "/jobs/{job_id}",
        dependencies=[viewer],
        response_model=ModelJob,
        responses={404: {"description": "No such job in this process (a restart forgets them)"}},
    )
    def job(job_id: JobIdPath) -> dict[str, Any]:
        """A job's state (queued, running, done, failed) and its result or error."""
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(
                404, f"no job {job_id!r} in this process (job statuses do not survive a restart)"
            )
        return job_out(found)

    @router.post(
        "/{version}/promote",
        response_model=ChampionChangeOut,
        responses={404: {"description": "No such version"}, **_REFUSED},
    )
    async def promote(
        version: VersionPath,
        body: PromoteRequest,
        token: Annotated[TokenInfo | None, admin],
    ) -> dict[str, Any]:
        """Point the serving alias at `version`: refused (409) unless its latest gate passed,
        or with force. Both engines pick it up between batches."""
        lifecycle = _need(ctx)

        def run() -> dict[str, Any]:
            if all(v.info.version != version for v in lifecycle.versions()):
                raise HTTPException(404, f"no version {version} of {model.name}")
            return _changed(
                lambda: lifecycle.promote(
                    version, actor=_actor(token), reason=body.reason, force=body.force
                )
            )

        return await anyio.to_thread.run_sync(run)

    @router.post("/rollback", response_model=ChampionChangeOut, responses=_REFUSED)
    async def rollback(
        body: ChangeRequest, token: Annotated[TokenInfo | None, admin]
    ) -> dict[str, Any]:
        """Put the previous champion back (409 when there is none)."""
        lifecycle = _need(ctx)
        return await anyio.to_thread.run_sync(
            lambda: _changed(lambda: lifecycle.rollback(actor=_actor(token), reason=body.reason))
        )

    return router
