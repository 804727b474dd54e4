"""Who may call what, and what is refused before any handler runs (docs/SECURITY.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from faultline.api.security import PUBLIC, SECURITY_HEADERS, access_table, check_every_route_decided
from faultline.bus import MemoryBus
from faultline.clock import ManualClock
from faultline.config import load_settings
from faultline.tokens import Role
from tests.api.conftest import NOW
from tests.api.helpers import FixedModels, Served, serve, tiny_model
from tests.tokens import JSON, bearer, token_for

READING = b'{"station_id": "s-01", "temperature": 25.1}'
EXPECTED_ACCESS = {
    "GET /": "public",
    "GET /docs": "public",
    "GET /openapi.json": "public",
    "* /static": "public",
    "* /docs/assets": "public",
    "GET /api/health": "public",
    "GET /metrics": "viewer (beyond loopback)",
    "GET /api/stats": "viewer (beyond loopback)",
    "GET /api/dead_letters": "viewer (beyond loopback)",
    "GET /api/stations": "viewer (beyond loopback)",
    "GET /api/stations/{station_id}/readings": "viewer (beyond loopback)",
    "GET /api/latest_anomalies": "viewer (beyond loopback)",
    "GET /api/outliers_count": "viewer (beyond loopback)",
    "GET /api/check_drift_retrain": "viewer (beyond loopback)",
    "GET /api/global_anomalies": "viewer (beyond loopback)",
    "POST /api/predict": "viewer",
    "POST /api/readings": "ingest",
    "GET /api/alarms": "viewer (beyond loopback)",
    "GET /api/alarms/load": "viewer (beyond loopback)",
    "GET /api/alarms/{alarm_id}": "viewer (beyond loopback)",
    "POST /api/alarms/{alarm_id}/ack": "operator",
    "POST /api/alarms/{alarm_id}/shelve": "operator",
    "POST /api/alarms/{alarm_id}/unshelve": "operator",
    "POST /api/alarms/{alarm_id}/comment": "operator",
    "GET /api/models": "viewer (beyond loopback)",
    "GET /api/models/jobs/{job_id}": "viewer (beyond loopback)",
    "POST /api/models/retrain": "admin",
    "POST /api/models/{version}/promote": "admin",
    "POST /api/models/rollback": "admin",
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, ManualClock(NOW), models=FixedModels(tiny_model())) as s:
        yield s


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Served]:
    """Served as if beyond loopback: reads need a token too."""
    settings = load_settings(data_dir=tmp_path / "data", api={"reads_need_token": True})
    with serve(tmp_path, ManualClock(NOW), settings=settings) as s:
        yield s


def published(bus: MemoryBus) -> int:
    consumer = bus.consumer("faultline.readings", "security-test")
    count = len(consumer.consume(100, timeout_s=0.2))
    consumer.close()
    return count


def test_every_route_has_the_access_decided_for_it(served: Served) -> None:
    table = {
        name: None if a is None else a.describe() for name, a in access_table(served.app).items()
    }
    assert table == EXPECTED_ACCESS


def test_a_route_without_a_decision_or_with_two_stops_the_app_from_being_built() -> None:
    app = FastAPI()

    @app.get("/forgotten")
    def forgotten() -> None: ...

    @app.get("/twice", dependencies=[PUBLIC, PUBLIC])
    def twice() -> None: ...

    @app.get("/decided", dependencies=[PUBLIC])
    def decided() -> None: ...

    with pytest.raises(RuntimeError, match="GET /forgotten") as refused:
        check_every_route_decided(app)
    assert "GET /twice" in str(refused.value) and "/decided" not in str(refused.value)


def test_a_write_needs_a_token_of_the_right_role_also_on_loopback(served: Served) -> None:
    url = f"{served.url}/api/readings"
    tokens = served.ctx.tokens

    anonymous = httpx.post(url, content=READING, headers=JSON)
    viewer = httpx.post(
        url, content=READING, headers={**JSON, **bearer(token_for(tokens, Role.VIEWER))}
    )
    unknown = httpx.post(url, content=READING, headers={**JSON, **bearer("fl_made-up")})

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "ingest token" in anonymous.json()["detail"]
    assert viewer.status_code == 403
    assert "needs the ingest role" in viewer.json()["detail"]
    assert unknown.status_code == 401
    assert published(served.bus) == 0

    ingest = token_for(tokens, Role.INGEST)
    assert httpx.post(url, content=READING, headers={**JSON, **bearer(ingest)}).status_code == 202
    tokens.revoke("tests-ingest")
    revoked = httpx.post(url, content=READING, headers={**JSON, **bearer(ingest)})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert published(served.bus) == 1


def test_predict_needs_a_token_but_a_viewer_suffices(served: Served) -> None:
    features = {"temperature": 25.0, "humidity": 60.0, "noise_level": 50.0}
    url = f"{served.url}/api/predict"
    viewer = bearer(token_for(served.ctx.tokens, Role.VIEWER))

    assert httpx.post(url, json=features).status_code == 401
    assert httpx.post(url, json=features, headers=viewer).status_code == 200


def test_on_loopback_reads_need_no_token_but_a_bad_one_is_refused(served: Served) -> None:
    assert httpx.get(f"{served.url}/api/stations").status_code == 200
    bad = httpx.get(f"{served.url}/api/stations", headers=bearer("fl_nonsense"))
    assert bad.status_code == 401


def test_beyond_loopback_reads_need_a_viewer_token_and_probes_do_not(guarded: Served) -> None:
    viewer = bearer(token_for(guarded.ctx.tokens, Role.VIEWER))
    for path in ("/api/stations", "/api/stats", "/metrics", "/api/latest_anomalies"):
        assert httpx.get(f"{guarded.url}{path}").status_code == 401, path
        assert httpx.get(f"{guarded.url}{path}", headers=viewer).status_code == 200, path
    for path in ("/api/health", "/", "/docs", "/openapi.json", "/static/app.js"):
        assert httpx.get(f"{guarded.url}{path}").status_code in (200, 503), path


def test_reads_need_a_token_when_the_api_listens_beyond_loopback() -> None:
    assert load_settings(api={"host": "0.0.0.0"}).api.read_token_required
    assert not load_settings(api={"host": "127.0.0.1"}).api.read_token_required
    assert not load_settings(api={"host": "::1"}).api.read_token_required
    assert load_settings(
        api={"host": "127.0.0.1", "reads_need_token": True}
    ).api.read_token_required


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x"],
)  # fmt: skip
def test_a_body_a_cross_site_form_or_fetch_could_send_is_415(
    served: Served, content_type: str | None
) -> None:
    headers = served.auth if content_type is None else {**served.auth, "Content-Type": content_type}
    answer = httpx.post(f"{served.url}/api/readings", content=READING, headers=headers)

    assert answer.status_code == 415
    assert "application/json" in answer.json()["detail"]
    assert published(served.bus) == 0


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
     {"Sec-Fetch-Site": "same-site"}],
)  # fmt: skip
def test_a_write_from_another_origin_is_403(served: Served, headers: dict[str, str]) -> None:
    answer = httpx.post(
        f"{served.url}/api/readings", content=READING, headers={**served.json_auth, **headers}
    )

    assert answer.status_code == 403
    assert published(served.bus) == 0


def test_a_write_from_the_dashboards_own_origin_is_taken(served: Served) -> None:
    headers = {**served.json_auth, "Origin": served.url, "Sec-Fetch-Site": "same-origin"}
    answer = httpx.post(f"{served.url}/api/readings", content=READING, headers=headers)
    assert answer.status_code == 202


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.2", ""])
def test_a_foreign_host_name_is_421_against_dns_rebinding(served: Served, host: str) -> None:
    answer = httpx.get(f"{served.url}/api/stations", headers={"Host": host})
    assert answer.status_code == 421
    assert "ALLOWED_HOSTS" in answer.json()["detail"]


def test_loopback_names_are_answered(served: Served) -> None:
    port = served.server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert httpx.get(f"{served.url}/api/stations", headers={"Host": host}).status_code == 200


def test_configured_host_names_replace_the_default(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", api={"allowed_hosts": ["faultline.plant.example"]}
    )
    with serve(tmp_path, ManualClock(NOW), settings=settings) as s:
        ok = httpx.get(f"{s.url}/api/stations", headers={"Host": "faultline.plant.example:443"})
        other = httpx.get(f"{s.url}/api/stations")
    assert ok.status_code == 200
    assert other.status_code == 421


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [("GET", "/", {}), ("GET", "/api/stations", {}), ("GET", "/static/app.js", {}),
     ("GET", "/docs", {}), ("GET", "/nowhere", {}), ("GET", "/api/stations", {"Host": "x.example"}),
     ("POST", "/api/readings", {}), ("POST", "/api/readings", {"Content-Type": "text/plain"})],
)  # fmt: skip
def test_every_answer_carries_the_security_headers(
    served: Served, method: str, path: str, headers: dict[str, str]
) -> None:
    answer = httpx.request(method, f"{served.url}{path}", headers=headers)
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value, (name, answer.status_code)
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_the_docs_load_nothing_from_elsewhere(served: Served) -> None:
    page = httpx.get(f"{served.url}/docs").text
    assert "http://" not in page and "https://" not in page and "<script>" not in page
    bundle = httpx.get(f"{served.url}/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    schema = httpx.get(f"{served.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
