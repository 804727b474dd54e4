"""The alarm API over HTTP, on a real store: the list and its filters and pages, one alarm's state
and history, every operator action the state machine allows and the 409 of every one it refuses,
who may act, two acknowledgements racing, and the alarm-load figures.

The engine's part of each alarm is written into the store directly, as the engine would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pytest

from faultline.alarm_schema import ANOMALY, SILENT, STATION_WIDE, AlarmKey, AlarmTransition
from faultline.clock import ManualClock, iso_ms
from faultline.config import Severity, load_settings
from faultline.store import Alarms, Atomicity, MemoryStore, SqliteStore, Store
from faultline.store.base import Query, R
from faultline.store.forwarding import ForwardingStore
from faultline.tokens import Role
from tests.api.helpers import Served, serve
from tests.contract.batches import write_batch
from tests.tokens import JSON, bearer, token_for

NOW = 1_767_229_200_000  # 2026-01-01T01:00:00Z
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
TEMP = AlarmKey("s-01", "temperature", ANOMALY)  # active, high, unacknowledged
QUIET = AlarmKey("s-02", STATION_WIDE, SILENT)  # cleared, never acknowledged
HUMID = AlarmKey("s-03", "humidity", ANOMALY)  # active, escalated to critical
SHARES = (("temperature", 0.75), ("humidity", 0.25))
MAX_SHELVE_MS = 7 * DAY  # the default alarms.max_shelve_s


def engine(
    key: AlarmKey,
    action: str,
    ts: int,
    activation: int | None = None,
    severity: Severity = "medium",
    sensors: tuple[tuple[str, float], ...] = SHARES,
) -> AlarmTransition:
    return AlarmTransition(
        key,
        action,  # type: ignore[arg-type]
        ts,
        ts if activation is None else activation,
        severity=severity,
        sensors=sensors,
    )


def write(store: Store, *transitions: AlarmTransition, processed_at: int = NOW) -> None:
    store.write(write_batch(alarm_transitions=transitions, processed_at=processed_at))


def known_alarms(store: Store) -> None:
    write(
        store,
        engine(TEMP, "raise", NOW - 10 * MINUTE, severity="high"),
        engine(QUIET, "raise", NOW - HOUR, severity="high", sensors=()),
        engine(QUIET, "clear", NOW - 30 * MINUTE, NOW - HOUR, severity="high", sensors=()),
        engine(HUMID, "raise", NOW - 5 * MINUTE, severity="low", sensors=(("humidity", 1.0),)),
        engine(HUMID, "escalate", NOW - 4 * MINUTE, NOW - 5 * MINUTE, severity="critical"),
        processed_at=NOW - MINUTE,
    )


STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda _tmp: MemoryStore(),
    "sqlite": lambda tmp: SqliteStore(tmp / "alarms.db"),
}


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest) -> Callable[[Path], Store]:
    return STORES[request.param]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def served(
    tmp_path: Path, clock: ManualClock, make_store: Callable[[Path], Store]
) -> Iterator[Served]:
    with serve(tmp_path, clock, store=make_store(tmp_path)) as s:
        known_alarms(s.store)
        yield s


@pytest.fixture
def operator(served: Served) -> httpx.Client:
    """Signed in with an operator token named tests-operator."""
    token = token_for(served.ctx.tokens, Role.OPERATOR)
    return httpx.Client(base_url=served.url, headers={**bearer(token), **JSON}, timeout=10)


def path(key: AlarmKey, action: str = "") -> str:
    """The alarm's URL, its id percent-encoded as encodeURIComponent does (`*` left as is)."""
    return f"/api/alarms/{quote(key.id, safe='*')}{'/' + action if action else ''}"


def ids(body: dict[str, Any]) -> list[str]:
    return [a["id"] for a in body["alarms"]]


def detail(client: httpx.Client, key: AlarmKey) -> dict[str, Any]:
    answer = client.get(path(key))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# ---- reading -------------------------------------------------------------------------------


def test_the_list_shows_each_alarm_latest_change_first(operator: httpx.Client) -> None:
    body = operator.get("/api/alarms").json()
    assert body["now"] == iso_ms(NOW)
    assert ids(body) == [HUMID.id, TEMP.id, QUIET.id]
    assert body["next_cursor"] is None
    humid, temp, quiet = body["alarms"]
    assert temp == {
        "id": "s-01|temperature|anomaly",
        "station_id": "s-01",
        "sensor": "temperature",
        "kind": "anomaly",
        "active": True,
        "activated_at": "2026-01-01T00:50:00.000Z",
        "activated_at_ms": NOW - 10 * MINUTE,
        "cleared_at": None,
        "cleared_at_ms": None,
        "severity": "high",
        "sensors": [
            {"sensor": "temperature", "share": 0.75},
            {"sensor": "humidity", "share": 0.25},
        ],
        "acknowledged": False,
        "acknowledgement": None,
        "shelved": False,
        "shelved_until": None,
        "shelved_until_ms": None,
        "shelved_by": None,
        "changed_at": "2026-01-01T00:50:00.000Z",
        "changed_at_ms": NOW - 10 * MINUTE,
    }
    assert (humid["severity"], humid["changed_at_ms"]) == ("critical", NOW - 4 * MINUTE)
    assert (quiet["active"], quiet["cleared_at_ms"], quiet["sensor"]) == (
        False,
        NOW - 30 * MINUTE,
        "*",
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=active", [HUMID, TEMP]),
        ("state=cleared", [QUIET]),
        ("state=unacknowledged", [HUMID, TEMP, QUIET]),
        ("state=acknowledged", []),
        ("state=shelved", []),
        ("station_id=s-02", [QUIET]),
        ("station_id=s-99", []),
        ("severity=high", [HUMID, TEMP, QUIET]),
        ("severity=critical", [HUMID]),
        ("since=2026-01-01T00:50:00Z", [HUMID, TEMP]),
        (f"since={NOW - 10 * MINUTE + 1}", [HUMID]),  # epoch ms
        ("since=2026-01-01T01:00:00%2B01:00", [HUMID, TEMP, QUIET]),  # midnight UTC
        ("state=active&severity=critical&station_id=s-01", []),
    ],
)
def test_the_list_filters(operator: httpx.Client, query: str, expected: list[AlarmKey]) -> None:
    answer = operator.get(f"/api/alarms?{query}")
    assert answer.status_code == 200, answer.text
    assert ids(answer.json()) == [k.id for k in expected]


def test_the_acknowledged_and_shelved_filters_follow_operator_actions(
    operator: httpx.Client,
) -> None:
    assert operator.post(path(TEMP, "ack")).status_code == 200
    until = iso_ms(NOW + HOUR)
    assert operator.post(path(QUIET, "shelve"), json={"until": until}).status_code == 200
    assert ids(operator.get("/api/alarms?state=acknowledged").json()) == [TEMP.id]
    assert ids(operator.get("/api/alarms?state=unacknowledged").json()) == [QUIET.id, HUMID.id]
    assert ids(operator.get("/api/alarms?state=shelved").json()) == [QUIET.id]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("since=yesterday", 400, "ISO 8601"),
        ("since=2026-01-01T00:00:00", 400, "no timezone"),
        ("since=99999999999999999", 400, "ISO 8601"),
        ("since=-99999999999999", 400, "must lie between"),
        ("cursor=bm90LWEtY3Vyc29y", 400, "cursor is not one this API handed out"),
        ("state=open", 422, "active"),
        ("severity=huge", 422, "critical"),
        ("limit=0", 422, "greater than or equal to 1"),
    ],
)
def test_a_bad_list_query_says_what_is_wrong(
    operator: httpx.Client, query: str, status: int, words: str
) -> None:
    answer = operator.get(f"/api/alarms?{query}")
    assert answer.status_code == status
    assert words in answer.text


def test_pages_walk_every_alarm_once(operator: httpx.Client) -> None:
    seen: list[str] = []
    url = "/api/alarms?limit=1"
    for _ in range(5):
        body = operator.get(url).json()
        assert len(body["alarms"]) <= 1
        seen += ids(body)
        if body["next_cursor"] is None:
            break
        url = f"/api/alarms?limit=1&cursor={body['next_cursor']}"
    assert seen == [HUMID.id, TEMP.id, QUIET.id]
    first = operator.get("/api/alarms?limit=2").json()
    rest = operator.get(f"/api/alarms?limit=2&cursor={first['next_cursor']}").json()
    assert ids(first) + ids(rest) == seen and rest["next_cursor"] is None


def test_one_alarm_has_its_state_and_every_transition(operator: httpx.Client) -> None:
    body = detail(operator, HUMID)
    assert (body["id"], body["active"], body["severity"]) == (HUMID.id, True, "critical")
    assert body["comments"] == []
    assert [(h["action"], h["at_ms"], h["by"], h["severity"]) for h in body["history"]] == [
        ("raise", NOW - 5 * MINUTE, "engine", "low"),
        ("escalate", NOW - 4 * MINUTE, "engine", "critical"),
    ]
    raised = body["history"][0]
    assert raised == {
        "key": f"{HUMID.id}|{NOW - 5 * MINUTE}|raise",
        "action": "raise",
        "at": "2026-01-01T00:55:00.000Z",
        "at_ms": NOW - 5 * MINUTE,
        "recorded_at": iso_ms(NOW - MINUTE),
        "activation_ms": NOW - 5 * MINUTE,
        "by": "engine",
        "comment": "",
        "until": None,
        "until_ms": None,
        "severity": "low",
        "sensors": [{"sensor": "humidity", "share": 1.0}],
    }


@pytest.mark.parametrize("encoded", ["s-02%7C*%7Csilent", "s-02%7C%2A%7Csilent", "s-02|*|silent"])
def test_an_id_may_come_percent_encoded_or_not(operator: httpx.Client, encoded: str) -> None:
    answer = operator.get(f"/api/alarms/{encoded}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == QUIET.id


@pytest.mark.parametrize(
    "alarm_id",
    ["s-01%7Cpressure%7Canomaly", "s-09%7C*%7Csilent", "s-01%7Ctemperature%7Cbogus", "nonsense"],
)
def test_an_unknown_alarm_is_404_for_every_route(operator: httpx.Client, alarm_id: str) -> None:
    for method, action, body in [
        ("GET", "", None),
        ("POST", "/ack", None),
        ("POST", "/shelve", {"until": NOW + HOUR}),
        ("POST", "/unshelve", None),
        ("POST", "/comment", {"text": "anyone?"}),
    ]:
        answer = operator.request(method, f"/api/alarms/{alarm_id}{action}", json=body)
        assert answer.status_code == 404, (method, action, answer.text)
        assert "no alarm" in answer.json()["detail"]


# ---- acting ---------------------------------------------------------------------------------


def test_an_acknowledgement_is_recorded_once_with_who_and_when(
    operator: httpx.Client, clock: ManualClock
) -> None:
    clock.advance(2)
    answer = operator.post(path(TEMP, "ack"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["acknowledged"] and body["active"]
    assert body["acknowledgement"] == {
        "by": "tests-operator",
        "at": iso_ms(NOW + 2000),
        "at_ms": NOW + 2000,
        "activation_ms": NOW - 10 * MINUTE,
    }
    assert body["changed_at_ms"] == NOW + 2000
    ack = body["history"][-1]
    assert (ack["action"], ack["by"], ack["at_ms"]) == ("ack", "tests-operator", NOW + 2000)
    assert ack["recorded_at"] == iso_ms(NOW + 2000)  # the batch's processed_at: the API's clock
    assert detail(operator, TEMP) == body

    again = operator.post(path(TEMP, "ack"))
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"alarm {TEMP.id} is already acknowledged by tests-operator at {iso_ms(NOW + 2000)}"
    )
    assert [h["action"] for h in detail(operator, TEMP)["history"]] == ["raise", "ack"]


def test_a_cleared_alarm_can_be_acknowledged_and_a_new_activation_needs_it_again(
    served: Served, operator: httpx.Client
) -> None:
    assert operator.post(path(QUIET, "ack")).json()["acknowledged"]
    write(served.store, engine(QUIET, "raise", NOW + MINUTE, severity="high", sensors=()))
    body = detail(operator, QUIET)
    assert body["active"] and not body["acknowledged"]
    assert body["acknowledgement"]["activation_ms"] == NOW - HOUR  # the earlier activation's
    assert operator.post(path(QUIET, "ack")).status_code == 200
    assert detail(operator, QUIET)["acknowledgement"]["activation_ms"] == NOW + MINUTE


def test_shelving_moves_its_end_ends_by_itself_and_can_be_ended(
    operator: httpx.Client, clock: ManualClock
) -> None:
    first = operator.post(path(TEMP, "shelve"), json={"until": "2026-01-01T02:00:00Z"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["shelved"], body["shelved_until_ms"], body["shelved_by"]) == (
        True,
        NOW + HOUR,
        "tests-operator",
    )
    assert body["history"][-1]["until"] == "2026-01-01T02:00:00.000Z"
    clock.advance(1)
    moved = operator.post(path(TEMP, "shelve"), json={"until": NOW + 2 * HOUR})  # epoch ms
    assert moved.status_code == 200 and moved.json()["shelved_until_ms"] == NOW + 2 * HOUR

    clock.advance(2 * 3600)  # past its end: no longer shelved, and nothing to unshelve
    assert detail(operator, TEMP)["shelved"] is False
    refused = operator.post(path(TEMP, "unshelve"))
    assert refused.status_code == 409
    assert refused.json()["detail"] == f"alarm {TEMP.id} is not shelved"

    assert operator.post(path(TEMP, "shelve"), json={"until": NOW + 3 * HOUR}).status_code == 200
    ended = operator.post(path(TEMP, "unshelve"))
    assert ended.status_code == 200, ended.text
    assert ended.json()["shelved"] is False and ended.json()["shelved_until"] is None
    actions = [h["action"] for h in ended.json()["history"]]
    assert actions == ["raise", "shelve", "shelve", "shelve", "unshelve"]


@pytest.mark.parametrize(
    ("until", "words"),
    [
        (NOW, "that is not in the future"),
        (NOW - HOUR, "that is not in the future"),
        (NOW + MAX_SHELVE_MS + 1, "longer than the allowed 604800 s"),
    ],
)
def test_shelving_that_the_rules_refuse_is_409(
    operator: httpx.Client, until: int, words: str
) -> None:
    answer = operator.post(path(TEMP, "shelve"), json={"until": until})
    assert answer.status_code == 409
    assert answer.json()["detail"] == f"shelving alarm {TEMP.id} until {iso_ms(until)}: {words}"
    assert detail(operator, TEMP)["shelved"] is False


def test_the_longest_shelving_is_the_settings(tmp_path: Path, clock: ManualClock) -> None:
    settings = load_settings(data_dir=tmp_path / "data", alarms={"max_shelve_s": 600})
    with serve(tmp_path, clock, settings=settings, store=MemoryStore()) as s:
        known_alarms(s.store)
        token = token_for(s.ctx.tokens, Role.OPERATOR)
        with httpx.Client(base_url=s.url, headers={**bearer(token), **JSON}) as client:
            too_long = client.post(path(TEMP, "shelve"), json={"until": NOW + 600_001})
            assert too_long.status_code == 409 and "allowed 600 s" in too_long.text
            assert client.post(path(TEMP, "shelve"), json={"until": NOW + 600_000}).is_success


def test_unshelving_an_alarm_never_shelved_is_409(operator: httpx.Client) -> None:
    answer = operator.post(path(HUMID, "unshelve"))
    assert answer.status_code == 409
    assert answer.json()["detail"] == f"alarm {HUMID.id} is not shelved"


def test_comments_are_kept_in_order_with_their_author(
    operator: httpx.Client, clock: ManualClock
) -> None:
    assert operator.post(path(QUIET, "comment"), json={"text": "gateway rebooted"}).is_success
    clock.advance(60)
    answer = operator.post(path(QUIET, "comment"), json={"text": "back since 00:30"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["comments"] == [
        {"at": iso_ms(NOW), "at_ms": NOW, "by": "tests-operator", "text": "gateway rebooted"},
        {
            "at": iso_ms(NOW + MINUTE),
            "at_ms": NOW + MINUTE,
            "by": "tests-operator",
            "text": "back since 00:30",
        },
    ]
    assert [(h["action"], h["comment"]) for h in body["history"][-2:]] == [
        ("comment", "gateway rebooted"),
        ("comment", "back since 00:30"),
    ]
    assert detail(operator, QUIET)["comments"] == body["comments"]


@pytest.mark.parametrize(
    ("action", "body", "words"),
    [
        ("shelve", None, "Field required"),
        ("shelve", {}, "Field required"),
        ("shelve", {"until": "tomorrow"}, "ISO 8601"),
        ("shelve", {"until": "2026-01-01T02:00:00"}, "no timezone"),
        ("shelve", {"until": True}, "until must be"),
        ("shelve", {"until": 1.5e12}, "until must be"),
        ("shelve", {"until": 10**17}, "not a time an answer can show"),
        ("shelve", {"until": NOW + HOUR, "for": "ever"}, "Extra inputs are not permitted"),
        ("comment", {"text": ""}, "a comment needs some text"),
        ("comment", {"text": "  \n"}, "a comment needs some text"),
        ("comment", {"text": "x" * 2001}, "at most 2000 characters"),
        ("comment", {"text": 7}, "valid string"),
        ("comment", {"text": "a\x00b"}, "cannot hold a NUL character"),
        ("comment", '{"text": "a\\ud800b"}', "unable to parse raw data as a unicode"),
        ("comment", '{"text": "ok", "\\udfff": 1}', '"input":"\\\\udfff"'),  # shown, escaped
        ("comment", None, "Field required"),
    ],
)
def test_a_bad_body_is_422_and_records_nothing(
    operator: httpx.Client, action: str, body: Any, words: str
) -> None:
    if isinstance(body, str):  # JSON text httpx would not write
        answer = operator.post(path(TEMP, action), content=body)
    else:
        answer = operator.post(path(TEMP, action), json=body)
    assert answer.status_code == 422
    assert words in answer.text
    assert [h["action"] for h in detail(operator, TEMP)["history"]] == ["raise"]


# ---- who may act ----------------------------------------------------------------------------

ACTIONS = [
    ("ack", None),
    ("shelve", {"until": NOW + HOUR}),
    ("unshelve", None),
    ("comment", {"text": "hello"}),
]


@pytest.mark.parametrize(("action", "body"), ACTIONS)
def test_acting_needs_an_operator_token(served: Served, action: str, body: Any) -> None:
    url = f"{served.url}{path(TEMP, action)}"
    anonymous = httpx.post(url, json=body, headers=JSON)
    assert anonymous.status_code == 401
    assert "this needs a operator token" in anonymous.json()["detail"]
    for role in (Role.VIEWER, Role.INGEST):
        token = served.ctx.tokens.create(role, f"a-{role.label}")[0]
        answer = httpx.post(url, json=body, headers={**bearer(token), **JSON})
        assert answer.status_code == 403
        assert answer.json()["detail"] == (
            f"this needs the operator role; token 'a-{role.label}' is {role.label}"
        )
    revoked, _ = served.ctx.tokens.create(Role.OPERATOR, "gone")
    served.ctx.tokens.revoke("gone")
    assert httpx.post(url, json=body, headers={**bearer(revoked), **JSON}).status_code == 401
    with served.client() as admin:  # an admin may do what an operator may
        assert [h["action"] for h in detail(admin, TEMP)["history"]] == ["raise"]
        answer = admin.post(path(TEMP, action), json=body)
        # TEMP is not shelved: unshelving it is refused by the state, not for the role.
        assert answer.status_code == (409 if action == "unshelve" else 200), answer.text


def test_beyond_loopback_reading_alarms_needs_a_viewer_token(
    tmp_path: Path, clock: ManualClock
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", api={"reads_need_token": True})
    with serve(tmp_path, clock, settings=settings, store=MemoryStore()) as s:
        known_alarms(s.store)
        viewer = bearer(token_for(s.ctx.tokens, Role.VIEWER))
        for route in ("/api/alarms", "/api/alarms/load", path(TEMP)):
            assert httpx.get(f"{s.url}{route}").status_code == 401
            assert httpx.get(f"{s.url}{route}", headers=viewer).status_code == 200


# ---- racing ---------------------------------------------------------------------------------


class ReadsMeetFirst(ForwardingStore):
    """A real store whose next two alarm-list reads wait for each other once `arm`ed: two
    requests racing for one alarm then both see it as it was before either wrote."""

    atomicity: ClassVar[Atomicity] = Atomicity.BATCH

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.meeting = threading.Barrier(2, timeout=10)
        self.waiting = 0
        self.lock = threading.Lock()

    def arm(self) -> None:
        with self.lock:
            self.waiting = 2

    def query(self, q: Query[R]) -> R:
        result = self.inner.query(q)
        with self.lock:
            meet = isinstance(q, Alarms) and self.waiting > 0
            self.waiting -= meet
        if meet:
            self.meeting.wait()
        return result


def test_of_two_racing_acknowledgements_exactly_one_wins(
    tmp_path: Path, clock: ManualClock, make_store: Callable[[Path], Store]
) -> None:
    store = ReadsMeetFirst(make_store(tmp_path))
    with serve(tmp_path, clock, store=store) as s:
        known_alarms(store)
        clients = {
            name: httpx.Client(
                base_url=s.url,
                headers={**bearer(s.ctx.tokens.create(Role.OPERATOR, name)[0]), **JSON},
                timeout=20,
            )
            for name in ("ana", "bo")
        }
        store.arm()
        with ThreadPoolExecutor(2) as pool:
            answers = dict(
                zip(
                    clients,
                    pool.map(lambda c: c.post(path(TEMP, "ack")), clients.values()),
                    strict=True,
                )
            )
        statuses = sorted(a.status_code for a in answers.values())
        assert statuses == [200, 409], {n: a.text for n, a in answers.items()}
        assert store.waiting == 0  # both read before either wrote: the race really happened
        (winner,) = [n for n, a in answers.items() if a.status_code == 200]
        (loser,) = [n for n, a in answers.items() if a.status_code == 409]
        assert answers[loser].json()["detail"] == (
            f"alarm {TEMP.id} is already acknowledged by {winner} at {iso_ms(NOW)}"
        )
        history = detail(clients[loser], TEMP)["history"]
        assert [(h["action"], h["by"]) for h in history] == [("raise", "engine"), ("ack", winner)]
        assert detail(clients[loser], TEMP)["acknowledgement"]["by"] == winner


# ---- alarm load -----------------------------------------------------------------------------

CHATTY = AlarmKey("s-04", "noise_level", ANOMALY)
STANDING = AlarmKey("s-05", STATION_WIDE, SILENT)  # active for two days
LONG_OVER = AlarmKey("s-06", "temperature", ANOMALY)  # from 3 days ago until 12 hours ago


def load_history(store: Store) -> None:
    chatter = NOW - HOUR  # three activations within 40 s
    write(
        store,
        *[
            t
            for k in range(3)
            for t in (
                engine(CHATTY, "raise", chatter + 20_000 * k),
                engine(CHATTY, "clear", chatter + 20_000 * k + 10_000, chatter + 20_000 * k),
            )
        ],
        engine(TEMP, "raise", NOW - 10 * MINUTE, severity="high"),
        engine(STANDING, "raise", NOW - 2 * DAY, severity="high", sensors=()),
        engine(LONG_OVER, "raise", NOW - 3 * DAY),
        engine(LONG_OVER, "clear", NOW - 12 * HOUR, NOW - 3 * DAY),
    )


@pytest.fixture
def loaded(
    tmp_path: Path, clock: ManualClock, make_store: Callable[[Path], Store]
) -> Iterator[httpx.Client]:
    with serve(tmp_path, clock, store=make_store(tmp_path)) as s:
        load_history(s.store)
        with httpx.Client(base_url=s.url, timeout=10) as client:
            yield client


def ref(key: AlarmKey) -> dict[str, str]:
    return {"id": key.id, "station_id": key.station_id, "sensor": key.sensor, "kind": key.kind}


def standing(key: AlarmKey, since: int) -> dict[str, Any]:
    return {"alarm": ref(key), "active_since": iso_ms(since), "active_since_ms": since}


def test_the_load_of_the_last_24_hours(loaded: httpx.Client) -> None:
    answer = loaded.get("/api/alarms/load")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["from"], body["to"]) == (iso_ms(NOW - DAY), iso_ms(NOW))
    assert body["activations"] == 4
    windows = body["per_10_minutes"]
    assert len(windows) == 144 and sum(windows) == 4
    assert (windows[138], windows[143], body["peak_10_minutes"]) == (3, 1, 3)
    assert body["per_station_day"] == [
        {"station_id": "s-01", "day": "2026-01-01", "activations": 1},
        {"station_id": "s-04", "day": "2026-01-01", "activations": 3},
    ]
    assert body["bad_actors"] == [
        {"alarm": ref(CHATTY), "activations": 3},
        {"alarm": ref(TEMP), "activations": 1},
    ]
    assert body["chattering"] == [ref(CHATTY)]
    assert body["standing"] == [standing(STANDING, NOW - 2 * DAY)]


def test_the_load_of_an_earlier_day_finds_the_alarms_standing_then(loaded: httpx.Client) -> None:
    body = loaded.get(f"/api/alarms/load?until={NOW - DAY}").json()  # epoch ms
    assert (body["from"], body["to"]) == (iso_ms(NOW - 2 * DAY), iso_ms(NOW - DAY))
    assert body["activations"] == 1  # STANDING's raise, at the period's first instant
    assert body["bad_actors"] == [{"alarm": ref(STANDING), "activations": 1}]
    assert body["chattering"] == []
    # Cleared since, but active at the period's end for two days then.
    assert [s["alarm"]["id"] for s in body["standing"]] == [LONG_OVER.id]


def test_the_load_of_a_chosen_period(loaded: httpx.Client) -> None:
    since, until = quote(iso_ms(NOW - HOUR)), quote(iso_ms(NOW - HOUR + MINUTE))
    body = loaded.get(f"/api/alarms/load?since={since}&until={until}").json()
    assert (body["activations"], body["per_10_minutes"]) == (3, [3])
    # LONG_OVER cleared 12 hours ago, before this period ended.
    assert body["standing"] == [standing(STANDING, NOW - 2 * DAY)]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("since=2026-01-01T01:00:00Z", "must be before until"),
        (f"since={NOW}&until={NOW - 1}", "must be before until"),
        ("since=2025-11-01T00:00:00Z", "at most 31 days apart"),
        ("until=soon", "until must be an ISO 8601 timestamp"),
        ("until=0001-01-01T00:00:00%2B01:00", "must lie between"),
    ],
)
def test_a_bad_load_period_is_400(loaded: httpx.Client, query: str, words: str) -> None:
    answer = loaded.get(f"/api/alarms/load?{query}")
    assert answer.status_code == 400
    assert words in answer.json()["detail"]
