"""GET /api/global_anomalies over a real SQLite store the daily job has run on, on a real port."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from faultline.batch.global_anomalies import GlobalAnomalyRunFailed, run_global_anomalies
from faultline.clock import ManualClock
from faultline.store import Stations
from tests.api.helpers import Served, serve
from tests.batch.failing import FailingStore
from tests.batch.readings import DAY, END, MINUTE, START, readings_of
from tests.contract.batches import write_batch

NOW = END + 2 * 3_600_000  # 02:00 the day after: "yesterday" is the day the readings are of
SPIKE = START + 600 * MINUTE  # 10:00


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("global"), ManualClock(NOW)) as served:
        jumps = {("temperature", 600): 9.0}
        served.store.write(write_batch(readings_of("s-1", 0, 1440, seed=21, jumps=jumps)))
        served.store.write(write_batch(readings_of("s-2", 0, 1440, seed=22)))
        settings, clock = served.ctx.settings, ManualClock(END + 600_000)
        run_global_anomalies(settings, served.store, DAY, clock=clock)
        run_global_anomalies(settings, served.store, DAY - timedelta(days=1), clock=clock)
        # 2026-03-12 never ran; 2026-03-11 failed.
        failing = FailingStore(served.store, what=Stations, queries=1)
        with pytest.raises(GlobalAnomalyRunFailed):
            run_global_anomalies(settings, failing, DAY - timedelta(days=3), clock=clock)
        yield served


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as http:
        yield http


def test_yesterdays_anomalies_by_default(client: httpx.Client) -> None:
    response = client.get("/api/global_anomalies")

    assert response.status_code == 200
    body = response.json()
    assert body["day"] == "2026-03-14" and body["station_id"] is None
    assert (body["from"], body["to"]) == ("2026-03-14T00:00:00.000Z", "2026-03-15T00:00:00.000Z")
    spike = [
        a for a in body["anomalies"] if (a["station_id"], a["sensor"]) == ("s-1", "temperature")
    ]
    assert spike[0] == {
        "station_id": "s-1",
        "sensor": "temperature",
        "minute": "2026-03-14T10:00:00.000Z",
        "minute_ms": SPIKE,
        "value": spike[0]["value"],
        "expected": spike[0]["expected"],
        "score": spike[0]["score"],
    }
    assert spike[0]["value"] - spike[0]["expected"] == pytest.approx(9.0, abs=1.5)
    keys = [(a["station_id"], a["sensor"], a["minute_ms"]) for a in body["anomalies"]]
    assert keys == sorted(keys)
    assert body["run"] == {
        "status": "succeeded",
        "started_at": "2026-03-15T00:10:00.000Z",
        "finished_at": "2026-03-15T00:10:00.000Z",
        "series": 6,
        "skipped": 0,
        "skipped_by_reason": {},
        "anomalies": len(body["anomalies"]),
        "error": None,
    }


def test_one_day_and_one_station(client: httpx.Client) -> None:
    every = client.get("/api/global_anomalies", params={"day": "2026-03-14"}).json()
    only = client.get("/api/global_anomalies", params={"day": "2026-03-14", "station_id": "s-1"})

    assert only.status_code == 200 and only.json()["station_id"] == "s-1"
    assert only.json()["anomalies"] == [a for a in every["anomalies"] if a["station_id"] == "s-1"]
    assert only.json()["run"] == every["run"]  # the run covers the whole day


def test_a_day_the_job_found_nothing_in_is_an_empty_list_with_its_run(
    client: httpx.Client,
) -> None:
    response = client.get("/api/global_anomalies", params={"day": "2026-03-13"})

    assert response.status_code == 200
    body = response.json()
    assert body["anomalies"] == []
    assert body["run"]["status"] == "succeeded"
    assert (body["run"]["series"], body["run"]["anomalies"]) == (0, 0)


def test_a_day_the_job_never_ran_for_has_no_run(client: httpx.Client) -> None:
    response = client.get("/api/global_anomalies", params={"day": "2026-03-12"})

    assert response.status_code == 200
    assert (response.json()["anomalies"], response.json()["run"]) == ([], None)


def test_a_failed_run_is_served_as_failed_with_its_error(client: httpx.Client) -> None:
    body = client.get("/api/global_anomalies", params={"day": "2026-03-11"}).json()

    assert body["anomalies"] == []
    assert body["run"]["status"] == "failed"
    assert body["run"]["error"] == "StoreError: Stations failed: timed out"


@pytest.mark.parametrize("day", ["2026-3-14", "14/03/2026", "2026-02-30", " ", "2026-03-14T00:00Z"])
def test_a_bad_day_is_400_with_an_example(client: httpx.Client, day: str) -> None:
    response = client.get("/api/global_anomalies", params={"day": day})

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("day: ")
    assert "e.g. 2026-01-31" in detail or "not a day of the calendar" in detail


def test_a_day_whose_end_no_answer_could_write_is_400(client: httpx.Client) -> None:
    last = client.get("/api/global_anomalies", params={"day": "9999-12-30"})
    beyond = client.get("/api/global_anomalies", params={"day": "9999-12-31"})

    assert last.status_code == 200 and last.json()["to"] == "9999-12-31T00:00:00.000Z"
    assert beyond.status_code == 400
    assert "between 0001-01-01 and 9999-12-30" in beyond.json()["detail"]


def test_the_endpoint_is_documented(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert set(paths["/api/global_anomalies"]["get"]["responses"]) >= {"200", "400"}


def test_a_store_that_cannot_answer_is_503(tmp_path: Path) -> None:
    with serve(tmp_path, ManualClock(NOW)) as served:
        served.store.close()

        response = httpx.get(f"{served.url}/api/global_anomalies", timeout=10)

    assert response.status_code == 503
    assert "store unavailable" in response.json()["detail"]
