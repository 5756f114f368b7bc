"""The query API's search parser (api/query/store.py): `Search.parse`, its times, limits and cursors.

`Search.parse` turns raw query parameters into a validated search or a QueryError naming the
parameter (the API's 400); `Search.where` turns a search into SQL with bound parameters. No
services: these call the parser directly (the served API's answers are tests/unit/test_query_security.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.query.store import DEFAULT_LIMIT, MAX_LIMIT, QueryError, Search, encode_cursor, parse_time

TENANT = "t_1000"


def parse(**params: str | None) -> Search:
    return Search.parse(TENANT, params)


def refused(parameter: str, **params: str | None) -> str:
    """Parses `params`, expecting a QueryError naming `parameter`; returns its message."""
    with pytest.raises(QueryError) as caught:
        parse(**params)
    assert caught.value.parameter == parameter, (caught.value.parameter, str(caught.value))
    return str(caught.value)


def raw_cursor(value: object) -> str:
    """A cursor as the API encodes one (base64url JSON, no padding), around any JSON value."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- what a search holds


def test_no_parameters_is_the_tenants_newest_page_with_the_defaults() -> None:
    assert parse() == Search(TENANT, {}, None, None, DEFAULT_LIMIT, None, None, None)
    assert DEFAULT_LIMIT == 100 and MAX_LIMIT == 1000


def test_filters_are_kept_by_name_empty_ones_dropped_and_other_parameters_ignored() -> None:
    search = parse(actor_id="u_1", action="user.login", resource_type="", result="FAILURE", color="red", tenant_id="x")

    assert search.filters == {"actor_id": "u_1", "action": "user.login", "result": "FAILURE"}
    assert search.tenant_id == TENANT  # the path's tenant, never a parameter's


def test_a_full_search() -> None:
    cursor = encode_cursor(("2026-05-01T10:00:00.123Z", "evt_9", "audit.events.p1", 42), 700)

    search = parse(
        resource_id="doc/7",
        start_time="2026-05-01",
        end_time="2026-05-02T02:00:00+02:00",
        limit="25",
        cursor=cursor,
        actor_email="Alice@Example.com",
    )

    assert search == Search(
        TENANT,
        {"resource_id": "doc/7"},
        "2026-05-01T00:00:00.000Z",
        "2026-05-02T00:00:00.000Z",
        25,
        ("2026-05-01T10:00:00.123Z", "evt_9", "audit.events.p1", 42),
        700,
        "Alice@Example.com",
    )


# --------------------------------------------------------------------------- what is refused, and how it says so


def test_a_filter_of_256_characters_passes_and_257_is_refused() -> None:
    assert parse(resource_id="r" * 256).filters == {"resource_id": "r" * 256}
    assert refused("resource_id", resource_id="r" * 257) == "resource_id is 257 characters long; at most 256"


@pytest.mark.parametrize("value", ["MAYBE", "success", "SUCCESS ", "1"])
def test_result_is_success_or_failure_exactly(value: str) -> None:
    assert refused("result", result=value) == f"result {value!r} must be one of ['SUCCESS', 'FAILURE']"


@pytest.mark.parametrize(
    ("value", "limit"), [(None, DEFAULT_LIMIT), ("", DEFAULT_LIMIT), ("1", 1), ("1000", 1000), ("0042", 42)]
)
def test_limits_that_pass(value: str | None, limit: int) -> None:
    assert parse(limit=value).limit == limit


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten", "limit 'ten' is not a whole number"),
        ("1.5", "limit '1.5' is not a whole number"),
        ("0", "limit 0 must be between 1 and 1000"),
        ("-3", "limit -3 must be between 1 and 1000"),
        ("1001", "limit 1001 must be between 1 and 1000"),
    ],
)
def test_limits_that_are_refused(value: str, message: str) -> None:
    assert refused("limit", limit=value) == message


@pytest.mark.parametrize("email", ["no-at-sign", "a" * 310 + "@example.com"])
def test_an_actor_email_needs_an_at_sign_and_at_most_320_characters(email: str) -> None:
    assert refused("actor_email", actor_email=email) == f"actor_email {email!r} is not an email address"


def test_the_window_must_be_non_empty() -> None:
    message = refused("start_time", start_time="2026-05-02", end_time="2026-05-01T23:00:00+02:00")
    assert message == "start_time 2026-05-02T00:00:00.000Z is not before end_time 2026-05-01T21:00:00.000Z"
    # [start, end) with start == end holds nothing: refused too, in the canonical spelling
    message = refused("start_time", start_time="2026-05-02T01:00:00+01:00", end_time="2026-05-02")
    assert message == "start_time 2026-05-02T00:00:00.000Z is not before end_time 2026-05-02T00:00:00.000Z"


def test_the_first_bad_parameter_is_the_one_named() -> None:
    # in the order the parser checks: filters, result, times, cursor, actor_email, limit
    assert refused("result", result="NOPE", start_time="never", limit="0")
    assert refused("start_time", start_time="never", cursor="x", limit="0")
    assert refused("cursor", cursor="x", actor_email="nobody", limit="0")
    assert refused("actor_email", actor_email="nobody", limit="0")


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("2026-11-01", "2026-11-01T00:00:00.000Z"),  # a date is its midnight UTC
        ("2026-11-01T08:00:00Z", "2026-11-01T08:00:00.000Z"),
        ("2026-11-01T08:00Z", "2026-11-01T08:00:00.000Z"),  # seconds may be left out
        ("2026-11-01T09:00:00+01:00", "2026-11-01T08:00:00.000Z"),
        ("2026-11-01T08:00-05:30", "2026-11-01T13:30:00.000Z"),
        ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00.000Z"),  # the offset moves the date
        ("2024-02-29T23:59:59.9999Z", "2024-02-29T23:59:59.999Z"),  # fractions past ms are cut, not rounded
        ("2026-11-01T08:00:00.5Z", "2026-11-01T08:00:00.500Z"),
        ("2026-11-01T08:00:00.123456789+00:00", "2026-11-01T08:00:00.123Z"),
        ("1900-01-01", "1900-01-01T00:00:00.000Z"),  # the first instant the index stores
        ("2299-12-31T23:59:59.999Z", "2299-12-31T23:59:59.999Z"),  # and the last
    ],
)
def test_times_become_canonical_utc(value: str, canonical: str) -> None:
    assert parse_time(value, "start_time") == canonical
    assert parse(end_time=value).end == canonical


@pytest.mark.parametrize("value", [None, ""])
def test_an_absent_time_is_none(value: str | None) -> None:
    assert parse_time(value, "end_time") is None


OUTSIDE = "is outside the years 1900-2299 that the index stores"
RULE = "an ISO-8601 time with a zone, e.g. 2026-11-01T08:00:00Z or 2026-11-01T09:00:00+01:00, or a date (UTC)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", f"start_time 'yesterday' is not {RULE}"),
        ("2026-11-01 08:00:00Z", f"start_time '2026-11-01 08:00:00Z' is not {RULE}"),
        ("2026-11-01T08Z", f"start_time '2026-11-01T08Z' is not {RULE}"),
        ("2026-11-01T08:00:00+0100", f"start_time '2026-11-01T08:00:00+0100' is not {RULE}"),
        ("20261101", f"start_time '20261101' is not {RULE}"),
        (
            "2026-11-01T08:00:00",
            "start_time '2026-11-01T08:00:00' has no time zone; add Z for UTC or an offset such as +01:00 "
            "(times without a zone are not read in the server's zone)",
        ),
        ("2026-02-29", f"start_time '2026-02-29' is not a real time: {RULE}"),
        ("2026-13-01T00:00:00Z", f"start_time '2026-13-01T00:00:00Z' is not a real time: {RULE}"),
        ("2026-11-01T24:00:00Z", f"start_time '2026-11-01T24:00:00Z' is not a real time: {RULE}"),
        ("2026-11-01T08:00:00+24:00", f"start_time '2026-11-01T08:00:00+24:00' is not a real time: {RULE}"),
        ("1899-12-31T23:59:59.999Z", f"start_time '1899-12-31T23:59:59.999Z' {OUTSIDE}"),
        ("1900-01-01T00:30:00+01:00", f"start_time '1900-01-01T00:30:00+01:00' {OUTSIDE}"),
        ("2300-01-01", f"start_time '2300-01-01' {OUTSIDE}"),
        ("0001-01-01T00:00:00Z", f"start_time '0001-01-01T00:00:00Z' {OUTSIDE}"),
    ],
)
def test_times_that_are_refused_name_the_parameter_and_the_rule(value: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_time(value, "start_time")
    assert caught.value.parameter == "start_time" and str(caught.value) == message


def test_a_long_bad_time_is_quoted_only_in_part() -> None:
    value = "x" * 5000
    message = refused("end_time", end_time=value)
    assert message == f"end_time {'x' * 64!r} is not {RULE}"


OFFSETS = st.integers(-14 * 4, 14 * 4).map(lambda quarters: dt.timedelta(minutes=15 * quarters))
INSTANTS = st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2299, 12, 30)).map(
    lambda d: d.replace(tzinfo=dt.UTC)
)


def spelled(instant: dt.datetime, offset: dt.timedelta, digits: int) -> str:
    """`instant` written in the zone `offset` east of UTC, with `digits` fraction digits (0 = none)."""
    local = instant.astimezone(dt.timezone(offset))
    minutes = int(offset.total_seconds()) // 60
    zone = "Z" if minutes == 0 else f"{'+' if minutes > 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    fraction = f".{local.microsecond:06d}000"[: digits + 1] if digits else ""
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


@given(INSTANTS, OFFSETS, st.integers(0, 9))
def test_any_instant_in_any_zone_reads_as_its_utc_time_cut_to_milliseconds(
    instant: dt.datetime, offset: dt.timedelta, digits: int
) -> None:
    text = spelled(instant, offset, digits)
    kept = min(digits, 6)  # digits past the microseconds are zeros
    micro = int(f"{instant.microsecond:06d}"[:kept].ljust(6, "0")) if kept else 0
    expected = instant.replace(microsecond=micro)

    canonical = parse_time(text, "start_time")

    assert canonical == expected.strftime("%Y-%m-%dT%H:%M:%S.") + f"{expected.microsecond // 1000:03d}Z", text
    assert parse_time(canonical, "start_time") == canonical  # canonical times are a fixed point


# --------------------------------------------------------------------------- cursors


EVENT_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)  # the event schema's
LOG_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}", fullmatch=True)  # the archive's
CURSOR_KEYS = st.tuples(
    INSTANTS.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}"[:3] + "Z"),
    EVENT_IDS,
    LOG_IDS,
    st.integers(0, 2**63 - 1),
)


@given(CURSOR_KEYS, st.integers(0, 2**63 - 1))
def test_every_cursor_the_api_hands_out_reads_back_as_its_key_and_total(
    key: tuple[str, str, str, int], total: int
) -> None:
    cursor = encode_cursor(key, total)

    search = parse(cursor=cursor)

    assert (search.after, search.total) == (key, total)
    assert "=" not in cursor and set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


GOOD = ["2026-05-01T00:00:00.276Z", "evt_1", "audit.events.p0", 7, 100]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "x",  # not base64 of anything
        raw_cursor({"after": GOOD}),  # not a list
        raw_cursor(GOOD[:4]),  # no total
        raw_cursor([*GOOD, 1]),
        raw_cursor([1, *GOOD[1:]]),  # the time is not text
        raw_cursor(["2026-05-01T00:00:00Z", *GOOD[1:]]),  # not ClickHouse's spelling: no fraction
        raw_cursor(["2026-02-30T00:00:00.000Z", *GOOD[1:]]),  # no such day
        raw_cursor(["1899-12-31T23:59:59.999Z", *GOOD[1:]]),  # outside what the index stores
        raw_cursor([GOOD[0], "e" * 129, *GOOD[2:]]),
        raw_cursor([*GOOD[:2], "l" * 129, *GOOD[3:]]),
        raw_cursor([*GOOD[:3], -1, 100]),
        raw_cursor([*GOOD[:3], 2**63, 100]),
        raw_cursor([*GOOD[:3], True, 100]),  # a bool is not a leaf index
        raw_cursor([*GOOD[:3], 7.0, 100]),
        raw_cursor([*GOOD[:4], "100"]),
        raw_cursor(GOOD) + "A" * 2048,  # longer than any cursor handed out
        base64.urlsafe_b64encode(b"\xff\xfe not utf-8").decode(),
    ],
)
def test_cursors_the_api_never_handed_out_are_refused(cursor: str) -> None:
    assert raw_cursor(GOOD) and parse(cursor=raw_cursor(GOOD)).after == tuple(GOOD[:4])  # the shape that passes
    message = refused("cursor", cursor=cursor)
    assert message == f"cursor {cursor[:40]!r} is not one this API handed out; start again without it"


# --------------------------------------------------------------------------- the SQL a search makes


def test_the_where_clause_binds_every_value() -> None:
    search = parse(
        result="SUCCESS",
        actor_id="u_1",
        start_time="2026-05-01",
        end_time="2026-06-01",
        cursor=encode_cursor(("2026-05-20T00:00:00.000Z", "evt_5", "audit.events.p0", 3), 9),
        actor_email="a@example.com",
    )

    sql, params = search.where(email_hashes=["h1", "h2"])

    assert sql.split(" AND ")[0] == "tenant_id = {tenant:String}"
    assert "actor_email_hash IN {email_hashes:Array(String)}" in sql
    # filters in name order, each compared as text
    assert sql.index("toString(actor_id) = {f_actor_id:String}") < sql.index("toString(result) = {f_result:String}")
    assert "occurred_at >= parseDateTime64BestEffort({start:String}, 3, 'UTC')" in sql
    assert "occurred_at < parseDateTime64BestEffort({end:String}, 3, 'UTC')" in sql
    assert "(occurred_at, event_id, log_id, leaf_index) < " in sql
    assert params == {
        "tenant": TENANT,
        "email_hashes": ["h1", "h2"],
        "f_actor_id": "u_1",
        "f_result": "SUCCESS",
        "start": "2026-05-01T00:00:00.000Z",
        "end": "2026-06-01T00:00:00.000Z",
        "c_t": "2026-05-20T00:00:00.000Z",
        "c_e": "evt_5",
        "c_l": "audit.events.p0",
        "c_i": 3,
    }
    without_cursor, params = search.where(with_cursor=False)
    assert "leaf_index) <" not in without_cursor and "c_t" not in params
    assert params["email_hashes"] == []  # an email with no live subject key matches nothing


FILTER_VALUES = st.text(max_size=256).filter(lambda v: v != "")


@given(st.dictionaries(st.sampled_from(["actor_id", "action", "resource_id", "resource_type"]), FILTER_VALUES))
def test_the_sql_depends_on_which_filters_are_set_never_on_their_values(filters: dict[str, str]) -> None:
    search = parse(**filters)
    sql, params = search.where()
    placeholder_sql, _ = parse(**dict.fromkeys(filters, "v")).where()

    assert sql == placeholder_sql
    assert {k: v for k, v in params.items() if k.startswith("f_")} == {f"f_{k}": v for k, v in filters.items()}
