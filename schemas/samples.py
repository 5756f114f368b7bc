"""A realistic, reproducible audit event generator: tenants, people, systems, resources, actions.

Used by `auditlog demo`, `auditlog produce`, the tests and the benchmarks. The same seed always
gives the same events, so recordings and golden results can be regenerated.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

FIRST = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Alan", "Radia"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen", "Kay"]
ACTIONS = [
    ("ROLE_UPGRADE", "ROLE"),
    ("ROLE_DOWNGRADE", "ROLE"),
    ("api_key.create", "API_KEY"),
    ("api_key.rotate", "API_KEY"),
    ("billing.plan.update", "SUBSCRIPTION"),
    ("billing.invoice.view", "INVOICE"),
    ("admin.view", "USER"),
    ("user.login", "SESSION"),
    ("user.logout", "SESSION"),
    ("document.read", "DOCUMENT"),
    ("document.update", "DOCUMENT"),
    ("document.delete", "DOCUMENT"),
    ("db.table.alter", "DATABASE"),
]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/139.0",
    "curl/8.9.1",
    "auditlog-sdk-python/0.1",
    "okhttp/4.12",
]
EPOCH = datetime(2026, 5, 1, tzinfo=UTC)


def start_of_today() -> datetime:
    """Midnight UTC of the current day, as a start for generated events.

    Events from it are recent, so no retention class has ended for them, while the same seed
    still gives the same records all day.
    """
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


class EventGenerator:
    """Yields event dicts; `tenants` tenants with a fixed population each, time moving forward."""

    def __init__(self, seed: int = 42, tenants: int = 3, actors_per_tenant: int = 20, start: datetime = EPOCH) -> None:
        self.rng = random.Random(seed)
        self.tenants = [f"t_{1000 + i}" for i in range(tenants)]
        self.actors: dict[str, list[dict[str, str]]] = {}
        for t in self.tenants:
            people = []
            for j in range(actors_per_tenant):
                first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
                if j % 5 == 4:
                    people.append({"id": f"svc_{t}_{j}", "type": "SYSTEM"})
                else:
                    people.append(
                        {
                            "id": f"u_{t}_{j}",
                            "type": "USER",
                            "name": f"{first} {last}",
                            "email": f"{first}.{last}{j}@{t.replace('_', '')}.example".lower(),
                        }
                    )
            self.actors[t] = people
        self.clock = start
        self.counter = 0

    def event(self) -> dict[str, Any]:
        rng = self.rng
        self.counter += 1
        self.clock += timedelta(milliseconds=rng.randint(1, 400))
        tenant = rng.choice(self.tenants)
        actor = dict(rng.choice(self.actors[tenant]))
        action, rtype = rng.choice(ACTIONS)
        event: dict[str, Any] = {
            "event_id": f"evt_{rng.getrandbits(64):016x}",
            "tenant_id": tenant,
            "actor": actor,
            "action": action,
            "resource": {"id": f"{rtype.lower()}_{rng.randint(1, 500)}", "type": rtype},
            "result": "SUCCESS" if rng.random() < 0.93 else "FAILURE",
            "request_id": f"req_{rng.getrandbits(48):012x}",
            "occurred_at": self.clock.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.clock.microsecond // 1000:03d}Z",
            "metadata": {"source": rng.choice(["web", "api", "cli", "batch"]), "seq": self.counter},
        }
        if actor["type"] == "USER":
            event["client_ip"] = f"198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            event["user_agent"] = rng.choice(AGENTS)
        return event

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.event()


def to_record(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """Returns the Kafka (key, value) of an event: key = tenant_id, value = JSON."""
    return event["tenant_id"].encode(), json.dumps(event, separators=(",", ":")).encode()
