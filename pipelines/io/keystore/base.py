"""KeyStore, the interface every key store implements (docs/design.md §9)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from pipelines.io.keystore.errors import KeyStoreError, SubjectErasedError
from pipelines.io.keystore.subject_keys import derive_subject_keys, random_subject_keys
from transforms.pii import SubjectKeys

__all__ = ["KeyStore"]


class KeyStore(ABC):
    """Per-subject PII keys. Subjects are (tenant_id, subject_id); the subject is the actor id.

    Implementations are safe to share between threads. `key_seed`, when set, makes new keys a
    function of (seed, tenant, subject) — for CI replays only, see `derive_subject_keys`.
    """

    def __init__(self, key_seed: bytes | None = None) -> None:
        if key_seed is not None and not key_seed:
            raise KeyStoreError("key_seed must be non-empty bytes, or None for random keys")
        self.key_seed = key_seed

    def new_keys(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        """Fresh keys for a subject that has none: random, or derived from `key_seed`."""
        if self.key_seed is not None:
            return derive_subject_keys(self.key_seed, tenant_id, subject_id)
        return random_subject_keys()

    @abstractmethod
    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        """The subject's keys, created on first use.

        Concurrent callers (threads or processes) for a new subject all get the same keys.

        Raises:
            SubjectErasedError: the subject was erased; it never gets keys again.
        """

    def get_or_create_many(self, subjects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SubjectKeys | None]:
        """`get_or_create` for a batch of (tenant_id, subject_id); erased subjects map to None.

        Implementations create all missing subjects in one transaction: new subjects cost one
        disk sync per batch instead of one each.
        """
        result: dict[tuple[str, str], SubjectKeys | None] = {}
        for subject in subjects:
            try:
                result[subject] = self.get_or_create(*subject)
            except SubjectErasedError:
                result[subject] = None
        return result

    @abstractmethod
    def get(self, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        """The subject's keys, or None if it never had any or was erased."""

    @abstractmethod
    def destroy(self, tenant_id: str, subject_id: str) -> bool:
        """Crypto-shreds a subject: deletes its keys and leaves a tombstone.

        The tombstone is written even if the subject has no keys yet, so that an erasure request
        that arrives before the person's first event still holds. Returns True if keys existed.
        """

    @abstractmethod
    def subjects(self, tenant_id: str) -> list[str]:
        """The tenant's subjects that hold keys (erased ones are gone), for lookups by a PII value."""

    @abstractmethod
    def is_erased(self, tenant_id: str, subject_id: str) -> bool:
        """True once `destroy` was called for the subject."""

    @abstractmethod
    def rotate_master(self, new_master_key: bytes, retire_previous: bool = False) -> int:
        """Wraps every subject key under a new master key; returns how many keys were re-wrapped."""

    def close(self) -> None:  # noqa: B027 - optional hook: in-memory stores hold nothing
        """Releases files and connections; the default has none."""

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
