"""The ingest job's JVM batcher (pipelines/jvm: RecordBatcher) against the Python frame reader.

A real local mini-cluster runs records through `batched_by_partition` into a keyed Python
function that reads each frame with `read_batch` (tests/integration/batcher_job.py). What comes
out must be every record, of each partition in its order, with null and empty fields kept apart,
in batches no larger than the limits, and the last partial batches handed on before the final
watermark (which seals the job's open blocks).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from infra.jars import ensure_operators
from pipelines.batches import BATCH_BYTES, BATCH_RECORDS
from schemas.settings import Settings

pytestmark = pytest.mark.integration

JOB = Path(__file__).with_name("batcher_job.py")


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _shown(field: object) -> object:
    """As batcher_job.py shows a field: a hex string over 4 KiB of bytes as its length and SHA-256."""
    if isinstance(field, str) and len(field) > 2 * 4096:
        data = bytes.fromhex(field)
        return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"
    return field


def _records() -> list[list[object]]:
    """(partition, offset, timestamp, key, value, signature) with the bytes as hex, interleaved by offset."""
    rng = random.Random(7)
    records: list[list[object]] = []
    for partition, count in {0: 2 * BATCH_RECORDS + 17, 1: 3, 5: 1}.items():
        for offset in range(count):
            value = rng.randbytes(rng.randrange(0, 40))
            key = None if offset % 3 == 0 else value[:5]
            signature = None if offset % 4 else b"sig-%d" % offset
            records.append([partition, offset, 1_700_000_000_000 + offset, _hex(key), _hex(value), _hex(signature)])
    # Empty (not null) fields, a null value, and one value larger than a whole batch may be.
    records.append([1, 3, 1, "", None, ""])
    records.append([1, 4, 2, None, _hex(b"x" * (BATCH_BYTES + 10)), None])
    records.append([1, 5, 3, _hex(b"k"), "", None])
    # The source hands records on in list order: each partition by offset, the partitions interleaved.
    records.sort(key=lambda r: (r[1], r[0]))  # type: ignore[arg-type,return-value]
    return records


def test_every_record_comes_back_in_partition_order_in_bounded_batches(tmp_path: Path) -> None:
    records = _records()
    spec = tmp_path / "records.json"
    spec.write_text(json.dumps(records))
    jar = ensure_operators(Settings.from_env())

    run = subprocess.run(
        [sys.executable, str(JOB), str(spec), str(jar)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "AUDITLOG_HOME": str(tmp_path / "home")},
    )

    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    lines = [line for line in lines if "marker" not in line]  # before checkpoints: none is forced here
    batches = [line for line in lines if "end" not in line]
    ended: set[int] = set()
    got: dict[int, list[list[object]]] = {}
    for line in lines:  # the final watermark reaches a partition's function after its last batch
        if "end" in line:
            ended.add(line["end"])
        else:
            assert line["partition"] not in ended, f"a batch of partition {line['partition']} came after its end"
    assert ended == {0, 1, 5}
    for batch in batches:
        assert batch["records"], "an empty batch was handed on"
        assert all(r[0] == batch["partition"] for r in batch["records"])
        assert len(batch["records"]) <= BATCH_RECORDS
        got.setdefault(batch["partition"], []).extend(batch["records"])
    want: dict[int, list[list[object]]] = {}
    for record in records:
        want.setdefault(record[0], []).append([_shown(field) for field in record])  # type: ignore[arg-type]
    assert got == want
    assert sum(1 for b in batches if b["partition"] == 0) >= 3  # 1,017 records: cut by count, then the rest at the end
