"""`auditlog produce`'s record generator, and its error when Kafka is not there (no services).

The round trips through real Kafka are in tests/integration/test_produce.py.
"""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from runners.commands.produce import (
    DUPLICATE,
    EVENT,
    MALFORMED_KINDS,
    ProduceError,
    Record,
    generate_records,
    produce_records,
)
from schemas.events import EventValidationError, parse_event
from schemas.settings import Settings


def test_the_same_seed_gives_the_same_records_in_the_same_order() -> None:
    first = list(generate_records(2000, tenants=4, duplicates=0.1, malformed=0.05, seed=9))

    assert first == list(generate_records(2000, tenants=4, duplicates=0.1, malformed=0.05, seed=9))
    assert first != list(generate_records(2000, tenants=4, duplicates=0.1, malformed=0.05, seed=10))


def test_requested_fractions_are_roughly_honoured_and_every_kind_appears() -> None:
    records = list(generate_records(10_000, tenants=5, duplicates=0.05, malformed=0.03, seed=1))
    kinds = Counter(r.kind for r in records)
    malformed = sum(n for kind, n in kinds.items() if kind.startswith("malformed:"))

    assert len(records) == 10_000
    assert 400 <= kinds[DUPLICATE] <= 600
    assert 220 <= malformed <= 380
    assert {f"malformed:{way}" for way in MALFORMED_KINDS} <= set(kinds)
    plain = list(generate_records(500, duplicates=0, malformed=0))
    assert len(plain) == 500 and all(r.kind == EVENT for r in plain)


def test_malformed_records_fail_validation_and_the_rest_pass() -> None:
    checked: Counter[bool] = Counter()
    for record in generate_records(3000, tenants=3, duplicates=0.05, malformed=0.2, seed=2):
        malformed = record.kind.startswith("malformed:")
        if malformed:
            with pytest.raises(EventValidationError):
                parse_event(record.value)
        else:
            event = parse_event(record.value)
            assert record.key == event["tenant_id"].encode()
        checked[malformed] += 1
    assert checked[True] > 400 and checked[False] > 2000, checked  # both branches ran, many times


def test_malformed_records_are_keyed_by_a_real_tenant() -> None:
    tenants = {f"t_{1000 + i}".encode() for i in range(3)}
    assert {r.key for r in generate_records(2000, tenants=3, malformed=0.5, seed=4)} == tenants


def test_duplicates_repeat_an_earlier_event_exactly_and_later() -> None:
    seen: set[tuple[bytes, bytes]] = set()
    duplicates = 0
    for record in generate_records(5000, tenants=3, duplicates=0.1, seed=5):
        if record.kind == DUPLICATE:
            assert (record.key, record.value) in seen
            duplicates += 1
        else:
            assert (record.key, record.value) not in seen
            seen.add((record.key, record.value))
    assert duplicates > 0


@pytest.mark.parametrize(("duplicates", "malformed"), [(-0.1, 0), (0.6, 0.4), (0, 1.0)])
def test_impossible_fractions_are_refused(duplicates: float, malformed: float) -> None:
    with pytest.raises(ValueError, match="fractions"):
        next(generate_records(10, duplicates=duplicates, malformed=malformed))


def test_an_unreachable_kafka_is_a_quick_clear_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(kafka_port=port)
    began = time.monotonic()

    with pytest.raises(ProduceError, match=f"127.0.0.1:{port} did not answer.*auditlog stack up"):
        produce_records(settings, iter([Record(b"t", b"{}", EVENT)]), progress=False, connect_timeout_s=2)
    assert time.monotonic() - began < 10
