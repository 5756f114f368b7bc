"""The one error base of auditlog, and the typed errors raised by the verifiers of the core.

Every error auditlog raises on purpose derives from `AuditlogError`, whose message says what was
wrong, with the value, and what to do; `runners/cli.py` prints it to stderr and exits with its
`exit_code`: 1 when a piece of evidence did not check out (`VerificationError`), 2 when the
command could not do what was asked (bad usage or input, a service that does not answer).

Every verifier returns None on success and raises a `VerificationError` on failure, so a caller
can tell *what* failed (a root, a proof's shape, a signature, a text format) without parsing
messages.
"""

from __future__ import annotations


class AuditlogError(Exception):
    """Base class of every error auditlog raises on purpose."""

    exit_code = 2  # the command could not do what was asked


class VerificationError(AuditlogError):
    """Base class: some piece of evidence did not check out."""

    exit_code = 1  # a failed check


class InvalidProofError(VerificationError):
    """A proof is malformed for the claimed index and sizes (wrong length, bad index, bad hash)."""


class RootMismatchError(VerificationError):
    """A recomputed root differs from the expected one."""

    def __init__(self, expected: bytes, calculated: bytes, what: str = "root") -> None:
        self.expected = expected
        self.calculated = calculated
        super().__init__(f"{what} mismatch: expected {expected.hex()}, calculated {calculated.hex()}")


class NoteFormatError(VerificationError):
    """A signed note, checkpoint or proof text does not follow its C2SP format."""


class SignatureError(VerificationError):
    """No signature on a note verifies with the given key (unknown key, bad signature)."""


class ChainError(VerificationError):
    """A block header does not link to its predecessor or disagrees with its contents."""


class CanonicalizationError(AuditlogError, ValueError):
    """A value cannot be encoded as RFC 8785 canonical JSON (NaN, lone surrogate, huge integer)."""
