"""Names reserved for the query service's own records, and how the job knows a record is its.

Every read through the query API becomes an audit event with actor `apikey:<key id>` and action
`audit_log.<what>` (api/query/reads.py). Those events are the auditors' trail, so nobody else may
write them: a tenant key that could log `audit_log.search` by `apikey:<the admin key>` would forge
a read that never happened. The gateway refuses such events outright; the ingest job accepts them
only when the Kafka record carries `SERVICE_SIG_HEADER`, an Ed25519 signature over the record's
value by the deployment's checkpoint signer (which the query service holds), and dead-letters
them otherwise, naming the reserved name.

The signed message is domain-separated (`SERVICE_SIG_CONTEXT` ‖ value), so a service signature
can never pass for a checkpoint signature or the other way round. A record's acceptance depends on
its bytes and headers alone, so replays decide the same way.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from transforms.note import Signer, Verifier

RESERVED_ACTION_PREFIX = "audit_log."
RESERVED_ACTOR_PREFIX = "apikey:"
SERVICE_SIG_HEADER = "auditlog-service-sig"
SERVICE_SIG_CONTEXT = b"auditlog/service-event/v1\n"


def _looks_like(value: str, prefix: str) -> bool:
    """True if `value` starts with `prefix` as a person reads it: any case, width or leading space."""
    text = value if value.isascii() else unicodedata.normalize("NFKC", value)  # per record: skip NFKC for ASCII
    return text.strip().casefold().startswith(prefix)


def reserved_name(event: dict[str, Any]) -> tuple[str, str] | None:
    """The first reserved name a validated event uses, as (field, value), or None.

    Compared after NFKC normalisation, case folding and stripping, so `AUDIT_LOG.search`,
    `APIKEY:…` or a fullwidth colon cannot pass for something else in a list of reads.
    """
    action = event["action"]
    if _looks_like(action, RESERVED_ACTION_PREFIX):
        return "action", action
    actor = event["actor"]["id"]
    if _looks_like(actor, RESERVED_ACTOR_PREFIX):
        return "actor.id", actor
    return None


def reserved_rule(field: str, value: str) -> str:
    """The refusal text for a reserved name, said the same way by the gateway and the job."""
    prefix = RESERVED_ACTION_PREFIX if field == "action" else RESERVED_ACTOR_PREFIX
    return (
        f"uses the reserved name {value!r}: {prefix}* {field} values are written only by the query "
        "service's read audit; choose another name"
    )


def service_signature(signer: Signer, value: bytes) -> bytes:
    """The header value that marks `value` (a Kafka record value) as the query service's own."""
    return signer.sign(SERVICE_SIG_CONTEXT + value)


def is_service_record(verifier: Verifier, value: bytes, signature: bytes | None) -> bool:
    """True when `signature` is the service's signature over exactly `value`."""
    if not signature or len(signature) != 64:
        return False
    return verifier.verify(SERVICE_SIG_CONTEXT + value, signature)
