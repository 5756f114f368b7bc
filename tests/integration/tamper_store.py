"""Builds a small signed deployment in real SeaweedFS + chDB, then tampers with it one way (a child process).

    python tests/integration/tamper_store.py build            # AUDITLOG_* name the home, bucket, ports
    python tests/integration/tamper_store.py CASE             # apply one tampering to the built stores

Run as its own process because embedded chDB serves one process at a time; the test then runs
`auditlog verify` in another.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.io.archive import block_key, checkpoint_key, tile_key  # noqa: E402
from pipelines.io.keystore import open_keystore  # noqa: E402
from runners.deployment import with_master_key  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from tests.synthetic import build_logs, open_deployment  # noqa: E402
from transforms.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from transforms.merkle import leaf_hash  # noqa: E402
from transforms.note import Signer  # noqa: E402
from transforms.tiles import ENTRIES, Tile  # noqa: E402

LOG = "audit.events.p0"


def main(case: str) -> None:
    settings = Settings.from_env()
    archive, clickhouse, signer = open_deployment(settings)
    s3, bucket = archive.client, settings.bucket

    def sql(statement: str) -> None:
        clickhouse._conn.command(
            statement + " SETTINGS mutations_sync = 2" if statement.startswith("ALTER") else statement
        )

    def newest() -> tuple[int, int]:
        return archive.list_blocks(LOG)[-1], archive.list_checkpoints(LOG)[-1]

    if case == "build":
        # PII sealed with the deployment's own key store, as the ingest job would have.
        with open_keystore(with_master_key(settings)) as keys:
            built = build_logs(archive, clickhouse, events=600, logs=2, block_size=50, signer=signer, keys=keys)
        print(json.dumps({"events": built.events, "blocks": built.blocks, "logs": built.log_ids}))
    elif case == "update_field":
        sql(
            "ALTER TABLE auditlog.audit_logs UPDATE action = 'user.impersonate' "
            f"WHERE log_id = '{LOG}' AND leaf_index = 7"
        )
    elif case == "rewrite_event":
        # A careful forger rewrites one event everywhere a search reads it: its canonical bytes
        # and its columns (but cannot re-sign the log, so the proof no longer fits).
        (canonical,) = clickhouse.query(
            f"SELECT canonical FROM auditlog.audit_logs WHERE log_id = '{LOG}' AND leaf_index = 7"
        )[0]
        doc = json.loads(canonical)
        doc["result"] = "FAILURE" if doc["result"] == "SUCCESS" else "SUCCESS"
        forged = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        sql(
            f"ALTER TABLE auditlog.audit_logs UPDATE canonical = '{forged}', result = '{doc['result']}', "
            f"leaf_hash = unhex('{leaf_hash(forged.encode()).hex()}') WHERE log_id = '{LOG}' AND leaf_index = 7"
        )
    elif case == "delete_row":
        sql(f"ALTER TABLE auditlog.audit_logs DELETE WHERE log_id = '{LOG}' AND leaf_index = 11")
    elif case == "insert_row":
        # A careful forger: a new event whose columns, canonical bytes and leaf hash all agree.
        (canonical,) = clickhouse.query(
            f"SELECT canonical FROM auditlog.audit_logs WHERE log_id = '{LOG}' AND leaf_index = 3"
        )[0]
        doc = json.loads(canonical)
        doc["event_id"] = "evt_forged000000001"
        forged = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        sql(
            "INSERT INTO auditlog.audit_logs SELECT * REPLACE ("
            f"'evt_forged000000001' AS event_id, '{forged}' AS canonical, "
            f"unhex('{leaf_hash(forged.encode()).hex()}') AS leaf_hash) "
            f"FROM auditlog.audit_logs WHERE log_id = '{LOG}' AND leaf_index = 3"
        )
    elif case == "swap_rows":
        sql(
            f"ALTER TABLE auditlog.audit_logs UPDATE leaf_index = multiIf(leaf_index = 20, 21, leaf_index = 21, 20, "
            f"leaf_index) WHERE log_id = '{LOG}' AND leaf_index IN (20, 21)"
        )
    elif case == "truncate_archive_tail":
        block, size = newest()
        s3.delete_object(Bucket=bucket, Key=block_key(LOG, block))
        s3.delete_object(Bucket=bucket, Key=checkpoint_key(LOG, size))
    elif case == "overwrite_block":
        s3.put_object(Bucket=bucket, Key=block_key(LOG, 2), Body=b"auditlog-block/v1\nnot the original\n")
    elif case == "overwrite_tile":  # a second version of a full level-0 hash tile, one bit flipped
        key = tile_key(LOG, Tile(0, 0))
        tile = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=tile[:-1] + bytes([tile[-1] ^ 1]))
    elif case == "delete_bundle":  # the full entry bundle deleted (a delete marker over the locked original)
        s3.delete_object(Bucket=bucket, Key=tile_key(LOG, Tile(ENTRIES, 0)))
    elif case == "checkpoint_other_key":
        _, size = newest()
        (root_hex,) = clickhouse.query(
            f"SELECT hex(root) FROM auditlog.audit_checkpoints WHERE log_id = '{LOG}' AND tree_size = {size}"
        )[0]
        other = Signer.generate(settings.origin)
        note = sign_checkpoint(Checkpoint(f"{settings.origin}/{LOG}", size, bytes.fromhex(root_hex)), other)
        s3.put_object(Bucket=bucket, Key=checkpoint_key(LOG, size), Body=note.encode())
        sql(
            f"ALTER TABLE auditlog.audit_checkpoints UPDATE note = '{note}' "
            f"WHERE log_id = '{LOG}' AND tree_size = {size}"
        )
    elif case == "rollback_index":
        # ClickHouse rewound to an older checkpoint: the newest block of the log vanishes from every table.
        block, size = newest()
        for table in ("audit_logs", "audit_leaves", "audit_blocks"):
            sql(f"ALTER TABLE auditlog.{table} DELETE WHERE log_id = '{LOG}' AND block_index = {block}")
        sql(f"ALTER TABLE auditlog.audit_checkpoints DELETE WHERE log_id = '{LOG}' AND tree_size = {size}")
    else:
        raise SystemExit(f"unknown case {case!r}")
    clickhouse.close()


if __name__ == "__main__":
    main(sys.argv[1])
