"""Child process of test_tiering.py: the shipped server tiering config, run in embedded chDB against SeaweedFS.

    python tests/integration/tiering_check.py WORKDIR   # AUDITLOG_* name the stack; prints one JSON line

infra/clickhouse/storage.xml (its endpoint and credentials pointed at the local SeaweedFS, a
plain bucket without Object Lock) is loaded with chdb.connect("file:DIR?config-file=…"); the
embedded schema is created, infra/clickhouse/tiering.sql applied (without ON CLUSTER, to the
embedded table), and events 90 days old and from today inserted. The TTL must move the old
partition to the `s3` disk and leave today's on `default`, with every row still readable.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.io.clickhouse import schema_statements  # noqa: E402
from pipelines.io.s3 import s3_client  # noqa: E402
from schemas.settings import REPO_ROOT, Settings  # noqa: E402

BUCKET = "auditlog-clickhouse-cold"


def local_config(settings: Settings, workdir: Path) -> Path:
    xml = (REPO_ROOT / "infra" / "clickhouse" / "storage.xml").read_text()
    endpoint = f"{settings.s3_endpoint}/{BUCKET}/clickhouse/test/"
    xml = re.sub(r"<endpoint>.*?</endpoint>", f"<endpoint>{endpoint}</endpoint>", xml)
    xml = xml.replace(
        "<use_environment_credentials>true</use_environment_credentials>",
        f"<access_key_id>{settings.s3_access_key}</access_key_id>"
        f"<secret_access_key>{settings.s3_secret_key}</secret_access_key>",
    )
    xml = re.sub(r"<region>.*?</region>", f"<region>{settings.s3_region}</region>", xml)
    xml = xml.replace("/var/lib/clickhouse/disks/s3/", str(workdir / "s3-metadata") + "/")
    # Only the TTL may move parts here: with less than move_factor (0.1 unless set) of the local
    # disk free, ClickHouse also moves the newest parts to `cold`, as it should on a server whose
    # disk is filling, and on a machine with 9.9% free today's partition went to S3 as well.
    xml = xml.replace("</volumes>", "</volumes>\n                <move_factor>0</move_factor>", 1)
    path = workdir / "storage.xml"
    path.write_text(xml)
    return path


def tiering_statements() -> list[str]:
    sql = (REPO_ROOT / "infra" / "clickhouse" / "tiering.sql").read_text()
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    sql = sql.replace("auditlog.audit_logs_local ON CLUSTER '{cluster}'", "auditlog.audit_logs")
    return [s.strip() for s in sql.split(";") if s.strip()]


def main(workdir: Path) -> None:
    import chdb

    settings = Settings.from_env()
    s3 = s3_client(settings)
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    conn = chdb.connect(f"file:{workdir / 'chdb'}?config-file={local_config(settings, workdir)}")
    for statement in schema_statements():
        conn.query(statement)
    for statement in tiering_statements():
        conn.query(statement)
    now = dt.datetime.now(dt.UTC)
    for days, event_id in ((90, "evt_old"), (0, "evt_new")):
        when = (now - dt.timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.000")
        conn.query(
            "INSERT INTO auditlog.audit_logs (tenant_id, event_id, occurred_at, actor_id, actor_type, action, "
            "resource_id, resource_type, result, log_id, leaf_index, leaf_hash, block_index, block_hash, canonical) "
            f"VALUES ('t_1000', '{event_id}', '{when}', 'u1', 'USER', 'document.read', 'd1', 'DOCUMENT', 'SUCCESS', "
            f"'audit.events.p0', {days}, unhex(repeat('00', 32)), 0, unhex(repeat('00', 32)), '{{}}')"
        )
    disks: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = conn.query(
            "SELECT partition, disk_name FROM system.parts WHERE database = 'auditlog' AND table = 'audit_logs' "
            "AND active",
            "JSONCompact",
        )
        disks = {str(p): str(d) for p, d in json.loads(str(rows))["data"]}
        if "s3" in disks.values():
            break
        time.sleep(1)
    readable = json.loads(str(conn.query("SELECT event_id FROM auditlog.audit_logs ORDER BY event_id", "JSONCompact")))
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix="clickhouse/test/").get("KeyCount", 0)
    policy = json.loads(
        str(
            conn.query(
                "SELECT storage_policy FROM system.tables WHERE database = 'auditlog' AND name = 'audit_logs'",
                "JSONCompact",
            )
        )
    )["data"][0][0]
    print(
        json.dumps(
            {
                "old_partition": (now - dt.timedelta(days=90)).strftime("%Y%m"),
                "new_partition": now.strftime("%Y%m"),
                "disks": disks,
                "events": [r[0] for r in readable["data"]],
                "s3_objects": objects,
                "policy": policy,
            }
        )
    )
    conn.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
