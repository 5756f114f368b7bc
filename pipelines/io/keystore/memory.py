"""InMemoryKeyStore: the key store's semantics in a dict.

Not in a `testing` module: `auditlog demo` runs on it (runners/commands/demo.py), as do the tests.
"""

from __future__ import annotations

import threading

from pipelines.io.keystore.base import KeyStore
from pipelines.io.keystore.errors import SubjectErasedError
from pipelines.io.keystore.wrapping import _Master
from transforms.pii import SubjectKeys

__all__ = ["InMemoryKeyStore"]


class InMemoryKeyStore(KeyStore):
    """The key store's semantics in a dict: no master key, nothing on disk. For tests."""

    def __init__(self, key_seed: bytes | None = None) -> None:
        super().__init__(key_seed)
        self._keys: dict[tuple[str, str], SubjectKeys] = {}
        self._erased: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        subject = (tenant_id, subject_id)
        keys = self._keys.get(subject)
        if keys is not None:
            return keys
        with self._lock:
            if subject in self._erased:
                raise SubjectErasedError(tenant_id, subject_id)
            return self._keys.setdefault(subject, self.new_keys(tenant_id, subject_id))

    def get(self, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        return self._keys.get((tenant_id, subject_id))

    def destroy(self, tenant_id: str, subject_id: str) -> bool:
        with self._lock:
            self._erased.add((tenant_id, subject_id))
            return self._keys.pop((tenant_id, subject_id), None) is not None

    def subjects(self, tenant_id: str) -> list[str]:
        with self._lock:
            return sorted(s for t, s in self._keys if t == tenant_id)

    def is_erased(self, tenant_id: str, subject_id: str) -> bool:
        return (tenant_id, subject_id) in self._erased

    def rotate_master(self, new_master_key: bytes, retire_previous: bool = False) -> int:
        """Checks the key's size; keys here are not wrapped, so there is nothing to re-wrap."""
        _Master.of(new_master_key)
        return len(self._keys)
