"""The gateway logs an erased subject's events as the ingest job does: PII marked erased, no key made."""

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
