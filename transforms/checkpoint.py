"""C2SP tlog-checkpoint bodies, signed as C2SP signed notes.

    auditlog.example/log/p0003      <- origin: the log's unique name
    4096                            <- tree size, decimal, no leading zeros
    c2yFl/5N9F8h7QiX6vC7Hn4k3Ymv+f1TOY1dz0j6f7A=   <- base64 root hash
    [extension lines]

`sign_checkpoint` and `open_checkpoint` are the compute/verify pair.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from transforms.errors import NoteFormatError
from transforms.merkle import HASH_SIZE
from transforms.note import Signer, Verifier, open_note, sign_note

_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size and root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteFormatError(f"checkpoint origin {self.origin!r} must be one non-empty line")
        if self.size < 0:
            raise NoteFormatError(f"checkpoint size {self.size} is negative")
        if len(self.root) != HASH_SIZE:
            raise NoteFormatError(f"checkpoint root is {len(self.root)} bytes, want {HASH_SIZE}")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise NoteFormatError(f"checkpoint extension line {ext!r} must be one non-empty line")

    def text(self) -> str:
        """Returns the checkpoint body, each line ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parses a checkpoint body (the note text, without signatures)."""
    if not text.endswith("\n"):
        raise NoteFormatError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteFormatError(f"checkpoint has {len(lines)} lines, needs origin, size and root")
    origin, size_text, root_text, *extensions = lines
    if not _DECIMAL.fullmatch(size_text):
        raise NoteFormatError(f"checkpoint size {size_text!r} is not a decimal without leading zeros")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteFormatError(f"checkpoint root {root_text!r} is not base64") from None
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """Returns the checkpoint as a signed note."""
    return sign_note(checkpoint.text(), signer)


def open_checkpoint(signed: str | bytes, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """Verifies a signed checkpoint and returns it.

    Raises SignatureError if `verifier` did not sign it, and NoteFormatError if it is malformed
    or its origin differs from `origin` (when given).
    """
    note = open_note(signed, verifier)
    checkpoint = parse_checkpoint(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteFormatError(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    return checkpoint
