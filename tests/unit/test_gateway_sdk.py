"""The SDK without services: event ids and times, lanes, the SQLite outbox and its forwarder, routing."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from api.sdk import SEED_LANES, AuditClient, Lanes, LaneUnavailable, create_outbox_table, record_in_transaction
from api.sdk.events import encode_event, new_event_id, time_from_millis, wire_event
from api.sdk.forwarder import ForwardError, OutboxForwarder
from api.sdk.lanes import LaneConfigError
from api.sdk.outbox import OutboxError, SqliteOutbox, open_outbox
from schemas.events import EventValidationError, parse_event
from schemas.samples import EventGenerator


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes = b"") -> None:
        self._p, self._o, self._v = partition, offset, value

    def value(self) -> bytes:
        return self._v

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class FakeProducer:
    """confluent_kafka.Producer's produce/poll/flush, in memory; `fail` makes every n-th delivery fail."""

    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.pending: list[Any] = []
        self.fail_every = fail_every

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.sent.append((topic, key, value))
        self.pending.append((on_delivery, len(self.sent), value))

    def poll(self, timeout: float = 0) -> int:
        pending, self.pending = self.pending, []
        for callback, n, value in pending:
            failed = self.fail_every and n % self.fail_every == 0
            callback("KafkaError{_MSG_TIMED_OUT}" if failed else None, FakeMessage(0, n - 1, value))
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


def events(n: int, seed: int = 5) -> list[dict[str, Any]]:
    gen = EventGenerator(seed=seed)
    return [gen.event() for _ in range(n)]


# --------------------------------------------------------------------------- events


def test_event_ids_are_uuid7_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


@pytest.mark.parametrize(
    ("millis", "text"),
    [(0, "1970-01-01T00:00:00.000Z"), (1779421200999, "2026-05-22T03:40:00.999Z"), (-1, "1969-12-31T23:59:59.999Z")],
)
def test_millis_become_the_canonical_time(millis: int, text: str) -> None:
    assert time_from_millis(millis) == text


def test_wire_event_fills_id_and_time_and_round_trips_through_parse_event() -> None:
    event = events(1)[0]
    del event["event_id"], event["occurred_at"]
    wire = wire_event(event)
    assert wire["event_id"] and wire["occurred_at"].endswith("Z") and "event_id" not in event
    assert parse_event(encode_event(wire)) == wire


def test_wire_event_accepts_millis_and_aware_datetimes_but_not_naive_ones() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    event = events(1)[0]
    assert wire_event({**event, "occurred_at": 1779421200123})["occurred_at"] == "2026-05-22T03:40:00.123Z"
    local = datetime(2026, 5, 22, 5, 40, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert wire_event({**event, "occurred_at": local})["occurred_at"] == "2026-05-22T03:40:00.123Z"
    with pytest.raises(EventValidationError, match="occurred_at"):
        wire_event({**event, "occurred_at": datetime(2026, 5, 22)})
    assert wire_event({**event, "occurred_at": datetime(2026, 5, 22, tzinfo=UTC)})["occurred_at"].startswith("2026")


# --------------------------------------------------------------------------- lanes


def test_seed_lanes_put_compliance_actions_in_the_outbox() -> None:
    assert SEED_LANES.lane_for("ROLE_UPGRADE") == "outbox"
    assert SEED_LANES.lane_for("api_key.create") == "outbox"
    assert SEED_LANES.lane_for("billing.plan.update") == "outbox"
    assert SEED_LANES.lane_for("billing.invoice.view") == "direct"
    assert SEED_LANES.lane_for("document.read") == "direct"


def test_lanes_from_toml_and_json_files(tmp_path: Path) -> None:
    toml = tmp_path / "lanes.toml"
    toml.write_text(
        'default = "gateway"\nrules = [\n  { pattern = "ROLE_*", lane = "outbox" },\n'
        '  { pattern = "*.read", lane = "direct" },\n]\n'
    )
    lanes = Lanes.from_file(toml)
    assert [lanes.lane_for(a) for a in ("ROLE_X", "document.read", "user.login")] == ["outbox", "direct", "gateway"]
    as_json = tmp_path / "lanes.json"
    as_json.write_text(json.dumps({"rules": [{"pattern": "billing.*", "lane": "outbox"}]}))
    assert Lanes.from_file(as_json).lane_for("billing.x") == "outbox"
    assert Lanes.from_file(as_json).lane_for("x") == "direct"
    assert AuditClient(lanes=str(toml)).lane_for({"action": "ROLE_X"}) == "outbox"


@pytest.mark.parametrize(
    "config",
    [{"rules": [{"pattern": "a*", "lane": "kafka"}]}, {"rules": [{"pattern": "a*"}]}, {"lanes": []}, {"default": "x"}],
)
def test_bad_lane_configs_say_what_is_wrong(config: dict[str, Any]) -> None:
    with pytest.raises(LaneConfigError):
        Lanes.from_mapping(config)


# --------------------------------------------------------------------------- the SQLite outbox


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE roles (user_id TEXT PRIMARY KEY, role TEXT)")
    create_outbox_table(conn)
    conn.close()
    return path


def test_the_outbox_row_commits_and_rolls_back_with_the_business_change(app_db: Path) -> None:
    conn = sqlite3.connect(app_db)
    first, second = events(2)
    with conn:
        conn.execute("INSERT INTO roles VALUES ('u_1', 'admin')")
        record_in_transaction(conn, first)
    with pytest.raises(RuntimeError), conn:
        conn.execute("INSERT INTO roles VALUES ('u_2', 'admin')")
        record_in_transaction(conn, second)
        raise RuntimeError("the application fails before commit")
    rows = conn.execute("SELECT event_id, tenant_id, payload FROM auditlog_outbox").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(first["event_id"], first["tenant_id"])]
    assert parse_event(rows[0][2])["event_id"] == first["event_id"]
    assert conn.execute("SELECT count(*) FROM roles").fetchone()[0] == 1


def test_an_invalid_event_writes_nothing_and_a_missing_table_is_explained(tmp_path: Path, app_db: Path) -> None:
    conn = sqlite3.connect(app_db)
    with pytest.raises(EventValidationError, match="actor.type"):
        record_in_transaction(conn, {**events(1)[0], "actor": {"id": "u", "type": "ROBOT"}})
    empty = sqlite3.connect(tmp_path / "empty.db")
    with pytest.raises(OutboxError, match="outbox init"):
        record_in_transaction(empty, events(1)[0])
    with pytest.raises(OutboxError, match="sqlite3 or psycopg"):
        record_in_transaction(object(), events(1)[0])


def _fill(path: Path, n: int) -> list[str]:
    conn = sqlite3.connect(path)
    with conn:
        ids = [record_in_transaction(conn, e)["event_id"] for e in events(n)]
    conn.close()
    return ids


def test_the_forwarder_sends_in_id_order_then_deletes(app_db: Path) -> None:
    ids = _fill(app_db, 250)
    producer = FakeProducer()
    forwarder = OutboxForwarder(lambda: open_outbox(f"sqlite:///{app_db}"), producer, "audit.events", batch_size=100)
    stats = forwarder.run(until_empty=True)
    assert stats.forwarded == 250 and stats.batches == 3
    assert [json.loads(v)["event_id"] for _, _, v in producer.sent] == ids
    assert all(k == json.loads(v)["tenant_id"].encode() for _, k, v in producer.sent)
    assert SqliteOutbox(app_db).backlog() == 0


def test_unacknowledged_rows_stay_and_are_sent_again(app_db: Path) -> None:
    ids = _fill(app_db, 30)
    producer = FakeProducer(fail_every=7)
    forwarder = OutboxForwarder(lambda: open_outbox(f"sqlite:///{app_db}"), producer, "t", batch_size=30)
    with pytest.raises(ForwardError, match="4 of 30 rows were not acknowledged"):
        forwarder.forward_batch()
    assert SqliteOutbox(app_db).backlog() == 4
    producer.fail_every = 0
    assert forwarder.forward_batch() == 4
    sent = [json.loads(v)["event_id"] for _, _, v in producer.sent]
    assert set(sent) == set(ids) and len(sent) == 34  # at least once: 4 went twice


def test_a_sqlite_lease_keeps_a_second_forwarder_off_until_it_expires(app_db: Path) -> None:
    _fill(app_db, 10)
    crashed = SqliteOutbox(app_db, lease_s=0.3)
    assert len(crashed.claim(10)) == 10  # ... and the process dies here
    other = SqliteOutbox(app_db)
    assert other.claim(10) == []
    other.release()
    import time

    time.sleep(0.35)
    assert len(other.claim(10)) == 10


def test_the_forwarder_retries_with_backoff_until_kafka_acks(app_db: Path) -> None:
    import threading

    _fill(app_db, 10)
    producer = FakeProducer(fail_every=1)
    lines: list[str] = []
    stop = threading.Event()
    forwarder = OutboxForwarder(
        lambda: open_outbox(f"sqlite:///{app_db}"), producer, "t", backoff_s=(0.01, 0.05), say=lines.append
    )

    def heal() -> None:
        while len(lines) < 3:
            stop.wait(0.01)
        producer.fail_every = 0

    threading.Thread(target=heal).start()
    stats = forwarder.run(stop, until_empty=True)
    assert stats.forwarded == 10 and stats.retries >= 3 and "retrying in" in lines[0]


# --------------------------------------------------------------------------- AuditClient routing


def test_the_client_routes_by_action(app_db: Path) -> None:
    client = AuditClient(kafka_bootstrap="unused:9092", outbox_dsn=f"sqlite:///{app_db}", lanes=SEED_LANES)
    producer = FakeProducer()
    client._producer = producer
    sample = events(200)
    receipts = [client.record(e) for e in sample]
    client.flush()
    outbox = {r[0] for r in sqlite3.connect(app_db).execute("SELECT event_id FROM auditlog_outbox")}
    direct = {json.loads(v)["event_id"] for _, _, v in producer.sent}
    for event, receipt in zip(sample, receipts, strict=True):
        lane = SEED_LANES.lane_for(event["action"])
        assert receipt.lane == lane
        assert event["event_id"] in (outbox if lane == "outbox" else direct)
    assert outbox and direct and not outbox & direct


def test_the_outbox_lane_joins_the_applications_transaction(app_db: Path) -> None:
    client = AuditClient(lanes=SEED_LANES)
    conn = sqlite3.connect(app_db)
    role_change = next(e for e in events(50) if e["action"].startswith("ROLE_"))
    conn.execute("INSERT INTO roles VALUES ('u_9', 'admin')")
    client.record(role_change, conn=conn)
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM auditlog_outbox").fetchone()[0] == 0
    with pytest.raises(LaneUnavailable, match="outbox"):
        client.record(role_change)
    with pytest.raises(LaneUnavailable, match="kafka_bootstrap"):
        client.record(next(e for e in events(50) if e["action"] == "document.read"))


def test_direct_lane_failures_surface_on_flush() -> None:
    from api.sdk import DeliveryError

    client = AuditClient(kafka_bootstrap="unused:9092")
    client._producer = FakeProducer(fail_every=2)
    first, second, third = events(3)
    client.record(first)
    client.record(second)  # its delivery fails
    with pytest.raises(DeliveryError, match=f"1 event.*{second['event_id']}"):
        client.record(third)  # ... and the next call says so, before sending anything
    client._producer.fail_every = 0
    client.record(third)
    client.flush()


def test_cli_outbox_init_and_status_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runners.cli import main

    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    dsn = f"sqlite:///{db}"
    assert main(["outbox", "status", "--dsn", dsn]) == 2
    assert "outbox init" in capsys.readouterr().err
    assert main(["outbox", "init", "--dsn", dsn]) == 0
    _fill(db, 3)
    assert main(["outbox", "status", "--dsn", dsn]) == 0
    assert "3 events waiting" in capsys.readouterr().out
    assert main(["outbox", "status", "--dsn", "mysql://x"]) == 2


def test_encode_event_writes_what_orjson_does_not():
    class Ratio(float):  # a float subclass (numpy's float64 is one)
        pass

    assert encode_event({"event_id": "e", "metadata": {"r": Ratio(1.5)}}) == b'{"event_id":"e","metadata":{"r":1.5}}'
