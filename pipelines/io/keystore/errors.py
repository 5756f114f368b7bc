"""What the key store raises: one base class, and the kinds a caller tells apart."""

from __future__ import annotations

from transforms.errors import AuditlogError
from transforms.pii import SubjectErased

__all__ = ["KeyStoreError", "MasterKeyError", "SubjectErasedError"]


class KeyStoreError(AuditlogError, RuntimeError):
    """The key store cannot do what was asked: damaged, misconfigured, or in the wrong mode."""


class MasterKeyError(KeyStoreError):
    """The master key is missing, malformed, or not the one the key store was created with."""


class SubjectErasedError(KeyStoreError, SubjectErased):
    """A subject was erased, so it must not get keys again.

    A new key would seal the person's future events under a fresh identity that the same
    actor id links straight back to their erased history: the erasure would be silently undone.
    Callers decide what an event of an erased subject becomes: the ingest job logs it with its PII
    marked erased (schemas.events.protect_event with no keys).
    """

    def __init__(self, tenant_id: str, subject_id: str) -> None:
        self.tenant_id = tenant_id
        self.subject_id = subject_id
        super().__init__(
            f"subject {subject_id!r} of tenant {tenant_id!r} was erased: its keys were destroyed and "
            "it will not get new ones (that would re-link the person); route the event elsewhere"
        )
