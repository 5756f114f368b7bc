"""Retention classes and legal holds: how long each event is kept, and what suspends its expiry.

A policy names retention classes (a period each), maps actions to classes by glob pattern (first
match wins) and has a default class. The ingest job stamps every event with its class and the
moment its retention ends, *inside the canonical form* (so the leaf hash covers it):

    "retention": {"class": "billing", "until": "2033-05-01T09:00:00.000Z"}

`until` is the event's own `occurred_at` plus the class's period (calendar years and months,
exact days, hours, minutes, seconds): a function of the event alone, so replays stay
byte-identical (docs/design.md §6) and a later policy change never rewrites history.

    policy = RetentionPolicy.parse({"default": "standard",
                                    "classes": {"billing": "7y", "admin-view": "90d", "standard": "1y"},
                                    "rules": [{"actions": ["billing.*"], "class": "billing"},
                                              {"actions": ["admin.view"], "class": "admin-view"}]})
    policy.stamp("billing.plan.update", "2026-05-01T09:00:00.000Z")
    # {"class": "billing", "until": "2033-05-01T09:00:00.000Z"}

A legal hold suspends expiry for one tenant (or one subject of it) until a time. An event is
*retained* at a moment while its retention runs, or while a hold covers it that was placed before
its retention ended (a hold cannot bring back what had already expired):

    retained(tenant, actor, until, now, holds)

The same rule is evaluated by the verifier over archived entries and by ClickHouse (as SQL over
the row's columns) when it decides which rows must still be there.
"""

from __future__ import annotations

import calendar
import fnmatch
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from transforms.errors import AuditlogError

RETENTION_FIELD = "retention"
KEPT_FOREVER = "9999-12-31T23:59:59.999Z"
"""The `until` of an entry that carries no retention (written before retention classes existed)."""

MAX_PERIOD_DAYS = 200 * 366  # every retention end stays a real date, far below year 9999
_PERIOD = re.compile(r"(?P<amount>\d+)\s*(?P<unit>y|mo|d|h|m|s)")
_UNIT_NAMES = {"y": "years", "mo": "months", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DATE_UNITS = frozenset({"y", "mo", "d"})
_CLASS_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_RETENTION_HEAD = b'"retention":{"class":"'
_RETENTION_MEMBER = re.compile(
    rb'"retention":\{"class":"[a-z0-9][a-z0-9._-]{0,62}","until":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z)"\},'
    rb'"schema_version":'
)


class RetentionPolicyError(AuditlogError, ValueError):
    """A retention policy is malformed: which part, what value, and how to fix it."""


def format_time(moment: datetime) -> str:
    """A UTC time in the canonical event form `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parses a canonical event time (`...Z`) into an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """A retention period: a whole number of years, months, days, hours, minutes or seconds."""

    amount: int
    unit: str  # one of y, mo, d, h, m, s

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parses `7y`, `18mo`, `90d`, `12h`, `30m` or `45s`."""
        match = _PERIOD.fullmatch(str(text).strip())
        if match is None:
            raise RetentionPolicyError(
                f"retention period {text!r} is not a whole number followed by y, mo, d, h, m or s "
                "(for example 7y, 18mo, 90d)"
            )
        period = cls(int(match["amount"]), match["unit"])
        if period.amount < 1 or period.approximate_days() > MAX_PERIOD_DAYS:
            raise RetentionPolicyError(
                f"retention period {text!r} must be at least 1 {_UNIT_NAMES[period.unit][:-1]} and at most 200 years"
            )
        return period

    def after(self, start: datetime) -> datetime:
        """`start` plus this period; calendar years and months keep the day, clamped to the month's end."""
        if self.unit in ("y", "mo"):
            months = self.amount * (12 if self.unit == "y" else 1)
            total = start.year * 12 + (start.month - 1) + months
            year, month = divmod(total, 12)
            if year > 9999:
                return parse_time(KEPT_FOREVER)
            day = min(start.day, calendar.monthrange(year, month + 1)[1])
            return start.replace(year=year, month=month + 1, day=day)
        return start + timedelta(**{_UNIT_NAMES[self.unit]: self.amount})

    def approximate_days(self) -> float:
        """The period in days (a year as 366, a month as 31: an upper bound), for comparing classes."""
        per_unit = {"y": 366.0, "mo": 31.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400}
        return self.amount * per_unit[self.unit]

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class RetentionRule:
    """Actions matching any of `patterns` (shell-style globs, `*` spans dots) get `retention_class`."""

    patterns: tuple[str, ...]
    retention_class: str

    def matches(self, action: str) -> bool:
        return any(fnmatch.fnmatchcase(action, pattern) for pattern in self.patterns)


@dataclass(frozen=True)
class RetentionPolicy:
    """The retention classes, the rules that assign them by action, and the default class."""

    classes: tuple[tuple[str, Period], ...]
    rules: tuple[RetentionRule, ...]
    default: str
    # action → class; actions are few, and matching every glob per event costs microseconds.
    _classified: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)
    # (class, occurred_at's date) → the date its retention ends, for classes counted in years,
    # months or days: in UTC such a period moves the date and keeps the time of day.
    _until_days: dict[tuple[str, str], str] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def parse(cls, spec: Mapping[str, Any], source: str = "retention policy") -> RetentionPolicy:
        """Builds a policy from its configuration mapping (the TOML file's tables); checks every name."""
        classes_spec = spec.get("classes")
        if not isinstance(classes_spec, Mapping) or not classes_spec:
            raise RetentionPolicyError(f"{source}: needs a [classes] table naming at least one class and its period")
        classes = []
        for name, period in classes_spec.items():
            if not _CLASS_NAME.fullmatch(str(name)):
                raise RetentionPolicyError(
                    f"{source}: class name {name!r} must be lower-case letters, digits, '.', '_' or '-'"
                )
            try:
                classes.append((str(name), Period.parse(period)))
            except RetentionPolicyError as exc:
                raise RetentionPolicyError(f"{source}: class {name!r}: {exc}") from None
        known = {name for name, _ in classes}
        default = spec.get("default")
        if default not in known:
            raise RetentionPolicyError(
                f"{source}: default class {default!r} is not one of the classes ({', '.join(sorted(known))})"
            )
        rules = []
        for number, rule in enumerate(spec.get("rules", []), 1):
            if not isinstance(rule, Mapping):
                raise RetentionPolicyError(
                    f"{source}: rule {number} is {rule!r}; write it as a [[rules]] table with `actions` and `class`"
                )
            actions = rule.get("actions")
            if isinstance(actions, str):
                actions = [actions]
            if not actions or not all(isinstance(a, str) and a for a in actions):
                raise RetentionPolicyError(
                    f"{source}: rule {number} needs `actions`, a list of action patterns (got {actions!r})"
                )
            name = rule.get("class")
            if name not in known:
                raise RetentionPolicyError(
                    f"{source}: rule {number} ({', '.join(actions)}) names class {name!r}, which is not one of "
                    f"the classes ({', '.join(sorted(known))})"
                )
            rules.append(RetentionRule(tuple(actions), str(name)))
        return cls(tuple(classes), tuple(rules), str(default))

    def to_spec(self) -> dict[str, Any]:
        """The configuration mapping `parse` reads (the TOML file's shape), e.g. for a job's JSON config."""
        return {
            "default": self.default,
            "classes": {name: str(period) for name, period in self.classes},
            "rules": [{"actions": list(rule.patterns), "class": rule.retention_class} for rule in self.rules],
        }

    def classify(self, action: str) -> str:
        """The class of an action: the first rule that matches, else the default."""
        known = self._classified.get(action)
        if known is not None:
            return known
        found = next((rule.retention_class for rule in self.rules if rule.matches(action)), self.default)
        if len(self._classified) < 100_000:
            self._classified[action] = found
        return found

    def period(self, retention_class: str) -> Period:
        for name, period in self.classes:
            if name == retention_class:
                return period
        raise KeyError(retention_class)

    def stamp(self, action: str, occurred_at: str) -> dict[str, str]:
        """The `retention` member of an event's canonical form (`occurred_at` in canonical form)."""
        name = self.classify(action)
        period = self.period(name)
        day_key = (name, occurred_at[:10])
        memo = period.unit in _DATE_UNITS and len(occurred_at) == 24 and occurred_at[10] == "T"
        if memo and (day := self._until_days.get(day_key)) is not None:
            return {"class": name, "until": day + occurred_at[10:]}
        until = format_time(period.after(parse_time(occurred_at)))
        # Kept forever (beyond year 9999) is no date shift: never remember it as one.
        if memo and until != KEPT_FOREVER and until[10:] == occurred_at[10:] and len(self._until_days) < 100_000:
            self._until_days[day_key] = until[:10]
        return {"class": name, "until": until}

    def longest(self) -> Period:
        """The longest period of any class: how long leaf hashes and checkpoints are locked."""
        start = datetime(2000, 1, 31, tzinfo=UTC)  # a month end: calendar periods are at their shortest
        return max((period for _, period in self.classes), key=lambda p: p.after(start))


def entry_until(entry: bytes) -> str:
    """The `until` of a canonical entry's retention, or KEPT_FOREVER if it carries none.

    Reads the bytes without parsing the whole document: in RFC 8785 form the top-level
    "retention" member comes after every nested object ("metadata" and "pii" sort before it) and
    right before "schema_version", so it is the last `"retention":{"class":"` and is followed by
    `},"schema_version":`. An entry without that shape (an older one) is kept forever.
    """
    found = _RETENTION_MEMBER.match(entry, max(0, entry.rfind(_RETENTION_HEAD)))
    return found.group(1).decode("ascii") if found else KEPT_FOREVER


def entry_owner(entry: bytes) -> tuple[str, str]:
    """(tenant_id, actor id) of a canonical entry, for matching legal holds; ("", "") if unreadable."""
    try:
        doc = json.loads(entry)
        return str(doc["tenant_id"]), str(doc["actor"]["id"])
    except (ValueError, KeyError, TypeError):
        return "", ""


@dataclass(frozen=True)
class LegalHold:
    """A hold on one tenant's events (or one subject's, when `subject_id` is set) from `placed_at` to `until`.

    `released_at` is set once the hold was released early; times are canonical UTC strings.
    """

    hold_id: str
    tenant_id: str
    subject_id: str
    until: str
    placed_at: str
    reason: str = ""
    released_at: str = ""

    def active(self, now: str) -> bool:
        return self.placed_at <= now < self.until and not (self.released_at and self.released_at <= now)

    def covers(self, tenant_id: str, actor_id: str) -> bool:
        return tenant_id == self.tenant_id and (not self.subject_id or actor_id == self.subject_id)

    def scope(self) -> str:
        return f"tenant {self.tenant_id}" + (f" subject {self.subject_id}" if self.subject_id else "")


def active_holds(holds: Iterable[LegalHold], now: str) -> tuple[LegalHold, ...]:
    return tuple(h for h in holds if h.active(now))


def retained(tenant_id: str, actor_id: str, until: str, now: str, holds: Sequence[LegalHold]) -> bool:
    """True while an event must still be kept: its retention runs, or an active hold placed in time covers it.

    `holds` should be the holds active at `now` (see `active_holds`).
    """
    if until > now:
        return True
    return any(h.covers(tenant_id, actor_id) and until > h.placed_at for h in holds)


@dataclass(frozen=True)
class RetentionClock:
    """The moment a verify run judges retention at, and the legal holds active then."""

    now: str
    holds: tuple[LegalHold, ...] = ()

    @classmethod
    def at(cls, moment: datetime, holds: Iterable[LegalHold] = ()) -> RetentionClock:
        now = format_time(moment)
        return cls(now, active_holds(holds, now))

    def kept(self, entries: Sequence[bytes]) -> list[int] | None:
        """Indexes of the entries whose rows must still be in the index; None when that is all of them."""
        untils = [entry_until(entry) for entry in entries]
        if min(untils, default=KEPT_FOREVER) > self.now:
            return None
        return [i for i, (entry, until) in enumerate(zip(entries, untils, strict=True)) if self._keeps(entry, until)]

    def _keeps(self, entry: bytes, until: str) -> bool:
        if until > self.now:
            return True
        if not self.holds:
            return False
        tenant_id, actor_id = entry_owner(entry)
        return retained(tenant_id, actor_id, until, self.now, self.holds)

    def keeps(self, entry: bytes) -> bool:
        """True if the archived entry's row must still be in the index."""
        return self._keeps(entry, entry_until(entry))
