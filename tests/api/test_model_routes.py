"""The model routes' own mechanics over a Lifecycle stand-in (tests/api/fake_lifecycle.py):
jobs one at a time, their states, access by role, and how the lifecycle's refusals and unknown
versions are answered. test_model_lifecycle_api.py runs them over the real Lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faultline.api.model_routes import JobBusy, Jobs
from faultline.clock import ManualClock
from faultline.models.base import ModelInfo
from faultline.tokens import Role
from tests.api.conftest import NOW
from tests.api.fake_lifecycle import FakeLifecycle
from tests.api.helpers import FixedModels, Served, serve, tiny_model
from tests.tokens import JSON, bearer, token_for

WAIT_S = 30.0


@pytest.fixture
def lifecycle() -> FakeLifecycle:
    return FakeLifecycle(ManualClock(NOW))


@pytest.fixture
def served(tmp_path: Path, lifecycle: FakeLifecycle) -> Iterator[Served]:
    with serve(
        tmp_path, ManualClock(NOW), models=FixedModels(tiny_model()), lifecycle=lifecycle
    ) as s:
        yield s


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as http:
        yield http


def finished(client: httpx.Client, job_id: str, wait_s: float = WAIT_S) -> dict:
    """The job once it is done or failed (a job still running after `wait_s` fails the test)."""
    deadline = time.monotonic() + wait_s
    while True:
        answer: dict = client.get(f"/api/models/jobs/{job_id}").json()
        if answer["state"] in ("done", "failed") or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


def test_models_lists_versions_aliases_drift_and_the_callers_role(
    client: httpx.Client, lifecycle: FakeLifecycle
) -> None:
    lifecycle.check_drift()

    body = client.get("/api/models").json()

    assert body["available"] is True
    assert (body["alias"], body["challenger_alias"]) == ("champion", "challenger")
    assert body["champion"] == "1"
    assert body["challengers"] == []
    (version,) = body["versions"]
    assert (version["version"], version["aliases"], version["compiled"]) == (
        "1",
        ["champion"],
        "logged",
    )
    assert version["gate"] is None
    assert body["drift"]["sensors"]["humidity"]["shift"] == pytest.approx(1.1)
    assert body["drift"]["score"]["anomaly_rate"] == pytest.approx(0.004)
    assert body["drift"]["model_version"] == "1"
    assert body["history"] == []
    assert body["job"] is None
    assert body["caller_role"] == "admin"


def test_a_retrain_is_a_job_and_a_second_one_waits_its_turn(
    client: httpx.Client, lifecycle: FakeLifecycle
) -> None:
    lifecycle.release.clear()

    first = client.post("/api/models/retrain")
    second = client.post("/api/models/retrain", json={"stations": "s-0*"})

    assert first.status_code == 202
    job = first.json()
    assert job["state"] in ("queued", "running")
    assert job["actor"] == "tests-admin"
    assert second.status_code == 409
    assert job["id"] in second.json()["detail"]
    assert client.get("/api/models").json()["job"]["id"] == job["id"]

    lifecycle.release.set()
    done = finished(client, job["id"])

    assert done["state"] == "done"
    assert done["result"]["version"] == "2"
    assert done["gate"]["passed"] is True
    assert done["error"] is None
    assert lifecycle.retrained == [(None, None, "*")]
    models = client.get("/api/models").json()
    assert models["challengers"] == ["2"]
    assert models["versions"][0]["gate"]["challenger_version"] == "2"
    # Its turn now.
    assert client.post("/api/models/retrain").status_code == 202


def test_a_retrain_window_and_stations_reach_the_lifecycle(
    client: httpx.Client, lifecycle: FakeLifecycle
) -> None:
    answer = client.post(
        "/api/models/retrain",
        json={"from": "2026-01-01T00:00:00Z", "to": NOW, "stations": "line-1-*"},
    )

    assert answer.status_code == 202
    assert finished(client, answer.json()["id"])["state"] == "done"
    assert lifecycle.retrained == [(1_767_225_600_000, NOW, "line-1-*")]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"from": NOW, "to": NOW}, "must be before"),
        ({"from": "yesterday"}, "from must be an ISO 8601 timestamp"),
        ({"to": "2026-01-01T00:00:00"}, "no timezone"),
    ],
)
def test_a_bad_retrain_window_is_a_400(client: httpx.Client, body: dict, fragment: str) -> None:
    answer = client.post("/api/models/retrain", json=body)

    assert answer.status_code == 400
    assert fragment in answer.json()["detail"]


def test_a_failed_retrain_says_why(client: httpx.Client, lifecycle: FakeLifecycle) -> None:
    lifecycle.retrain_error = ValueError("no readings in the training window")

    job = client.post("/api/models/retrain").json()
    done = finished(client, job["id"])

    assert done["state"] == "failed"
    assert done["error"] == "no readings in the training window"
    assert done["result"] is None


def test_an_unknown_job_is_a_404(client: httpx.Client) -> None:
    answer = client.get("/api/models/jobs/0123")

    assert answer.status_code == 404
    assert "restart" in answer.json()["detail"]


def test_promotion_needs_a_passed_gate_or_force_and_rollback_undoes_it(
    client: httpx.Client, lifecycle: FakeLifecycle
) -> None:
    lifecycle.gate_passes = False
    job = client.post("/api/models/retrain").json()
    assert finished(client, job["id"])["gate"]["passed"] is False

    refused = client.post("/api/models/2/promote", json={"reason": "try"})
    forced = client.post("/api/models/2/promote", json={"reason": "on call", "force": True})

    assert refused.status_code == 409
    assert refused.json()["detail"] == "version 2 has not passed the gate"
    assert forced.status_code == 200
    change = forced.json()
    assert (change["operation"], change["from_version"], change["to_version"]) == (
        "promote",
        "1",
        "2",
    )
    assert (change["actor"], change["reason"]) == ("tests-admin", "on call")
    assert client.get("/api/models").json()["champion"] == "2"

    back = client.post("/api/models/rollback", json={"reason": "worse at night"})

    assert back.status_code == 200
    assert (back.json()["operation"], back.json()["to_version"]) == ("rollback", "1")
    models = client.get("/api/models").json()
    assert models["champion"] == "1"
    assert [c["operation"] for c in models["history"]] == ["rollback", "promote"]


def test_an_unknown_version_is_a_404_and_a_refused_rollback_a_409(client: httpx.Client) -> None:
    unknown = client.post("/api/models/7/promote", json={"reason": "x"})
    not_a_version = client.post("/api/models/latest/promote", json={"reason": "x"})
    rollback = client.post("/api/models/rollback", json={"reason": "x"})

    assert unknown.status_code == 404
    assert "no version 7" in unknown.json()["detail"]
    assert not_a_version.status_code == 422
    assert rollback.status_code == 409
    assert rollback.json()["detail"] == "no earlier champion to roll back to"


def test_a_change_needs_a_reason(client: httpx.Client) -> None:
    assert client.post("/api/models/rollback", json={}).status_code == 422
    assert client.post("/api/models/1/promote", json={"reason": ""}).status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/models/retrain", None),
        ("POST", "/api/models/1/promote", {"reason": "x"}),
        ("POST", "/api/models/rollback", {"reason": "x"}),
    ],
)
def test_administrative_routes_need_an_admin_token(
    served: Served, method: str, path: str, body: dict | None
) -> None:
    operator = token_for(served.ctx.tokens, Role.OPERATOR)

    anonymous = httpx.request(method, served.url + path, headers=JSON, json=body)
    as_operator = httpx.request(
        method, served.url + path, headers={**JSON, **bearer(operator)}, json=body
    )

    assert anonymous.status_code == 401
    assert as_operator.status_code == 403
    assert "admin" in as_operator.json()["detail"]


def test_check_drift_retrain_runs_the_cycle_for_an_admin(
    client: httpx.Client, served: Served
) -> None:
    body = client.get("/api/check_drift_retrain").json()

    assert body["msg"] == "Model drift detected: retrained, gated, promoted."
    assert (body["drift_detected"], body["retrained"], body["promoted"]) == (True, True, True)
    assert body["challenger"]["version"] == "2"
    assert body["gate"]["passed"] is True
    assert body["model_version"] == f"{2:032x}"
    assert body["sensors"]["humidity"]["drifted"] is True
    assert body["recent_size"] == 4000
    metrics = served.ctx.metrics.exposition().decode()
    assert 'faultline_model_drift_shift{sensor="humidity"} 1.1' in metrics
    assert "faultline_model_drift_detected 1.0" in metrics


def test_check_drift_retrain_without_an_admin_token_only_checks(
    served: Served, lifecycle: FakeLifecycle
) -> None:
    body = httpx.get(f"{served.url}/api/check_drift_retrain").json()

    assert body["drift_detected"] is True
    assert (body["retrained"], body["promoted"], body["challenger"]) == (False, False, None)
    assert "need an admin token" in body["msg"]
    assert body["msg"].startswith("Model drift detected: drift detected in humidity")
    assert body["model_version"] == tiny_model().info.run_id
    assert lifecycle.latest_drift() is not None  # the check was recorded
    assert len(lifecycle.versions()) == 1


def test_without_a_lifecycle_the_models_are_unavailable_and_writes_503(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW), models=FixedModels(tiny_model())) as s, s.client() as c:
        models = c.get("/api/models")
        retrain = c.post("/api/models/retrain")
        rollback = c.post("/api/models/rollback", json={"reason": "x"})

    assert models.status_code == 200
    assert models.json()["available"] is False
    assert "no model lifecycle" in models.json()["detail"]
    assert models.json()["versions"] == []
    assert retrain.status_code == 503
    assert rollback.status_code == 503


def test_jobs_are_one_at_a_time_and_only_the_newest_are_kept() -> None:
    jobs = Jobs(ManualClock(NOW), keep=2)
    gate = threading.Event()
    info = ModelInfo("m", "2", "r", "challenger", NOW)

    def work() -> tuple[ModelInfo, None]:
        gate.wait()
        return info, None

    first = jobs.submit("retrain", {}, "a", work)
    with pytest.raises(JobBusy) as busy:
        jobs.submit("retrain", {}, "b", work)
    assert busy.value.job.id == first.id
    gate.set()
    ids = [first.id]
    for actor in ("c", "d"):
        while (job := jobs.get(ids[-1])) is not None and job.busy:
            time.sleep(0.01)
        ids.append(jobs.submit("retrain", {}, actor, work).id)

    assert jobs.get(ids[0]) is None  # the oldest, forgotten
    assert jobs.get(ids[1]) is not None
    assert jobs.latest() is not None
