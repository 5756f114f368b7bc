"""`auditlog erase`: GDPR erasure of one person by crypto-shredding, recorded as an audit event.

The subject's keys (and every copy wrapped under any master key) are destroyed in the key store
and a tombstone stays. Leaves hold only ciphertext and keyed hashes of PII (docs/design.md
§9), so nothing in the log changes: every proof and `auditlog verify` still pass, while the API,
the UI and exports show the subject's PII as "[erased]" and lookups by the old email stop
matching (the keyed hash needs the destroyed key). Running processes notice the tombstone and drop
cached keys; a later event of the same subject is logged with its PII marked erased, and no key is
made again. Last, the topic's records that the archive already holds are deleted from Kafka
(pipelines/erasure.py), so the person's plaintext does not outlive the erasure in the broker.
"""

from __future__ import annotations

import argparse
import getpass

from runners.argtypes import IncompleteError, UsageError
from runners.deployment import with_master_key
from schemas.settings import Settings
from transforms.errors import AuditlogError

ERASE_ACTION = "privacy.subject.erase"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "erase",
        help="erase a person's PII everywhere by destroying their keys (proofs stay valid)",
        description="Records the erasure as an audit event (action privacy.subject.erase, acknowledged by "
        "Kafka first), then destroys the subject's PII keys and every wrapped copy in the key store. "
        "Afterwards the subject's PII shows as [erased] in the API, UI and exports, lookups by their old "
        "email find nothing, and `auditlog verify` still passes. Last, the events topic's records that the archive "
        "already holds are deleted from Kafka (DeleteRecords), so the person's plaintext does not outlive the "
        "erasure there; run it again after the job caught up to delete the rest. Idempotent otherwise.",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--subject", required=True, help="the actor id whose PII is erased")
    p.add_argument("--reason", required=True, help="why (kept in the erasure's audit event), e.g. a ticket")
    p.add_argument("--operator", default=getpass.getuser(), help="who asks for it (default: the OS user)")
    p.set_defaults(handler=run)


def erasure_event(tenant_id: str, subject_id: str, reason: str, operator: str) -> dict[str, object]:
    return {
        "tenant_id": tenant_id,
        "actor": {"id": f"operator:{operator}", "type": "SYSTEM"},
        "action": ERASE_ACTION,
        "resource": {"type": "SUBJECT", "id": subject_id},
        "result": "SUCCESS",
        "metadata": {"reason": reason},
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    from api.sdk import AuditClient
    from api.sdk.events import EventValidationError
    from pipelines.io.keystore import open_keystore

    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason is empty; say why (a ticket id, the request): it is kept in the log")
    keystore = open_keystore(with_master_key(settings))
    try:
        if keystore.is_erased(args.tenant, args.subject):
            print(f"{args.subject} of {args.tenant} was already erased; deleting what Kafka still holds")
            return truncate_topic(settings)
        client = AuditClient(kafka_bootstrap=settings.kafka_bootstrap, topic=settings.topic)
        try:
            receipt = client.record(erasure_event(args.tenant, args.subject, reason, args.operator), wait=True)
        except EventValidationError:
            raise
        except Exception as exc:  # Kafka down: nothing is destroyed without its record
            raise AuditlogError(
                f"the erasure could not be recorded in Kafka at {settings.kafka_bootstrap} ({exc}); nothing "
                "was destroyed. Start Kafka (`auditlog stack up kafka`) and run this again."
            ) from exc
        finally:
            client.close()
        had_keys = keystore.destroy(args.tenant, args.subject)
    finally:
        keystore.close()
    what = "its keys were destroyed" if had_keys else "it had no keys yet; the tombstone keeps it erased"
    print(f"erased {args.subject} of {args.tenant}: {what} (audit event {receipt.event_id})")
    print("its events now show [erased] PII everywhere; every proof and `auditlog verify` still pass")
    return truncate_topic(settings)


def truncate_topic(settings: Settings) -> int:
    """Deletes the records of the events topic that the archive holds; raises IncompleteError if that failed."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from pipelines.erasure import truncate_archived
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive
    from pipelines.io.kafka import kafka_client_config

    consumer = Consumer(
        kafka_client_config(
            settings,
            **{"group.id": "auditlog-erase", "enable.auto.commit": False, "isolation.level": "read_uncommitted"},
        )
    )
    try:
        done = truncate_archived(
            open_archive(**archive_spec(settings)), AdminClient(kafka_client_config(settings)), consumer, settings.topic
        )
    except Exception as exc:  # the erasure stands; say what is left to do
        raise IncompleteError(
            f"the keys are destroyed, but the records of {settings.topic} could not be deleted from Kafka "
            f"({type(exc).__name__}: {exc}); their plaintext stays until the topic's retention removes it. "
            "Run the same `auditlog erase` again once Kafka and the archive are reachable."
        ) from exc
    finally:
        consumer.close()
    for cut in done:
        if cut.skipped:
            print(f"left partition {cut.partition} of {settings.topic} as it is: {cut.skipped}")
            continue
        print(
            f"deleted the records of {settings.topic} partition {cut.partition} before offset {cut.before_offset} "
            f"(archived up to block {cut.block_index})"
        )
    if not done:
        print(f"nothing of {settings.topic} is archived yet: no records deleted; run this again after the job ran")
    return 0
