"""The gateway and hostile input: erased actors are logged as the job logs them; bad dates are INVALID_ARGUMENT."""

from __future__ import annotations

import threading
from typing import Any

from api.gateway.intake import EventIntake, MemoryAckSink
from pipelines.io.keystore import InMemoryKeyStore
from schemas.samples import EventGenerator
from tests.unit.test_gateway import log_leaves


def test_an_erased_actors_event_is_accepted_with_the_leaf_the_job_will_store() -> None:
    keys = InMemoryKeyStore()
    event: dict[str, Any] = EventGenerator(seed=3).event()
    event["actor"] = {**event["actor"], "email": "gone@example.org", "name": "Gone"}
    keys.destroy(event["tenant_id"], event["actor"]["id"])
    sink = MemoryAckSink()
    intake = EventIntake(keys, sink)
    box: list[Any] = []
    done = threading.Event()
    intake.submit(intake.validate([event]), lambda r: (box.append(r), done.set()))
    assert done.wait(5)
    (receipt,) = box[0]
    assert keys.get(event["tenant_id"], event["actor"]["id"]) is None, "an erased subject got keys again"
    assert log_leaves(sink.records, keys) == {event["event_id"]: receipt.verification_hash}


def test_a_date_that_overflows_in_utc_is_invalid_argument_not_unknown() -> None:
    import pytest

    from api.gateway.intake import InvalidEvent

    intake = EventIntake(InMemoryKeyStore(), MemoryAckSink())
    for when in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        event: dict[str, Any] = {**EventGenerator(seed=4).event(), "occurred_at": when}
        with pytest.raises(InvalidEvent, match="outside the years 0001-9999"):
            intake.validate([event])
