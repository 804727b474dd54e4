"""Alarms: the list and one alarm's state and history, the operator's actions on them (ack,
shelve, unshelve, comment), and the alarm-load figures of a period.

The API decides nothing about an alarm itself: it reads the alarm's state from the store, asks
the pure functions of faultline.alarms.state whether the request fits (409 with their reason
when it does not), and writes the one transition they return, alone in a WriteBatch. The store
keys transitions (decision 0013), so of two acknowledgements racing for the same activation
only the first is kept; the route reads the log back after writing and answers the loser 409.

Alarm ids are `station|sensor|kind` (`*` as the sensor of a station-wide alarm). `|` is not
allowed in a URL path, so a client sends the id percent-encoded, `s-01%7C*%7Csilent`
(JavaScript's encodeURIComponent does it; `*` may stay as it is).
"""

# No `from __future__ import annotations` here: FastAPI must see the comment body's model, built
# when the router is (its length limit is a setting), as a class rather than as a name.
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictStr
from pydantic.json_schema import WithJsonSchema

from faultline.alarm_schema import (
    ANOMALY,
    SILENT,
    AlarmKey,
    AlarmKind,
    AlarmState,
    AlarmTransition,
)
from faultline.alarms import (
    InvalidTransition,
    acknowledge,
    alarm_load,
    apply,
    comment,
    shelve,
    unshelve,
)
from faultline.api.context import AppContext
from faultline.api.params import (
    DATE_TIME_QUERY,
    EARLIEST_MS,
    LATEST_MS,
    bad_request,
    decode_keyed_cursor,
    encode_keyed_cursor,
    instant_ms,
    instant_or_epoch_ms,
)
from faultline.api.responses import ApiModel
from faultline.api.security import reads, requires
from faultline.clock import iso_ms
from faultline.config import Severity
from faultline.schema import WriteBatch, empty_readings
from faultline.store import (
    AlarmHistory,
    AlarmRow,
    Alarms,
    AlarmStateFilter,
    AlarmTransitions,
    RecordedTransition,
    Store,
)
from faultline.tokens import Role, TokenInfo

DAY_MS = 86_400_000
MAX_LOAD_SPAN_MS = 31 * DAY_MS  # a month of 10-minute windows is 4 464 numbers
_PAGE = 500  # rows per store query when the API walks a station's or all active alarms
_KINDS: tuple[AlarmKind, ...] = (ANOMALY, SILENT)
ID_HELP = (
    "The alarm's id, station|sensor|kind, percent-encoded: s-01|temperature|anomaly is "
    "s-01%7Ctemperature%7Canomaly, s-01|*|silent is s-01%7C*%7Csilent"
)
TIME_HELP = "ISO 8601 with a timezone, or epoch milliseconds"


# ---- answers --------------------------------------------------------------------------------


class SensorShareOut(ApiModel):
    sensor: str
    share: float = Field(description="Its share of the condition's score (the shares sum to 1)")


class AcknowledgementOut(ApiModel):
    by: str = Field(description="Name of the token that acknowledged")
    at: str = Field(description="When, ISO 8601 UTC")
    at_ms: int
    activation_ms: int = Field(description="The activation it acknowledged, epoch ms")


class AlarmOut(ApiModel):
    id: str = Field(description="station|sensor|kind; percent-encode it in a path")
    station_id: str
    sensor: str = Field(description="The sensor with the largest share, or * (station-wide)")
    kind: AlarmKind = Field(description="anomaly: the detectors' verdicts; silent: no readings")
    active: bool = Field(description="The condition holds now")
    activated_at: str | None = Field(description="Latest activation, ISO 8601 UTC")
    activated_at_ms: int | None
    cleared_at: str | None = Field(description="When the latest activation cleared")
    cleared_at_ms: int | None
    severity: Severity
    sensors: list[SensorShareOut] = Field(description="Every responsible sensor, largest first")
    acknowledged: bool = Field(description="The latest activation is acknowledged")
    acknowledgement: AcknowledgementOut | None = Field(
        description="The latest acknowledgement (perhaps of an earlier activation)"
    )
    shelved: bool = Field(description="Shelved now: operators asked not to be told until then")
    shelved_until: str | None = Field(description="End of the shelving in effect, ISO 8601 UTC")
    shelved_until_ms: int | None
    shelved_by: str | None
    changed_at: str = Field(description="Latest change of its condition or by an operator")
    changed_at_ms: int


class AlarmsPage(ApiModel):
    now: str
    alarms: list[AlarmOut] = Field(description="Latest change first (ties: id ascending)")
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null on the last page"
    )


class CommentOut(ApiModel):
    at: str
    at_ms: int
    by: str
    text: str


class TransitionOut(ApiModel):
    key: str = Field(description="Unique per change: a replayed one is never recorded twice")
    action: Literal["raise", "escalate", "clear", "ack", "shelve", "unshelve", "comment"]
    at: str = Field(description="When it happened, ISO 8601 UTC")
    at_ms: int
    recorded_at: str = Field(description="When the store received it")
    activation_ms: int = Field(description="The activation it belongs to")
    by: str = Field(description="engine, or the name of the operator's token")
    comment: str
    until: str | None = Field(description="A shelving's end")
    until_ms: int | None
    severity: Severity = Field(description="Condition changes: the severity as of the change")
    sensors: list[SensorShareOut]


class AlarmDetail(AlarmOut):
    comments: list[CommentOut] = Field(description="Oldest first")
    history: list[TransitionOut] = Field(description="Every transition, in the order they apply")


class AlarmRef(ApiModel):
    id: str
    station_id: str
    sensor: str
    kind: AlarmKind


class StationDayOut(ApiModel):
    station_id: str
    day: str = Field(description="UTC day, YYYY-MM-DD")
    activations: int


class BadActorOut(ApiModel):
    alarm: AlarmRef
    activations: int


class StandingOut(ApiModel):
    alarm: AlarmRef
    active_since: str
    active_since_ms: int


class AlarmLoadOut(ApiModel):
    from_: str = Field(alias="from", description="Start of the period (included), ISO 8601 UTC")
    to: str = Field(description="End of the period (excluded)")
    activations: int = Field(description="Alarm activations (raises) in the period")
    per_10_minutes: list[int] = Field(
        description="Activations in each 10-minute window from `from` (the last may be shorter)"
    )
    peak_10_minutes: int = Field(description="The busiest window's (ISA-18.2: about 1 is fine)")
    per_station_day: list[StationDayOut] = Field(description="By station, then day")
    bad_actors: list[BadActorOut] = Field(description="The ten alarms activated most often")
    chattering: list[AlarmRef] = Field(description="Activated 3 times or more within a minute")
    standing: list[StandingOut] = Field(description="Active at `to` for more than 24 hours")


# ---- requests -------------------------------------------------------------------------------


def _until_ms(value: object) -> int:
    """`until` as epoch ms: ISO 8601 with a timezone, or epoch ms, representable either way."""
    if isinstance(value, str):
        try:
            return instant_ms("until", value)
        except HTTPException as exc:  # the query parser's words, as a body validation error
            raise ValueError(exc.detail) from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"until must be {TIME_HELP}; got {value!r}")
    if not EARLIEST_MS <= value <= LATEST_MS:
        raise ValueError(f"until ({value} ms since 1970) is not a time an answer can show")
    return value


def _comment_text(text: str) -> str:
    """Some text, and only text every store can hold: no NUL (pydantic itself refuses lone
    surrogates)."""
    if not text.strip():
        raise ValueError("a comment needs some text")
    if "\x00" in text:
        raise ValueError("a comment cannot hold a NUL character")
    return text


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShelveRequest(_Body):
    until: Annotated[
        int,
        BeforeValidator(_until_ms),
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
                "description": f"End of the shelving: {TIME_HELP}; at most "
                "alarms.max_shelve_s ahead",
                "examples": ["2026-01-01T13:00:00Z"],
            }
        ),
    ]


# ---- store access ---------------------------------------------------------------------------


def parse_alarm_id(alarm_id: str) -> AlarmKey | None:
    """The key an id names, or None when it is not station|sensor|kind.

    Station ids cannot hold `|` (faultline.codec), so the first part is the station, the last
    the kind, and what lies between the sensor.
    """
    station, _, rest = alarm_id.partition("|")
    sensor, _, kind = rest.rpartition("|")
    if not station or not sensor or kind not in _KINDS:
        return None
    return AlarmKey(station, sensor, ANOMALY if kind == ANOMALY else SILENT)


def _pages(store: Store, query: Alarms) -> Iterator[AlarmRow]:
    while True:
        page = store.query(query)
        yield from page.rows
        if page.next_cursor is None:
            return
        query = replace(query, after=page.next_cursor)


def find_alarm(store: Store, key: AlarmKey) -> AlarmRow | None:
    """The row of one alarm, found among its station's (a handful per station)."""
    rows = _pages(store, Alarms(station_id=key.station_id, limit=_PAGE))
    return next((row for row in rows if row.state.alarm == key), None)


def _with_comments(state: AlarmState, history: list[RecordedTransition]) -> AlarmState:
    """The row's state with the comments only the log holds folded in."""
    for recorded in history:
        if recorded.transition.action == "comment":
            state = apply(state, recorded.transition)
    return state


# ---- shaping --------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def _shares(sensors: tuple[tuple[str, float], ...]) -> list[dict[str, Any]]:
    return [{"sensor": name, "share": share} for name, share in sensors]


def _ref(key: AlarmKey) -> dict[str, Any]:
    return {"id": key.id, "station_id": key.station_id, "sensor": key.sensor, "kind": key.kind}


def alarm_out(state: AlarmState, changed_at: int, now_ms: int) -> dict[str, Any]:
    c, o = state.condition, state.operator
    shelved = state.shelved(now_ms)
    acked = None
    if o.acked_activation is not None and o.acked_at is not None:
        acked = {
            "by": o.acked_by,
            "at": iso_ms(o.acked_at),
            "at_ms": o.acked_at,
            "activation_ms": o.acked_activation,
        }
    return {
        **_ref(state.alarm),
        "active": c.active,
        "activated_at": _iso(c.activation_ts),
        "activated_at_ms": c.activation_ts,
        "cleared_at": _iso(c.cleared_ts),
        "cleared_at_ms": c.cleared_ts,
        "severity": c.severity,
        "sensors": _shares(c.sensors),
        "acknowledged": state.acknowledged,
        "acknowledgement": acked,
        "shelved": shelved,
        "shelved_until": _iso(o.shelved_until) if shelved else None,
        "shelved_until_ms": o.shelved_until if shelved else None,
        "shelved_by": o.shelved_by if shelved else None,
        "changed_at": iso_ms(changed_at),
        "changed_at_ms": changed_at,
    }


def _transition_out(recorded: RecordedTransition) -> dict[str, Any]:
    t = recorded.transition
    return {
        "key": t.key,
        "action": t.action,
        "at": iso_ms(t.ts),
        "at_ms": t.ts,
        "recorded_at": iso_ms(recorded.recorded_at),
        "activation_ms": t.activation_ts,
        "by": t.actor,
        "comment": t.comment,
        "until": _iso(t.until),
        "until_ms": t.until,
        "severity": t.severity,
        "sensors": _shares(t.sensors),
    }


def _detail(row: AlarmRow, history: list[RecordedTransition], now_ms: int) -> dict[str, Any]:
    state = _with_comments(row.state, history)
    return {
        **alarm_out(state, row.changed_at, now_ms),
        "comments": [
            {"at": iso_ms(c.ts), "at_ms": c.ts, "by": c.actor, "text": c.text}
            for c in state.operator.comments
        ],
        "history": [_transition_out(r) for r in history],
    }


# ---- routes ---------------------------------------------------------------------------------

Decision = Callable[[AlarmState, str, int], tuple[AlarmState, AlarmTransition]]
"""An operator request as faultline.alarms.state decides it: (state, actor, now) -> outcome."""
AlarmIdPath = Annotated[str, Path(description=ID_HELP, examples=["s-01|temperature|anomaly"])]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such alarm (or not an id of the form station|sensor|kind)"}
}
_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    409: {"description": "The alarm's state or the rules refuse it; the message says why"},
    422: {"description": "The body is not what the action takes"},
}


def alarm_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/alarms", tags=["alarms"])
    store = ctx.store
    settings = ctx.settings.alarms
    max_shelve_ms = round(settings.max_shelve_s * 1000)
    max_comment = settings.max_comment_chars
    operator = requires(ctx, Role.OPERATOR)

    class CommentRequest(_Body):
        text: Annotated[
            StrictStr,
            Field(max_length=max_comment, description=f"At most {max_comment} characters"),
            AfterValidator(_comment_text),
        ]

    def located(alarm_id: str) -> AlarmRow:
        key = parse_alarm_id(alarm_id)
        row = None if key is None else find_alarm(store, key)
        if row is None:
            raise HTTPException(404, f"no alarm {alarm_id!r} (ids are station|sensor|kind)")
        return row

    def record(alarm_id: str, transition: AlarmTransition, now_ms: int) -> dict[str, Any]:
        """Write one operator transition alone; the alarm's detail afterwards, or 409 when a
        concurrent request's transition with the same key was recorded instead."""
        sensors = ctx.settings.sensor_names
        store.write(
            WriteBatch(
                sensors=sensors,
                detectors=(),
                readings=empty_readings(sensors),
                processed_at=now_ms,
                alarm_transitions=(transition,),
            )
        )
        history = store.query(AlarmHistory(transition.alarm.id))
        kept = next((r.transition for r in history if r.transition.key == transition.key), None)
        if kept is None:
            raise HTTPException(
                503, f"the store did not keep the {transition.action} of {alarm_id}"
            )
        if kept != transition:
            what = (
                "is already acknowledged"
                if transition.action == "ack"
                else f"had a concurrent {kept.action} recorded first"
            )
            raise HTTPException(
                409, f"alarm {transition.alarm.id} {what} by {kept.actor} at {iso_ms(kept.ts)}"
            )
        return _detail(located(alarm_id), history, now_ms)

    def perform(alarm_id: str, token: TokenInfo | None, decide: Decision) -> dict[str, Any]:
        """Let the state machine decide on the alarm as the store has it now, and record what
        it decided (409 with its reason when it refuses)."""
        # `requires` always has a token; an operator is known by their token's name.
        assert token is not None
        now = ctx.clock.now_ms()
        try:
            _, transition = decide(located(alarm_id).state, token.name, now)
        except InvalidTransition as exc:
            raise HTTPException(409, str(exc)) from None
        return record(alarm_id, transition, now)

    @router.get(
        "",
        dependencies=[reads(ctx)],
        response_model=AlarmsPage,
        responses={400: {"description": "since not a time, or a foreign cursor"}},
    )
    def alarms(
        state: Annotated[
            AlarmStateFilter | None,
            Query(
                description="active/cleared: by condition; acknowledged/unacknowledged: the "
                "latest activation; shelved: shelved now"
            ),
        ] = None,
        station_id: Annotated[str | None, Query(description="Only this station's")] = None,
        severity: Annotated[Severity | None, Query(description="At least this severity")] = None,
        since: Annotated[
            str | None,
            Query(
                description=f"Changed at or after: {TIME_HELP}", json_schema_extra=DATE_TIME_QUERY
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Alarms per page")] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> dict[str, Any]:
        """Alarms, latest change first, a page at a time."""
        now = ctx.clock.now_ms()
        page = store.query(
            Alarms(
                state=state,
                station_id=station_id,
                min_severity=severity,
                since_ms=None if since is None else instant_or_epoch_ms("since", since),
                now_ms=now,
                limit=limit,
                after=None if cursor is None else decode_keyed_cursor(cursor),
            )
        )
        return {
            "now": iso_ms(now),
            "alarms": [alarm_out(row.state, row.changed_at, now) for row in page.rows],
            "next_cursor": None
            if page.next_cursor is None
            else encode_keyed_cursor(page.next_cursor),
        }

    # Before /{alarm_id}: "load" is no alarm id, but routes match in order.
    @router.get(
        "/load",
        dependencies=[reads(ctx)],
        response_model=AlarmLoadOut,
        responses={
            400: {"description": "since/until not times, in the wrong order, or too far apart"}
        },
    )
    def load(
        since: Annotated[
            str | None,
            Query(
                description=f"Start (included): {TIME_HELP}; default: 24 hours before until",
                json_schema_extra=DATE_TIME_QUERY,
            ),
        ] = None,
        until: Annotated[
            str | None,
            Query(
                description=f"End (excluded): {TIME_HELP}; default: now",
                json_schema_extra=DATE_TIME_QUERY,
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Alarm-load figures of a period (ISA-18.2 / EEMUA 191): activations, their rate per
        10 minutes and per station-day, the bad actors, chattering and standing alarms."""
        end = ctx.clock.now_ms() if until is None else instant_or_epoch_ms("until", until)
        start = (
            max(EARLIEST_MS, end - DAY_MS) if since is None else instant_or_epoch_ms("since", since)
        )
        if start >= end:
            raise bad_request(f"since ({iso_ms(start)}) must be before until ({iso_ms(end)})")
        if end - start > MAX_LOAD_SPAN_MS:
            raise bad_request(
                f"since and until may be at most {MAX_LOAD_SPAN_MS // DAY_MS} days apart; "
                f"got {(end - start) / DAY_MS:g} days"
            )
        figures = alarm_load(_load_transitions(store, start, end), start, end)
        return {
            "from": iso_ms(start),
            "to": iso_ms(end),
            "activations": figures.activations,
            "per_10_minutes": list(figures.per_10_minutes),
            "peak_10_minutes": figures.peak_10_minutes,
            "per_station_day": [
                {"station_id": station, "day": day.isoformat(), "activations": n}
                for (station, day), n in sorted(figures.per_station_day.items())
            ],
            "bad_actors": [{"alarm": _ref(k), "activations": n} for k, n in figures.bad_actors],
            "chattering": [_ref(k) for k in figures.chattering],
            "standing": [
                {"alarm": _ref(k), "active_since": iso_ms(ts), "active_since_ms": ts}
                for k, ts in figures.standing
            ],
        }

    @router.get(
        "/{alarm_id}", dependencies=[reads(ctx)], response_model=AlarmDetail, responses=_NOT_FOUND
    )
    def alarm(alarm_id: AlarmIdPath) -> dict[str, Any]:
        """One alarm: its state, its comments and every transition it went through."""
        row = located(alarm_id)
        history = store.query(AlarmHistory(row.state.alarm.id))
        return _detail(row, history, ctx.clock.now_ms())

    @router.post("/{alarm_id}/ack", response_model=AlarmDetail, responses=_ACTION_ERRORS)
    def ack(alarm_id: AlarmIdPath, token: Annotated[TokenInfo | None, operator]) -> dict[str, Any]:
        """Acknowledge the alarm's latest activation (active or already cleared), once."""
        return perform(alarm_id, token, acknowledge)

    @router.post("/{alarm_id}/shelve", response_model=AlarmDetail, responses=_ACTION_ERRORS)
    def shelve_alarm(
        alarm_id: AlarmIdPath,
        body: ShelveRequest,
        token: Annotated[TokenInfo | None, operator],
    ) -> dict[str, Any]:
        """Shelve the alarm until a time (shelving it again moves the end), at most
        alarms.max_shelve_s ahead."""
        return perform(
            alarm_id, token, lambda s, who, now: shelve(s, who, now, body.until, max_shelve_ms)
        )

    @router.post("/{alarm_id}/unshelve", response_model=AlarmDetail, responses=_ACTION_ERRORS)
    def unshelve_alarm(
        alarm_id: AlarmIdPath, token: Annotated[TokenInfo | None, operator]
    ) -> dict[str, Any]:
        """End the shelving in effect now."""
        return perform(alarm_id, token, unshelve)

    @router.post("/{alarm_id}/comment", response_model=AlarmDetail, responses=_ACTION_ERRORS)
    def comment_alarm(
        alarm_id: AlarmIdPath,
        body: Annotated[CommentRequest, Body()],
        token: Annotated[TokenInfo | None, operator],
    ) -> dict[str, Any]:
        """Add a comment to the alarm's latest activation."""
        return perform(
            alarm_id, token, lambda s, who, now: comment(s, who, now, body.text, max_comment)
        )

    return router


def _load_transitions(store: Store, start: int, end: int) -> list[AlarmTransition]:
    """The period's raises and clears, and the whole raise/clear history of every alarm that
    may have been active at `end`, so that `alarm_load` finds the standing ones however long
    they stand.

    An alarm active at `end` is either active now, or changed after `end` (its clear or a
    later activation came after); the others' latest activation was over by `end`.
    """
    actions = ("raise", "clear")
    found = {t.key: t for t in store.query(AlarmTransitions(start, end, actions=actions))}
    candidates = {row.state.alarm.id for row in _pages(store, Alarms(state="active", limit=_PAGE))}
    candidates |= {row.state.alarm.id for row in _pages(store, Alarms(since_ms=end, limit=_PAGE))}
    for alarm_id in sorted(candidates):
        for recorded in store.query(AlarmHistory(alarm_id)):
            if recorded.transition.action in actions:
                found.setdefault(recorded.transition.key, recorded.transition)
    return list(found.values())
