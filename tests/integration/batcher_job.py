"""A PyFlink job for tests/integration/test_record_batcher.py: records through the JVM batcher and back.

Reads a JSON list of records (partition, offset, timestamp, key/value/signature as hex or null)
from argv[1], runs them through `batched_by_partition` on a local mini-cluster, and prints one
JSON line per batch the keyed Python function received: its partition and its records as read
by `read_batch` (a field over 4 KiB as its length and SHA-256), a "marker" line for each barrier
marker, and per partition an "end" line when the final watermark fires its timer.

    python tests/integration/batcher_job.py records.json OPERATORS_JAR
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyflink.common import Row, Types  # noqa: E402
from pyflink.datastream import KeyedProcessFunction  # noqa: E402

from pipelines.batches import read_batch  # noqa: E402
from pipelines.ingest import batched_by_partition, create_environment, keyed_record_type  # noqa: E402
from pipelines.ingest_config import job_config  # noqa: E402
from pipelines.state_keys import partition_key  # noqa: E402
from schemas.settings import Settings  # noqa: E402


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _shown(value: bytes | None) -> str | None:
    """A field as the test compares it: hex, or for one over 4 KiB its length and SHA-256 (collect's size limit)."""
    if value is not None and len(value) > 4096:
        return f"{len(value)}:{hashlib.sha256(value).hexdigest()}"
    return _hex(value)


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


class Echo(KeyedProcessFunction):  # type: ignore[misc]  # pyflink has no types
    """Prints each batch; at the final watermark (as the sequencer seals), an "end" line per partition."""

    def open(self, runtime_context: Any) -> None:
        self.partitions: dict[Any, int] = {}

    def process_element(self, value: Any, ctx: Any) -> Any:
        if ctx.get_current_key() not in self.partitions:
            self.partitions[ctx.get_current_key()] = value[0]
            ctx.timer_service().register_event_time_timer(2**63 - 1)
        if not value[1]:  # the barrier marker before a checkpoint
            yield json.dumps({"marker": value[0]})
            return
        records = read_batch(value[0], bytes(value[1]))
        yield json.dumps(
            {
                "partition": value[0],
                "records": [
                    [r.partition, r.offset, r.timestamp_ms, _shown(r.key), _shown(r.value), _shown(r.service_sig)]
                    for r in records
                ],
            }
        )

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield json.dumps({"end": self.partitions[ctx.get_current_key()]})


def main() -> None:
    records = json.loads(Path(sys.argv[1]).read_text())
    settings = Settings.from_env()
    env, _ = create_environment(
        job_config(settings, topic="batcher-test"),
        parallelism=1,
        checkpoint_interval_ms=60_000,
        checkpoint_dir=None,
        jars=[sys.argv[2]],
        local=True,
    )
    rows = [
        Row(partition_key(p), Row(p, offset, ts, _bytes(k), _bytes(v), _bytes(s))) for p, offset, ts, k, v, s in records
    ]
    source = env.from_collection(rows, type_info=keyed_record_type())
    out = batched_by_partition(source).process(Echo(), output_type=Types.STRING())
    with out.execute_and_collect() as results:
        for line in results:
            print(line, flush=True)


if __name__ == "__main__":
    main()
