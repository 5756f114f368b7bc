"""What the archive raises: one base class, and the kinds a caller tells apart."""

from __future__ import annotations

from transforms.errors import AuditlogError

__all__ = [
    "ArchiveConflictError",
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveNotFoundError",
    "ArchiveUnavailableError",
]


class ArchiveError(AuditlogError):
    """Base class of the archive's errors."""


class ArchiveConflictError(ArchiveError):
    """Integrity alarm: a key already holds different bytes than the ones being written.

    Attributes:
        key: the object key.
        archived_sha256: hex SHA-256 of the bytes already archived (they are kept).
        new_sha256: hex SHA-256 of the bytes that were refused.
    """

    def __init__(self, key: str, archived_sha256: str, new_sha256: str) -> None:
        self.key = key
        self.archived_sha256 = archived_sha256
        self.new_sha256 = new_sha256
        super().__init__(
            f"INTEGRITY ALARM: {key} already holds different bytes (archived sha256 {archived_sha256}, "
            f"refused sha256 {new_sha256}); the archived object was kept. The writer produced a "
            "different block or checkpoint for the same position: stop it and verify the log."
        )


class ArchiveNotFoundError(ArchiveError, LookupError):
    """No object (or no such version) at a key."""

    def __init__(self, key: str, version_id: str | None = None) -> None:
        self.key = key
        self.version_id = version_id
        where = f"{key} (version {version_id})" if version_id else key
        super().__init__(f"archive has no object at {where}")


class ArchiveLockedError(ArchiveError):
    """A delete was refused because the object version is under retention."""


class ArchiveUnavailableError(ArchiveError):
    """The archive stayed unreachable (or kept failing) until the retry deadline."""


class _KeyTaken(Exception):
    """Internal: a conditional create found the key occupied."""
