"""Typed errors raised by the verifiers of the core.

Every verifier returns None on success and raises one of these on failure, so a caller can
tell *what* failed (a root, a proof's shape, a signature, a text format) without parsing
messages. All derive from `VerificationError`.
"""

from __future__ import annotations


class VerificationError(Exception):
    """Base class: some piece of evidence did not check out."""


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


class CanonicalizationError(ValueError):
    """A value cannot be encoded as RFC 8785 canonical JSON (NaN, lone surrogate, huge integer)."""
