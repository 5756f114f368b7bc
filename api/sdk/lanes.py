"""Priority lanes: which path an event takes, chosen by its action (the seed's outbox-vs-Kafka decision).

Compliance-critical actions (RBAC changes, API key creation, billing) go through the
transactional outbox — committed with the application's own data, so none is lost if the process
dies after the commit. High-volume, lower-priority ones (reads, status checks) go straight to
Kafka. A third lane, `gateway`, sends through the gRPC gateway and returns the leaf hash.

Rules are action glob patterns (`fnmatch`, case-sensitive); the first match wins, else `default`.
A TOML (or JSON, same shape) file::

    default = "direct"
    rules = [
      { pattern = "ROLE_*",      lane = "outbox" },
      { pattern = "rbac.*",      lane = "outbox" },
      { pattern = "api_key.*",   lane = "outbox" },
      { pattern = "billing.*",   lane = "outbox" },
      { pattern = "document.*",  lane = "gateway" },
    ]

    lanes = Lanes.from_file("lanes.toml")
    lanes.lane_for("billing.plan.update")   # "outbox"
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any

from transforms.errors import AuditlogError

__all__ = ["DIRECT", "GATEWAY", "LANES", "OUTBOX", "SEED_LANES", "LaneConfigError", "Lanes"]

OUTBOX = "outbox"
DIRECT = "direct"
GATEWAY = "gateway"
LANES = (OUTBOX, DIRECT, GATEWAY)


class LaneConfigError(AuditlogError, ValueError):
    """A lanes configuration names an unknown lane or is malformed."""


@dataclass(frozen=True)
class Lanes:
    """Ordered (pattern, lane) rules and a default lane."""

    rules: tuple[tuple[str, str], ...] = ()
    default: str = DIRECT

    def __post_init__(self) -> None:
        for pattern, lane in (*self.rules, ("<default>", self.default)):
            if lane not in LANES:
                raise LaneConfigError(f"rule {pattern!r} names lane {lane!r}; lanes are {', '.join(LANES)}")
            if not isinstance(pattern, str) or not pattern:
                raise LaneConfigError(f"a rule's pattern must be a non-empty string, not {pattern!r}")
        # A bounded memo per instance: actions are few, matching is per event.
        object.__setattr__(self, "_memo", lru_cache(maxsize=4096)(self._match))

    def _match(self, action: str) -> str:
        for pattern, lane in self.rules:
            if fnmatchcase(action, pattern):
                return lane
        return self.default

    def lane_for(self, action: str) -> str:
        """The lane of an action: the first rule whose pattern matches, else the default."""
        return self._memo(action)  # type: ignore[attr-defined,no-any-return]

    @classmethod
    def from_rules(cls, rules: Iterable[tuple[str, str]], default: str = DIRECT) -> Lanes:
        return cls(tuple((str(p), str(lane)) for p, lane in rules), default)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], source: str = "lanes config") -> Lanes:
        """From `{"default": lane, "rules": [{"pattern": ..., "lane": ...}, ...]}`."""
        unknown = set(config) - {"default", "rules"}
        if unknown:
            raise LaneConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; use default and rules")
        rules = []
        for number, rule in enumerate(config.get("rules", []), 1):
            if not isinstance(rule, Mapping) or set(rule) != {"pattern", "lane"}:
                raise LaneConfigError(
                    f'{source}: rule {number} must be {{pattern = "...", lane = "..."}}, not {rule!r}'
                )
            rules.append((rule["pattern"], rule["lane"]))
        try:
            return cls.from_rules(rules, config.get("default", DIRECT))
        except LaneConfigError as exc:
            raise LaneConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Lanes:
        """Reads a `.toml` or `.json` lanes file."""
        path = Path(path)
        text = path.read_text()
        try:
            config = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise LaneConfigError(f"{path}: {exc}") from None
        return cls.from_mapping(config, str(path))


SEED_LANES = Lanes.from_rules(
    [
        ("ROLE_*", OUTBOX),
        ("role.*", OUTBOX),
        ("rbac.*", OUTBOX),
        ("permission.*", OUTBOX),
        ("api_key.*", OUTBOX),
        ("billing.*.view", DIRECT),
        ("billing.*", OUTBOX),
    ],
    default=DIRECT,
)
"""The seed's decision: RBAC changes, API key creations and billing through the outbox; the rest direct."""
