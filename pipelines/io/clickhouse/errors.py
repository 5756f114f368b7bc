"""What the search index raises: one base class, and the kinds a caller tells apart."""

from __future__ import annotations

from transforms.errors import AuditlogError, VerificationError

__all__ = ["ChdbHeldError", "ClickHouseError", "IndexIntegrityError"]


class ClickHouseError(AuditlogError, RuntimeError):
    """ClickHouse could not be opened or refused a statement."""


class ChdbHeldError(ClickHouseError):
    """Another process holds the embedded chDB directory (chDB serves one process per directory)."""


class IndexIntegrityError(ClickHouseError, VerificationError):
    """The index disagrees with itself (a missing or conflicting leaf); rebuild it from the archive.

    A VerificationError too, so a proof command reports it as evidence that did not check out.
    """
