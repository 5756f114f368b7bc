"""What `auditlog verify` reports: per log and in all (`LogReport`, `VerifyReport`), and the witness file.

The witness file keeps each log's newest checkpoint from the previous clean verify, so that the
next one can tell a rolled-back or forked archive from a grown one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transforms.errors import VerificationError
from transforms.verify import ArchiveLog, Finding


@dataclass
class LogReport:
    log_id: str
    events: int = 0
    blocks: int = 0
    expired_events: int = 0
    expired_blocks: int = 0
    checkpoint_size: int = 0
    checkpoint_root: str = ""
    checkpoint_note: str = ""
    findings: list[Finding] = field(default_factory=list)
    tiles: int = 0  # tlog-tiles objects found as the blocks say (0: the log has none; `auditlog tiles migrate`)

    @classmethod
    def of(cls, archived: ArchiveLog, findings: list[Finding], blocks: int | None = None) -> LogReport:
        """The report of one log: what the archive proved, and the findings about it."""
        committed = archived.committed
        return cls(
            archived.log_id,
            events=archived.events,
            blocks=len(archived.headers) if blocks is None else blocks,
            expired_events=archived.expired_events,
            expired_blocks=archived.expired_blocks,
            checkpoint_size=committed.size if committed else 0,
            checkpoint_root=committed.root.hex() if committed else "",
            checkpoint_note=archived.committed_note,
            findings=findings,
            tiles=archived.tiles_checked,
        )

    def to_json(self) -> dict[str, Any]:
        """Everything in the report, as the pipeline writes it for the caller (`from_json` reads it)."""
        return {
            "log_id": self.log_id,
            "events": self.events,
            "blocks": self.blocks,
            "expired_events": self.expired_events,
            "expired_blocks": self.expired_blocks,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_root": self.checkpoint_root,
            "checkpoint_note": self.checkpoint_note,
            "findings": [f.to_json() for f in self.findings],
            "tiles": self.tiles,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogReport:
        fields = {k: v for k, v in data.items() if k != "findings"}
        return cls(**fields, findings=[Finding.from_json(f) for f in data["findings"]])


@dataclass
class VerifyReport:
    logs: list[LogReport]

    @property
    def findings(self) -> list[Finding]:
        return [f for report in self.logs for f in report.findings]

    @property
    def events(self) -> int:
        return sum(r.events for r in self.logs)

    @property
    def expired_events(self) -> int:
        return sum(r.expired_events for r in self.logs)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "expired_by_policy": self.expired_events,
            "logs": [
                {
                    "log_id": r.log_id,
                    "events": r.events,
                    "blocks": r.blocks,
                    "expired_by_policy": {"events": r.expired_events, "blocks": r.expired_blocks},
                    "checkpoint": {"size": r.checkpoint_size, "root": r.checkpoint_root},
                    "tiles": r.tiles,
                    "findings": [f.to_json() for f in r.findings],
                }
                for r in self.logs
            ],
            "findings_by_kind": _count_by(self.findings, lambda f: f"{f.store.value}: {f.kind.value}"),
        }


def _count_by(findings: Iterable[Finding], key: Callable[[Finding], str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[key(f)] = counts.get(key(f), 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- the witness


def load_witnesses(path: Path) -> dict[str, str]:
    """Returns {log id: signed checkpoint} a previous clean verify saw (empty if none yet)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.get("logs", {}).items()}
    except (ValueError, AttributeError) as exc:
        raise VerificationError(
            f"witness file {path} is not valid JSON ({exc}); move it aside to start afresh"
        ) from exc


def save_witnesses(path: Path, report: VerifyReport, previous: dict[str, str]) -> None:
    """Records each cleanly verified log's newest checkpoint, so a later rollback or fork is caught."""
    logs = dict(previous)
    for r in report.logs:
        if r.checkpoint_note and not r.findings:
            logs[r.log_id] = r.checkpoint_note
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"logs": logs}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
