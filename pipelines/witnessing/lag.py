"""How far each witness is behind on each log: rows for `auditlog witness status`, gauges for /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.witnessing.stored import list_cosigned, list_refusals, safe_name
from pipelines.witnessing.witness import Witness


@dataclass
class WitnessLag:
    witness: str
    log_id: str
    newest_size: int
    cosigned_size: int  # -1 when none
    checkpoints_behind: int
    refused: str = ""
    error: str = ""
    refusals: int = 0  # refusals stored as evidence in the archive

    @property
    def leaves_behind(self) -> int:
        return self.newest_size - max(self.cosigned_size, 0)


def witness_lag(archive: Any, witnesses: list[Witness]) -> list[WitnessLag]:
    """Lag of each witness on each log, read from the archive alone."""
    rows = []
    for log_id in archive.list_logs():
        sizes = archive.list_checkpoints(log_id)
        if not sizes:
            continue
        stored = list_cosigned(archive, log_id)
        refusals = list_refusals(archive, log_id)
        for witness in witnesses:
            have = stored.get((safe_name(witness.verifier.name), f"{witness.verifier.key_id:08x}"), [])
            newest_cosigned = max(have, default=-1)
            marker = f".{safe_name(witness.verifier.name)}.{witness.verifier.key_id:08x}."
            refused = [k for k in refusals if marker in k]
            rows.append(
                WitnessLag(
                    witness.name,
                    log_id,
                    sizes[-1],
                    newest_cosigned,
                    sum(1 for s in sizes if s > newest_cosigned),
                    refused=f"{len(refused)} refusal(s) recorded" if refused else "",
                    refusals=len(refused),
                )
            )
    return rows


_GAUGES: tuple[tuple[str, str, Callable[[WitnessLag], int]], ...] = (
    (
        "auditlog_witness_checkpoints_behind",
        "Checkpoints of the log newer than the newest one the witness cosigned.",
        lambda r: r.checkpoints_behind,
    ),
    (
        "auditlog_witness_leaves_behind",
        "Leaves between the log's newest checkpoint and the newest one the witness cosigned.",
        lambda r: r.leaves_behind,
    ),
    (
        "auditlog_witness_cosigned_tree_size",
        "Tree size of the newest checkpoint the witness cosigned (-1: none yet).",
        lambda r: r.cosigned_size,
    ),
    (
        "auditlog_witness_refusals",
        "Refusals by the witness stored as evidence in the archive (a split view or a rollback).",
        lambda r: r.refusals,
    ),
)


def lag_metrics(rows: list[WitnessLag]) -> str:
    """Each witness's lag on each log as Prometheus text-format gauges (`auditlog serve`'s /metrics)."""

    def label(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    lines = []
    for name, help_text, value in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{witness="{label(r.witness)}",log="{label(r.log_id)}"}} {value(r)}' for r in rows]
    return "\n".join(lines) + "\n"


class LagMetrics:
    """`lag_metrics` of an archive, read at most every `max_age_s` seconds (scrapes list the archive)."""

    def __init__(self, archive: Any, witnesses: list[Witness], max_age_s: float = 15.0) -> None:
        self.archive = archive
        self.witnesses = witnesses
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._text = ""
        self._read_at = -float("inf")

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() - self._read_at >= self.max_age_s:
                self._text = lag_metrics(witness_lag(self.archive, self.witnesses))
                self._read_at = time.monotonic()
            return self._text
