"""Schemathesis over the OpenAPI document: thousands of generated requests, no server error.

Every operation is fuzzed with valid (positive) and invalid (negative) inputs, signed in as admin
so that the requests reach the handlers rather than stopping at 401. Seeded and bounded by case
counts, so that CI runs the same cases each time in a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from starlette.testclient import TestClient

from faultline.bus import MemoryBus
from faultline.clock import ManualClock
from tests.api.conftest import NOW, known_readings
from tests.api.fake_lifecycle import FakeLifecycle
from tests.api.helpers import FixedModels, Served, serve, tiny_model

LOCAL = "http://127.0.0.1"  # a Host the app answers
MIN_CASES = 2000
# The whole calendar, in every offset: schemathesis' own formats stay near today, where the
# bugs at year 1 and 9999 (a 500 on day=9999-12-31, say) are not. The first values are the
# edges, which Hypothesis also tries by itself but not within a few hundred cases.
_OFFSETS = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)
_INSTANTS = st.datetimes(timezones=st.builds(timezone, _OFFSETS)).map(datetime.isoformat)
_EDGES = [
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.9999Z",
]
schemathesis.openapi.format("date-time", st.one_of(st.sampled_from(_EDGES), _INSTANTS))
schemathesis.openapi.format(
    "date", st.one_of(st.sampled_from(["0001-01-01", "9999-12-31"]), st.dates().map(date.isoformat))
)
EXAMPLES = 100  # per operation and mode; operations with few inputs run out sooner


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    bus = MemoryBus(
        max_messages=1_000_000, max_bytes=2**31
    )  # a full bus is a 503 by design, not a finding
    # The model routes reach their handlers over a lifecycle stand-in: a real one would retrain
    # on every generated check_drift_retrain.
    lifecycle = FakeLifecycle(ManualClock(NOW))
    with serve(
        tmp, ManualClock(NOW), models=FixedModels(tiny_model()), bus=bus, lifecycle=lifecycle
    ) as s:
        known_readings(s)
        yield s


def test_no_generated_request_gets_a_server_error(served: Served) -> None:
    document = httpx.get(f"{served.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    cases = 0
    # In process, through the app's ASGI interface: over a socket each request costs this
    # machine ~45 ms of thread hand-offs, which would make the fuzzing minutes long.
    with TestClient(served.app, base_url=LOCAL) as client:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )
                @given(operation.as_strategy(generation_mode=mode))
                def request(case: schemathesis.Case) -> None:
                    nonlocal cases
                    cases += 1
                    kwargs = case.as_transport_kwargs(base_url=LOCAL)
                    kwargs["headers"] = {**kwargs.get("headers", {}), **served.auth}
                    answer = client.request(
                        kwargs["method"],
                        kwargs["url"],
                        params=kwargs.get("params"),
                        headers=kwargs["headers"],
                        content=kwargs.get("data") or kwargs.get("content"),
                        json=kwargs.get("json"),
                    )
                    assert answer.status_code < 500, (
                        f"{case.method} {case.formatted_path} {kwargs}: "
                        f"{answer.status_code} {answer.text[:500]}"
                    )

                try:
                    request()
                except Unsatisfiable:
                    # Negative cases need an input to break: an operation without any has none.
                    assert mode is GenerationMode.NEGATIVE, operation.label
    assert cases >= MIN_CASES
