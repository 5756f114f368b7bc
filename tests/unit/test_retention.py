"""Retention classes, legal holds and expiry: the pure core, and the archive side on the in-memory archive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.io.archive import Retention, block_key, expired_key, parse_key
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.archive.tiles import bundle_keys
from pipelines.io.clickhouse.compare import compare_rows
from pipelines.retention import expire_archive, read_holds, write_hold, write_release
from schemas.retention import DEFAULT_POLICY_FILE, load_policy
from tests.synthetic import build_logs
from transforms.blocks import decode_expired_block, encode_expired_block
from transforms.merkle import leaf_hash
from transforms.retention import (
    KEPT_FOREVER,
    LegalHold,
    Period,
    RetentionClock,
    RetentionPolicy,
    RetentionPolicyError,
    active_holds,
    entry_until,
    format_time,
    parse_time,
    retained,
)
from transforms.tiles import parse_tile_path
from transforms.verify import ArchivedObject, ArchiveLogCheck, Kind

POLICY = RetentionPolicy.parse(
    {
        "default": "standard",
        "classes": {"billing": "7y", "admin-view": "90d", "standard": "1y", "short": "2h"},
        "rules": [
            {"actions": ["billing.*"], "class": "billing"},
            {"actions": ["admin.view"], "class": "admin-view"},
            {"actions": ["user.log*"], "class": "short"},
        ],
    }
)


# --------------------------------------------------------------------------- periods and policies


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("7y", "2026-05-01T09:00:00.123Z", "2033-05-01T09:00:00.123Z"),
        ("1y", "2028-02-29T00:00:00.000Z", "2029-02-28T00:00:00.000Z"),  # no Feb 29th: the month's last day
        ("1mo", "2026-01-31T12:00:00.000Z", "2026-02-28T12:00:00.000Z"),
        ("18mo", "2026-11-15T00:00:00.000Z", "2028-05-15T00:00:00.000Z"),
        ("90d", "2026-05-01T00:00:00.000Z", "2026-07-30T00:00:00.000Z"),
        ("36h", "2026-05-01T00:00:00.000Z", "2026-05-02T12:00:00.000Z"),
        ("45s", "2026-12-31T23:59:30.000Z", "2027-01-01T00:00:15.000Z"),
    ],
)
def test_a_period_ends_on_the_calendar(period: str, start: str, end: str) -> None:
    assert format_time(Period.parse(period).after(parse_time(start))) == end


@pytest.mark.parametrize("text", ["", "7", "y", "7 years", "-1d", "1.5y", "7Y", "3w"])
def test_a_bad_period_is_refused_with_the_value(text: str) -> None:
    with pytest.raises(RetentionPolicyError, match="is not a whole number followed by y, mo, d, h, m or s"):
        Period.parse(text)


@pytest.mark.parametrize("text", ["0s", "0y", "201y", "4000000d"])
def test_a_period_must_end_within_two_hundred_years(text: str) -> None:
    with pytest.raises(RetentionPolicyError, match=f"period '{text}' must be at least 1 .* at most 200 years"):
        Period.parse(text)


def _block(archive: object, key: str) -> tuple[object, list[bytes]]:
    """(header, entries) of the block at `key`, its entries from the log's bundles."""
    log_id, _, index = parse_key(key)  # type: ignore[misc]
    return archive.read_block(log_id, index)  # type: ignore[attr-defined]


def test_the_longest_class_is_compared_on_the_calendar() -> None:
    policy = RetentionPolicy.parse({"default": "a", "classes": {"a": "12mo", "b": "370d", "c": "1y"}})
    assert str(policy.longest()) == "370d"


def test_the_first_matching_rule_wins_and_others_get_the_default() -> None:
    assert POLICY.classify("billing.plan.update") == "billing"
    assert POLICY.classify("admin.view") == "admin-view"
    assert POLICY.classify("admin.viewer") == "standard"
    assert POLICY.classify("user.logout") == "short"
    assert POLICY.classify("document.read") == "standard"
    assert POLICY.stamp("billing.invoice.view", "2026-05-01T09:00:00.000Z") == {
        "class": "billing",
        "until": "2033-05-01T09:00:00.000Z",
    }
    assert str(POLICY.longest()) == "7y"


_MOMENTS = st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=st.just(dt.UTC)
).map(lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000))


@given(_MOMENTS, st.sampled_from(["1y", "7y", "200y", "18mo", "1mo", "90d", "1d", "12h", "30m", "45s"]))
def test_a_stamp_is_its_period_after_occurred_at_whatever_the_memo_holds(moment, period) -> None:
    policy = RetentionPolicy.parse({"default": "c", "classes": {"c": period}})
    occurred_at = format_time(moment)
    expected = format_time(Period.parse(period).after(moment))
    # Twice: the first fills the date memo, the second is answered from it.
    assert policy.stamp("a.b", occurred_at) == {"class": "c", "until": expected}
    assert policy.stamp("a.b", occurred_at) == {"class": "c", "until": expected}
    # Another time of the same day comes from the memo too, and keeps its own time of day.
    later = moment.replace(hour=23, minute=59, second=59, microsecond=999000)
    assert policy.stamp("a.b", format_time(later))["until"] == format_time(Period.parse(period).after(later))
    # The memo never depends on which time of a day came first (kept-forever ends included).
    fresh = RetentionPolicy.parse({"default": "c", "classes": {"c": period}})
    earlier = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    for first in (later, earlier):
        fresh.stamp("a.b", format_time(first))
    assert fresh.stamp("a.b", format_time(earlier))["until"] == format_time(Period.parse(period).after(earlier))


def test_a_kept_forever_stamp_is_not_memoised_as_a_date() -> None:
    policy = RetentionPolicy.parse({"default": "c", "classes": {"c": "200y"}})
    assert policy.stamp("a.b", "9900-06-01T23:59:59.999Z")["until"] == KEPT_FOREVER
    assert policy.stamp("a.b", "9900-06-01T10:00:00.000Z")["until"] == KEPT_FOREVER


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"default": "x", "classes": {}}, r"needs a \[classes\] table"),
        ({"default": "nope", "classes": {"a": "1d"}}, "default class 'nope' is not one of the classes"),
        ({"default": "a", "classes": {"A": "1d"}}, "class name 'A' must be lower-case"),
        ({"default": "a", "classes": {"a": "1 day"}}, "class 'a': retention period '1 day'"),
        ({"default": "a", "classes": {"a": "1d"}, "rules": [{"class": "a"}]}, "rule 1 needs `actions`"),
        ({"default": "a", "classes": {"a": "1d"}, "rules": ["billing.*"]}, "rule 1 is 'billing.*'; write it as"),
        (
            {"default": "a", "classes": {"a": "1d"}, "rules": [{"actions": ["x.*"], "class": "b"}]},
            r"rule 1 \(x.\*\) names class 'b', which is not one of the classes \(a\)",
        ),
    ],
)
def test_a_bad_policy_says_what_is_wrong(spec: dict, message: str) -> None:
    with pytest.raises(RetentionPolicyError, match=message):
        RetentionPolicy.parse(spec)


def test_the_shipped_policy_loads_and_round_trips_through_its_spec(tmp_path) -> None:
    policy = load_policy()
    assert policy.classify("billing.plan.update") == "billing" and policy.classify("admin.view") == "admin-view"
    assert policy.classify("privacy.subject.erase") == policy.classify("compliance.legal_hold.place") == "security"
    assert RetentionPolicy.parse(policy.to_spec()) == policy
    with pytest.raises(RetentionPolicyError, match="does not exist"):
        load_policy(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("default = \n")
    with pytest.raises(RetentionPolicyError, match="is not valid TOML"):
        load_policy(tmp_path / "bad.toml")
    assert DEFAULT_POLICY_FILE.exists()


# --------------------------------------------------------------------------- the canonical form


def _entries(n: int, policy: RetentionPolicy = POLICY, start: dt.datetime | None = None) -> list[bytes]:
    from pipelines.io.archive.testing import InMemoryArchive

    archive = InMemoryArchive()
    build_logs(archive, None, n, logs=1, block_size=n, retention=policy, start=start)
    (key,) = archive.keys("logs/audit.events.p0/blocks/")
    return _block(archive, key)[1]


def test_every_entry_carries_its_class_and_end_and_the_fast_reader_agrees_with_json() -> None:
    for entry in _entries(300):
        doc = json.loads(entry)
        assert doc["retention"] == POLICY.stamp(doc["action"], doc["occurred_at"])
        assert entry_until(entry) == doc["retention"]["until"]


@given(st.text(alphabet='"{}:,retnionclasu0123456789-TZ.', max_size=80))
def test_the_fast_reader_is_not_fooled_by_metadata(text: str) -> None:
    doc = {
        "action": "x",
        "metadata": {"note": text, "retention": {"class": "short", "until": "2000-01-01T00:00:00.000Z"}},
        "retention": {"class": "billing", "until": "2033-05-01T09:00:00.000Z"},
        "schema_version": 1,
        "tenant_id": "t",
    }
    from transforms.jcs import canonicalize

    assert entry_until(canonicalize(doc)) == "2033-05-01T09:00:00.000Z"
    del doc["retention"]
    assert entry_until(canonicalize(doc)) == KEPT_FOREVER


# --------------------------------------------------------------------------- holds


def _hold(**changes: str) -> LegalHold:
    base = LegalHold("h1", "t_1000", "", "2027-01-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z", "case 1")
    return dataclasses.replace(base, **changes)


def test_a_hold_keeps_only_what_had_not_expired_when_it_was_placed() -> None:
    hold = _hold()
    now = "2026-09-01T00:00:00.000Z"
    holds = active_holds([hold], now)
    assert retained("t_1000", "u1", "2026-08-01T00:00:00.000Z", now, holds)  # ended after the hold was placed
    assert not retained("t_1000", "u1", "2026-05-01T00:00:00.000Z", now, holds)  # had ended before
    assert not retained("t_1001", "u1", "2026-08-01T00:00:00.000Z", now, holds)  # another tenant
    assert retained("t_1001", "u1", "2026-10-01T00:00:00.000Z", now, holds)  # still within retention
    subject = active_holds([_hold(subject_id="u2")], now)
    assert retained("t_1000", "u2", "2026-08-01T00:00:00.000Z", now, subject)
    assert not retained("t_1000", "u1", "2026-08-01T00:00:00.000Z", now, subject)
    assert active_holds([hold], "2027-01-01T00:00:00.000Z") == ()  # lapsed at its end
    assert active_holds([_hold(released_at="2026-08-01T00:00:00.000Z")], now) == ()


def test_hold_records_round_trip_through_the_archive() -> None:
    archive = InMemoryArchive()
    now = dt.datetime.now(dt.UTC)
    until = format_time(now + dt.timedelta(days=30))
    first = LegalHold("h_a", "t_1000", "", until, format_time(now), "case 1")
    second = LegalHold("h_b", "t_1001", "u_9", until, format_time(now + dt.timedelta(seconds=1)), "case 2")
    write_hold(archive, first, Period.parse("7y"), now)
    write_hold(archive, second, Period.parse("7y"), now)
    released = write_release(archive, first, "closed", Period.parse("7y"), now)
    assert read_holds(archive) == [released, second]
    assert archive.retention("holds/h_a.json").retain_until > now + dt.timedelta(days=365 * 6)


# --------------------------------------------------------------------------- verify and expire


def _archive(events: int, start: dt.datetime) -> tuple[InMemoryArchive, object]:
    archive = InMemoryArchive()
    built = build_logs(archive, None, events, logs=1, block_size=4, retention=POLICY, start=start)
    return archive, built


LOG0 = "audit.events.p0"


def _age(archive: InMemoryArchive, prefix: str = "logs/") -> None:
    """Lets every lock under `prefix` pass (what time does to short retention)."""
    past = Retention("COMPLIANCE", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    for key, versions in archive.objects.items():
        if key.startswith(prefix) and ("/blocks/" in key or "/tile/entries/" in key):
            for version in versions:
                version.retention = past


def _replay(archive: InMemoryArchive, verifier, clock: RetentionClock):
    from pipelines.archive_history import check_archive_log

    return check_archive_log(archive, "audit.events.p0", verifier, "auditlog.test/audit.events.p0", clock=clock)


def test_blocks_are_locked_as_long_as_their_longest_class() -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    archive, _ = _archive(40, start)
    for key in archive.keys("logs/audit.events.p0/blocks/"):
        _, entries = _block(archive, key)
        longest = max(entry_until(e) for e in entries)
        lock = archive.retention(key).retain_until
        if longest > format_time(dt.datetime.now(dt.UTC)):
            assert format_time(lock) == longest
        else:  # every event had expired when the block was sealed: the shortest lock
            assert lock < dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    for key in archive.keys("logs/audit.events.p0/checkpoints/"):
        assert archive.retention(key).retain_until > dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * 6)


def test_expire_keeps_what_is_retained_or_held_and_verify_tells_expired_from_deleted() -> None:
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=400)  # billing (7y) retained; standard, admin-view, short ended
    archive, built = _archive(80, start)
    verifier = built.signer.verifier()
    clock = RetentionClock.at(now)
    before = _replay(archive, verifier, clock)
    assert before.findings == [] and before.expired_events > 0 and before.expired_blocks == 0
    report = expire_archive(archive, [], Period.parse("7y"), dry_run=True)
    # Nothing with a retained event is unlocked yet. A block whose every event had expired when it
    # was sealed holds the shortest lock (1 s), which may pass while this test runs.
    sealed_expired = sum(
        max(entry_until(e) for e in _block(archive, key)[1]) <= format_time(now)
        for key in archive.keys("logs/audit.events.p0/blocks/")
    )
    assert report.expired_blocks <= sealed_expired
    assert report.locked + report.expired_blocks == report.blocks_checked

    _age(archive)
    archive_before = archive.keys(f"logs/{LOG0}/")
    hold = LegalHold("h1", "t_1000", "", format_time(now + dt.timedelta(days=1)), format_time(start), "case")
    report = expire_archive(archive, [hold], Period.parse("7y"))
    assert report.expired_blocks > 0 and report.held > 0 and not report.refused
    for index in range(len(before.headers)):
        key = block_key("audit.events.p0", index)
        if not archive.object_versions(key):  # expired: its leaf hashes stay
            header, hashes, until = decode_expired_block(archive.get(expired_key("audit.events.p0", index)))
            assert header == before.headers[index] and until <= format_time(now)
        else:
            _, entries = _block(archive, key)
            kept = any(entry_until(e) > format_time(now) for e in entries)
            held = any(json.loads(e)["tenant_id"] == "t_1000" for e in entries)
            assert kept or held
            if held and not kept:
                assert archive.legal_hold(key, archive.object_versions(key)[0].version_id)

    # An entry bundle went exactly when every block it held events of had expired; a kept or held
    # block's bundles stay (the held ones under a legal hold), and the hash tiles all stay.
    live = [before.headers[i] for i in range(len(before.headers)) if archive.object_versions(block_key(LOG0, i))]
    expired_ranges = [
        (h.first_leaf_index, h.tree_size)
        for i, h in before.headers.items()
        if not archive.object_versions(block_key(LOG0, i))
    ]
    for key in [k for k in archive_before if "/tile/entries/" in k]:
        tile = parse_tile_path(key[len(f"logs/{LOG0}/") :])
        overlaps = [h for h in live if h.first_leaf_index < tile.end and h.tree_size > tile.start]
        covered = all(any(a <= i < b for a, b in expired_ranges) for i in range(tile.start, tile.end))
        assert bool(archive.object_versions(key)) == (not covered), key
        assert covered or overlaps
    assert [k for k in archive_before if "/tile/entries/" not in k and "/tile/" in k] == [
        k for k in archive.keys(f"logs/{LOG0}/tile/") if "/tile/entries/" not in k
    ]
    for header in live:
        held_block = archive.legal_hold(
            block_key(LOG0, header.block_index),
            archive.object_versions(block_key(LOG0, header.block_index))[0].version_id,
        )
        for key in bundle_keys(archive, LOG0, header.first_leaf_index, header.tree_size):
            if held_block:
                assert archive.legal_hold(key, archive.object_versions(key)[0].version_id), key

    after = _replay(archive, verifier, clock)
    assert after.findings == [] and after.expired_blocks == report.expired_blocks
    assert after.tree.root() == before.tree.root()  # every retained event's proof still holds
    assert after.expired_events == before.expired_events


def test_a_block_removed_before_its_retention_ended_is_deleted_not_expired() -> None:
    now = dt.datetime.now(dt.UTC)
    archive, built = _archive(12, now)  # nothing has expired
    key = block_key("audit.events.p0", 1)
    header, entries = _block(archive, key)
    until = max(entry_until(e) for e in entries)
    archive.put_immutable(
        expired_key("audit.events.p0", 1), encode_expired_block(header, [leaf_hash(e) for e in entries], until)
    )
    archive.objects.pop(key)  # what only a broken lock allows
    replayed = _replay(archive, built.signer.verifier(), RetentionClock.at(now))
    assert [(f.kind, f.block_index) for f in replayed.findings] == [(Kind.DELETED, 1)]
    assert "before its retention ended" in replayed.findings[0].detail


def test_a_missing_row_is_expired_by_policy_only_once_its_retention_ended() -> None:
    now = dt.datetime.now(dt.UTC)
    archive, built = _archive(40, now - dt.timedelta(days=100))
    clock = RetentionClock.at(now)
    log = _replay(archive, built.signer.verifier(), clock)
    entries = {}
    for index in range(len(log.headers)):
        _, block = archive.read_block("audit.events.p0", index)
        first = log.headers[index].first_leaf_index
        entries.update({first + i: e for i, e in enumerate(block)})
    expired = [i for i, e in entries.items() if entry_until(e) <= clock.now]
    kept = [i for i, e in entries.items() if entry_until(e) > clock.now]
    assert expired and kept
    found = compare_rows(log, entries, [], {}, clock)  # ClickHouse lost every row
    assert {f.leaf_index for f in found} == set(kept) and {f.kind for f in found} == {Kind.DELETED}
    assert len(compare_rows(log, entries, [], {})) == len(entries)  # without retention, all are deleted
    for index in sorted(log.partial_rows):
        rows = log.expected_rows(index)
        want = [i for i in kept if log.headers[index].first_leaf_index <= i < log.headers[index].tree_size]
        assert (rows.rows if rows else 0) == len(want)


def test_an_expired_block_with_a_wrong_leaf_breaks_the_chain() -> None:
    now = dt.datetime.now(dt.UTC)
    archive, built = _archive(12, now - dt.timedelta(days=400))
    _age(archive)
    expire_archive(archive, [], Period.parse("7y"))
    keys = archive.keys("logs/audit.events.p0/expired/")
    assert keys
    header, hashes, until = decode_expired_block(archive.get(keys[0]))
    forged = encode_expired_block(header, [bytes(32), *hashes[1:]], until)
    archive.objects[keys[0]][-1].data = forged
    check = ArchiveLogCheck("audit.events.p0", built.signer.verifier(), "auditlog.test/audit.events.p0")
    index = int(keys[0].rsplit("/", 1)[1].split(".")[0])
    for i in range(index):
        data = archive.get(block_key("audit.events.p0", i))
        assert check.add_block(i, ArchivedObject(block_key("audit.events.p0", i), data, 1, False, data))
    assert check.add_expired_block(index, ArchivedObject(keys[0], forged, 1, False, forged)) is None
    assert [f.kind for f in check.log.findings] == [Kind.CHAIN_BROKEN]


def test_rows_left_after_their_retention_must_still_be_true_copies() -> None:
    from pipelines.io.clickhouse.compare import IndexedRow, check_leftover_rows

    now = dt.datetime.now(dt.UTC)
    archive, built = _archive(12, now - dt.timedelta(days=400))
    log = _replay(archive, built.signer.verifier(), RetentionClock.at(now))
    _, entries = archive.read_block("audit.events.p0", 0)
    header = log.headers[0]

    def row(index: int, canonical: bytes, **changes: object) -> IndexedRow:
        doc = json.loads(canonical)
        base = IndexedRow(
            index,
            doc["tenant_id"],
            doc["event_id"],
            leaf_hash(canonical),
            leaf_hash(canonical),
            header.block_index,
            header.hash(),
            (),
            canonical,
            doc["occurred_at"],
        )
        return dataclasses.replace(base, **changes)

    genuine = row(1, entries[1])
    assert check_leftover_rows(log, [genuine]) == []
    from transforms.jcs import canonicalize

    doc = json.loads(entries[1])
    doc["result"] = "FAILURE" if doc["result"] == "SUCCESS" else "SUCCESS"
    edited = canonicalize(doc)
    kinds = [
        f.kind
        for f in check_leftover_rows(
            log,
            [
                row(1, edited),  # edited bytes
                row(2, entries[2], bad_columns=("retain_until",)),  # a column that disagrees
                row(2, entries[2]),  # a second copy of the same event
                row(log.size + 5, entries[3]),  # beyond the archive
            ],
        )
    ]
    assert kinds == [Kind.MODIFIED, Kind.MODIFIED, Kind.INSERTED, Kind.INSERTED]
