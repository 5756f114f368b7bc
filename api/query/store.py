"""What the query API reads from ClickHouse: searches, a resource's history, one event.

Every value reaches the database as a bound `{name:Type}` parameter; nothing from a request is
formatted into SQL. Results come newest first in a stable order — (occurred_at, event_id,
log_id, leaf_index), descending — which is also the table's sort key after tenant_id, so a page
reads in order and stops. A cursor is that key of the last row returned, base64url JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.io.clickhouse import LOGS_TABLE, NOT_EXPIRED
from schemas.events import EventValidationError, normalize_time
from schemas.present import KeyLookup, present_event
from transforms.errors import AuditlogError
from transforms.pii import lookup_hash

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
RESULTS = ("SUCCESS", "FAILURE")
FILTERS = ("actor_id", "action", "resource_id", "resource_type", "result")
EMAIL_FIELD = "actor.email"
MAX_CURSOR_CHARS = 2048
MAX_UINT63 = 2**63 - 1
EARLIEST, LATEST = "1900-01-01T00:00:00.000Z", "2299-12-31T23:59:59.999Z"  # ClickHouse DateTime64's range
_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:T(?P<clock>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?)(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
# A cursor's time is ClickHouse's formatDateTime(…, '%f'): as many fraction digits as the server
# prints (3 or 6 by its settings), so it is held to the shape and the calendar, not to 3 digits.
_CURSOR_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3,9}Z")
TIME_RULE = "an ISO-8601 time with a zone, e.g. 2026-11-01T08:00:00Z or 2026-11-01T09:00:00+01:00, or a date (UTC)"
_ORDER = "occurred_at DESC, event_id DESC, log_id DESC, leaf_index DESC"
_COLUMNS = (
    "formatDateTime(occurred_at, '%Y-%m-%dT%H:%i:%S.%fZ'), event_id, toString(log_id), leaf_index, "
    "block_index, hex(leaf_hash), hex(block_hash), canonical"
)


class QueryError(AuditlogError, ValueError):
    """A request parameter is wrong; `parameter` names it (the API answers 400)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Search:
    """A validated search: tenant, equality filters, a time range [start, end), page size, cursor."""

    tenant_id: str
    filters: Mapping[str, str] = field(default_factory=dict)
    start: str | None = None
    end: str | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[str, str, str, int] | None = None
    total: int | None = None  # carried in the cursor: the first page counted the matches
    actor_email: str | None = None

    @classmethod
    def parse(cls, tenant_id: str, params: Mapping[str, str | None]) -> Search:
        """Validates raw query parameters; raises QueryError naming the first bad one."""
        filters = {name: value for name in FILTERS if (value := params.get(name)) not in (None, "")}
        for name, value in filters.items():
            if len(value) > 256:
                raise QueryError(name, f"{name} is {len(value)} characters long; at most 256")
        if "result" in filters and filters["result"] not in RESULTS:
            raise QueryError("result", f"result {filters['result']!r} must be one of {list(RESULTS)}")
        start = parse_time(params.get("start_time"), "start_time")
        end = parse_time(params.get("end_time"), "end_time")
        if start and end and start >= end:
            raise QueryError("start_time", f"start_time {start} is not before end_time {end}")
        cursor = _cursor(params.get("cursor"))
        after, total = (cursor[:4], cursor[4]) if cursor else (None, None)
        email = params.get("actor_email") or None
        if email is not None and ("@" not in email or len(email) > 320):
            raise QueryError("actor_email", f"actor_email {email!r} is not an email address")
        limit = _limit(params.get("limit"))
        return cls(tenant_id, filters, start, end, limit, after, total, email)

    def where(self, with_cursor: bool = True, email_hashes: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """The WHERE clause and its bound parameters; `email_hashes` are the actor_email's keyed hashes."""
        clauses = ["tenant_id = {tenant:String}", NOT_EXPIRED]
        params: dict[str, Any] = {"tenant": self.tenant_id}
        if self.actor_email is not None:
            clauses.append("actor_email_hash IN {email_hashes:Array(String)}")
            params["email_hashes"] = email_hashes or []
        for name, value in sorted(self.filters.items()):
            clauses.append(f"toString({name}) = {{f_{name}:String}}")
            params[f"f_{name}"] = value
        if self.start:
            clauses.append("occurred_at >= parseDateTime64BestEffort({start:String}, 3, 'UTC')")
            params["start"] = self.start
        if self.end:
            clauses.append("occurred_at < parseDateTime64BestEffort({end:String}, 3, 'UTC')")
            params["end"] = self.end
        if with_cursor and self.after is not None:
            clauses.append(
                "(occurred_at, event_id, log_id, leaf_index) < "
                "(parseDateTime64BestEffort({c_t:String}, 3, 'UTC'), {c_e:String}, {c_l:String}, {c_i:UInt64})"
            )
            params.update(c_t=self.after[0], c_e=self.after[1], c_l=self.after[2], c_i=self.after[3])
        return " AND ".join(clauses), params


def parse_time(value: str | None, name: str) -> str | None:
    """An API time parameter as canonical UTC (`YYYY-MM-DDTHH:MM:SS.mmmZ`), or None if not given.

    A date alone means its midnight UTC. A time without a zone is refused, never read in the
    server's own zone. Raises QueryError naming `name`.
    """
    if value in (None, ""):
        return None
    assert value is not None
    match = _TIME.fullmatch(value)
    if match is None:
        raise QueryError(name, f"{name} {value[:64]!r} is not {TIME_RULE}")
    if match["clock"] is not None and match["zone"] is None:
        raise QueryError(
            name,
            f"{name} {value!r} has no time zone; add Z for UTC or an offset such as +01:00 (times without a "
            "zone are not read in the server's zone)",
        )
    candidate = f"{value}T00:00:00Z" if match["clock"] is None else value
    if match["clock"] is not None and match["clock"].count(":") == 1:
        candidate = f"{match['date']}T{match['clock']}:00{match['zone']}"
    try:
        normal = normalize_time(candidate)
    except (EventValidationError, ValueError, IndexError, OverflowError):
        raise QueryError(name, f"{name} {value!r} is not a real time: {TIME_RULE}") from None
    if not EARLIEST <= normal <= LATEST:
        raise QueryError(name, f"{name} {value!r} is outside the years 1900-2299 that the index stores")
    return normal


def _limit(value: str | None) -> int:
    if value in (None, ""):
        return DEFAULT_LIMIT
    assert value is not None
    try:
        limit = int(value)
    except ValueError:
        raise QueryError("limit", f"limit {value!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"limit {limit} must be between 1 and {MAX_LIMIT}")
    return limit


def encode_cursor(key: tuple[str, str, str, int], total: int) -> str:
    raw = json.dumps([*key, total], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_UINT63


def _cursor(value: str | None) -> tuple[str, str, str, int, int] | None:
    if value in (None, ""):
        return None
    assert value is not None
    try:
        if len(value) > MAX_CURSOR_CHARS:
            raise ValueError
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if not isinstance(raw, list) or len(raw) != 5:
            raise ValueError
        occurred, event_id, log_id, index, total = raw
        if not (isinstance(occurred, str) and isinstance(event_id, str) and isinstance(log_id, str)):
            raise ValueError
        if len(event_id) > 128 or len(log_id) > 128 or not (_whole(index) and _whole(total)):
            raise ValueError
        if not _CURSOR_TIME.fullmatch(occurred) or not EARLIEST <= normalize_time(occurred) <= LATEST:
            raise ValueError
        return occurred, event_id, log_id, index, total
    except (ValueError, TypeError, binascii.Error, EventValidationError, UnicodeDecodeError, RecursionError):
        raise QueryError(
            "cursor", f"cursor {value[:40]!r} is not one this API handed out; start again without it"
        ) from None


@dataclass
class Page:
    records: list[dict[str, Any]]
    total: int
    next_cursor: str | None


class QueryStore:
    """The API's reads, over one ClickHouse (thread-safe as far as the client is)."""

    def __init__(self, clickhouse: Any, keys: KeyLookup | None = None) -> None:
        self.clickhouse = clickhouse
        self.keys = keys

    def _present(self, row: tuple[Any, ...]) -> dict[str, Any]:
        occurred, event_id, log_id, leaf_index, block_index, leaf_hex, block_hex, canonical = row
        place = {
            "log_id": log_id,
            "leaf_index": leaf_index,
            "block_index": block_index,
            "leaf_hash": leaf_hex,
            "block_hash": block_hex,
        }
        return present_event(canonical.encode() if isinstance(canonical, str) else bytes(canonical), place, self.keys)

    def email_hashes(self, tenant_id: str, email: str) -> list[str]:
        """The keyed hashes `email` would have under each of the tenant's live subject keys.

        A hash is keyed per subject, so a lookup tries every subject that still has keys; an
        erased subject's events can no longer be found by their email (its key is gone).
        """
        if self.keys is None:
            return []
        hashes = []
        for subject in self.keys.subjects(tenant_id):
            keys = self.keys.get(tenant_id, subject)
            if keys is not None:
                hashes.append(lookup_hash(keys, EMAIL_FIELD, email))
        return hashes

    def search(self, search: Search) -> Page:
        hashes = self.email_hashes(search.tenant_id, search.actor_email) if search.actor_email else None
        where, params = search.where(email_hashes=hashes)
        rows = self.clickhouse.query(
            f"SELECT {_COLUMNS} FROM {LOGS_TABLE} WHERE {where} ORDER BY {_ORDER} LIMIT {search.limit + 1}", params
        )
        total = search.total
        if total is None:
            count_where, count_params = search.where(with_cursor=False, email_hashes=hashes)
            total = int(
                self.clickhouse.query(f"SELECT count() FROM {LOGS_TABLE} WHERE {count_where}", count_params)[0][0]
            )
        more = len(rows) > search.limit
        rows = rows[: search.limit]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = encode_cursor((last[0], last[1], last[2], int(last[3])), total)
        return Page([self._present(r) for r in rows], total, next_cursor)

    def event(self, tenant_id: str, event_id: str) -> dict[str, Any] | None:
        rows = self.clickhouse.query(
            f"SELECT {_COLUMNS} FROM {LOGS_TABLE} WHERE tenant_id = {{t:String}} AND event_id = {{e:String}} "
            f"AND {NOT_EXPIRED} ORDER BY log_id, leaf_index LIMIT 1",
            {"t": tenant_id, "e": event_id},
        )
        return self._present(rows[0]) if rows else None
