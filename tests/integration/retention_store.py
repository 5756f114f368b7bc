"""A small deployment for the retention tests in real SeaweedFS + chDB (a child process: chDB serves one process).

    python tests/integration/retention_store.py build     # AUDITLOG_* name the home, bucket, ports, policy
    python tests/integration/retention_store.py state     # JSON: rows by tenant and class, blocks and holds
    python tests/integration/retention_store.py delete-row TENANT EVENT_ID
    python tests/integration/retention_store.py delete-block LOG INDEX   # try to delete a block's original

`build` writes 60 events starting 15 s ago, as the ingest job would, under the policy of
AUDITLOG_RETENTION_POLICY_FILE, so that a short class ends while the test runs.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.io.archive import ArchiveLockedError, block_key, parse_key  # noqa: E402
from pipelines.io.keystore import open_keystore  # noqa: E402
from pipelines.retention import original_version  # noqa: E402
from runners.deployment import with_master_key  # noqa: E402
from schemas.retention import load_policy  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from tests.synthetic import build_logs, open_deployment  # noqa: E402
from transforms.merkle import leaf_hash  # noqa: E402
from transforms.retention import entry_until, format_time  # noqa: E402

EVENTS = 60


def main(case: str, *args: str) -> None:
    settings = Settings.from_env()
    archive, clickhouse, signer = open_deployment(settings)
    if case == "build":
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=15)
        with open_keystore(with_master_key(settings)) as keys:
            built = build_logs(
                archive,
                clickhouse,
                events=EVENTS,
                logs=2,
                block_size=4,
                signer=signer,
                keys=keys,
                retention=load_policy(settings.retention_policy_path),
                start=start,
            )
        print(json.dumps({"events": built.events, "blocks": built.blocks, "logs": built.log_ids}))
    elif case == "state":
        rows = clickhouse.query(
            "SELECT tenant_id, retention_class, event_id, log_id, block_index, hold_until > now(), actor_id "
            "FROM auditlog.audit_logs ORDER BY tenant_id, event_id"
        )
        blocks = {}
        for log_id in archive.list_logs():
            for key, versions in archive.versions_under(f"logs/{log_id}/").items():
                data = [v for v in versions if not v.is_delete_marker]
                facts = {"versions": len(versions), "legal_hold": False}
                if data and "/blocks/" in key:
                    original = data[-1].version_id
                    _, entries = archive.read_block(log_id, parse_key(key)[2], original)
                    lock = archive.retention(key, original)
                    facts.update(
                        legal_hold=archive.legal_hold(key, original),
                        retain_until=format_time(lock.retain_until) if lock else "",
                        longest_event=max(entry_until(e) for e in entries),
                    )
                blocks[key] = facts
        print(
            json.dumps(
                {
                    "rows": [
                        {
                            "tenant": t,
                            "class": c,
                            "event_id": e,
                            "log_id": str(lg),
                            "block": int(b),
                            "held": bool(h),
                            "actor": a,
                        }
                        for t, c, e, lg, b, h, a in rows
                    ],
                    "objects": blocks,
                }
            )
        )
    elif case == "delete-row":
        tenant, event_id = args
        clickhouse._conn.command(
            f"ALTER TABLE auditlog.audit_logs DELETE WHERE tenant_id = '{tenant}' AND event_id = '{event_id}' "
            "SETTINGS mutations_sync = 2"
        )
    elif case == "forge-expired":
        # A forger hides an edited copy of an event among rows whose retention ended, and keeps
        # TTL off it with a hold_until no hold record explains.
        tenant, event_id = args
        (canonical,) = clickhouse.query(
            "SELECT canonical FROM auditlog.audit_logs WHERE tenant_id = {t:String} AND event_id = {e:String}",
            {"t": tenant, "e": event_id},
        )[0]
        doc = json.loads(canonical)
        doc["result"] = "FAILURE" if doc["result"] == "SUCCESS" else "SUCCESS"
        doc["retention"]["until"] = "2001-01-01T00:00:00.000Z"
        forged = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        clickhouse._conn.command(
            "INSERT INTO auditlog.audit_logs SELECT * REPLACE ("
            f"'{forged}' AS canonical, '{doc['result']}' AS result, "
            "toDateTime64('2001-01-01 00:00:00', 3, 'UTC') AS retain_until, "
            "toDateTime64('2100-01-01 00:00:00', 3, 'UTC') AS hold_until, "
            f"unhex('{leaf_hash(forged.encode()).hex()}') AS leaf_hash) "
            f"FROM auditlog.audit_logs WHERE tenant_id = '{tenant}' AND event_id = '{event_id}'"
        )
    elif case == "delete-block":
        log_id, index = args[0], int(args[1])
        key = block_key(log_id, index)
        try:
            archive.delete_version(key, str(original_version(archive, key)))
            print("deleted")
        except ArchiveLockedError as exc:
            print(f"refused: {exc}")
    else:
        raise SystemExit(f"unknown case {case!r}")
    clickhouse.close()


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
