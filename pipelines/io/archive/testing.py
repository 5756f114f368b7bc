"""InMemoryArchive, the test double: a versioned, Object-Locked bucket in a dict.

Only tests use it, so the package does not re-export it: `from pipelines.io.archive.testing import
InMemoryArchive`. Besides S3's semantics it has the hooks a tamper test needs
(`overwrite_unconditionally`, `delete`).
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import md5, sha256

from pipelines.io.archive.base import Archive, ObjectVersion, Retention
from pipelines.io.archive.errors import ArchiveError, ArchiveLockedError, ArchiveNotFoundError, _KeyTaken
from pipelines.io.archive.locks import DEFAULT_RETENTION_DAYS, LOCK_MODE

__all__ = ["InMemoryArchive"]


@dataclass
class _Version:
    version_id: str
    data: bytes | None  # None: a delete marker
    retention: Retention | None
    last_modified: dt.datetime
    legal_hold: bool = False


@dataclass
class InMemoryArchive(Archive):
    """A versioned, Object-Locked bucket in a dict, with S3's semantics for tests.

    Conditional creates, conflicts and reads behave like `S3Archive` on SeaweedFS: a delete
    marker hides a key from listings and lets a new object be created there, and a locked version
    cannot be deleted. `overwrite_unconditionally` and `delete` model a writer that bypasses
    `If-None-Match` (what a tamper check must notice).
    """

    retention_days: float = DEFAULT_RETENTION_DAYS
    objects: dict[str, list[_Version]] = field(default_factory=dict)
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _new_version(self, key: str, data: bytes | None, retention: Retention | None) -> str:
        self._counter += 1
        version_id = f"v{self._counter:08d}"
        self.objects.setdefault(key, []).append(_Version(version_id, data, retention, dt.datetime.now(dt.UTC)))
        return version_id

    def _current(self, key: str) -> _Version | None:
        versions = self.objects.get(key)
        if not versions or versions[-1].data is None:
            return None
        return versions[-1]

    def _create(self, key: str, data: bytes, checksum: str, retain_until: dt.datetime) -> str | None:
        if base64.b64encode(sha256(data).digest()).decode() != checksum:
            raise ArchiveError(f"BadDigest: checksum of {key} does not match its bytes")
        with self._lock:
            if self._current(key) is not None:
                raise _KeyTaken(key)
            return self._new_version(key, bytes(data), Retention(LOCK_MODE, retain_until))

    def get(self, key: str, version_id: str | None = None) -> bytes:
        with self._lock:
            if version_id is None:
                current = self._current(key)
            else:
                current = next(
                    (v for v in self.objects.get(key, []) if v.version_id == version_id and v.data is not None),
                    None,
                )
            if current is None or current.data is None:
                raise ArchiveNotFoundError(key, version_id)
            return current.data

    def _list(self, prefix: str, delimiter: str | None, start_after: str | None = None) -> Iterator[str]:
        with self._lock:
            keys = sorted(
                k
                for k in self.objects
                if k.startswith(prefix) and self._current(k) is not None and (not start_after or k > start_after)
            )
        if not delimiter:
            yield from keys
            return
        seen: dict[str, None] = {}
        for key in keys:
            rest = key[len(prefix) :]
            if delimiter in rest:
                seen[prefix + rest.split(delimiter, 1)[0] + delimiter] = None
        yield from seen

    def versions_under(self, prefix: str) -> dict[str, list[ObjectVersion]]:
        with self._lock:
            held = {k: list(v) for k, v in self.objects.items() if k.startswith(prefix)}
        out: dict[str, list[ObjectVersion]] = {}
        for key in sorted(held):
            out[key] = [
                ObjectVersion(
                    key,
                    v.version_id,
                    i == 0,
                    v.data is None,
                    len(v.data or b""),
                    v.last_modified,
                    f'"{md5(v.data).hexdigest()}"' if v.data is not None else "",  # S3's ETag of a one-part put
                )
                for i, v in enumerate(reversed(held[key]))
            ]
        return out

    def retention(self, key: str, version_id: str | None = None) -> Retention | None:
        with self._lock:
            if version_id is None:
                version = self._current(key)
            else:
                version = next((v for v in self.objects.get(key, []) if v.version_id == version_id), None)
        if version is None:
            raise ArchiveNotFoundError(key, version_id)
        return version.retention

    def delete_version(self, key: str, version_id: str) -> None:
        with self._lock:
            versions = self.objects.get(key, [])
            version = next((v for v in versions if v.version_id == version_id), None)
            if version is None:
                raise ArchiveNotFoundError(key, version_id)
            if version.retention is not None and version.retention.retain_until > dt.datetime.now(dt.UTC):
                raise ArchiveLockedError(f"{key} version {version_id} is under Object Lock retention")
            if version.legal_hold:
                raise ArchiveLockedError(f"{key} version {version_id} is under an Object Lock legal hold")
            versions.remove(version)
            if not versions:
                del self.objects[key]  # as in S3: a key without versions is not listed

    def _version(self, key: str, version_id: str) -> _Version:
        version = next((v for v in self.objects.get(key, []) if v.version_id == version_id), None)
        if version is None:
            raise ArchiveNotFoundError(key, version_id)
        return version

    def legal_hold(self, key: str, version_id: str) -> bool:
        with self._lock:
            return self._version(key, version_id).legal_hold

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        with self._lock:
            self._version(key, version_id).legal_hold = on

    # ---- what a careless or hostile writer can do on a versioned bucket

    def overwrite_unconditionally(self, key: str, data: bytes) -> str:
        """Adds a new, unlocked current version at `key` (a PUT without If-None-Match)."""
        with self._lock:
            return self._new_version(key, bytes(data), None)

    def delete(self, key: str) -> str:
        """Adds a delete marker at `key` (a DELETE without a version id); the locked versions stay."""
        with self._lock:
            return self._new_version(key, None, None)
