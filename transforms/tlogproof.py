"""C2SP tlog-proof@v1: an offline-verifiable proof that one entry is in a signed log.

    c2sp.org/tlog-proof@v1
    [extra BASE64]
    index 73894
    BASE64 hash        <- inclusion proof, leaf's sibling first
    ...
                       <- empty line
    <signed checkpoint, verbatim>

`format_proof` writes one, `parse_proof` reads one, and `verify_proof` checks the checkpoint
signature, then the inclusion of the entry's leaf hash under the checkpoint's root.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from transforms.checkpoint import Checkpoint, open_checkpoint
from transforms.errors import NoteFormatError
from transforms.merkle import leaf_hash, verify_inclusion
from transforms.note import Verifier

HEADER = "c2sp.org/tlog-proof@v1"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class TlogProof:
    index: int
    inclusion: tuple[bytes, ...]
    signed_checkpoint: str
    extra: bytes | None = None

    def text(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.inclusion)
        return "\n".join(lines) + "\n\n" + self.signed_checkpoint


def format_proof(index: int, inclusion: list[bytes], signed_checkpoint: str, extra: bytes | None = None) -> str:
    """Returns the tlog-proof@v1 text for entry `index`."""
    return TlogProof(index, tuple(inclusion), signed_checkpoint, extra).text()


def parse_proof(text: str) -> TlogProof:
    """Parses a tlog-proof@v1 text; raises NoteFormatError when it does not follow the format."""
    head, sep, signed_checkpoint = text.partition("\n\n")
    if not sep:
        raise NoteFormatError("proof has no empty line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise NoteFormatError(f"proof starts with {lines[0]!r}, not {HEADER!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = _b64(lines[pos][len("extra ") :], "extra data")
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise NoteFormatError("proof has no 'index N' line")
    index_text = lines[pos][len("index ") :]
    if not _DECIMAL.fullmatch(index_text):
        raise NoteFormatError(f"proof index {index_text!r} is not a decimal without leading zeros")
    hashes = []
    for i, line in enumerate(lines[pos + 1 :]):
        h = _b64(line, f"inclusion proof line {i + 1}")
        if len(h) != 32:
            raise NoteFormatError(f"inclusion proof line {i + 1} is {len(h)} bytes, not a SHA-256 hash")
        hashes.append(h)
    return TlogProof(int(index_text), tuple(hashes), signed_checkpoint, extra)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteFormatError(f"{what} {text!r} is not valid base64") from None


def verify_proof(
    text: str,
    verifier: Verifier,
    *,
    entry: bytes | None = None,
    entry_hash: bytes | None = None,
    origin: str | None = None,
) -> tuple[TlogProof, Checkpoint]:
    """Verifies a tlog-proof@v1 for an entry given as its bytes or its leaf hash.

    Raises SignatureError if the checkpoint is not signed by `verifier`, NoteFormatError if the
    text is malformed, and InvalidProofError or RootMismatchError if the entry is not at the
    claimed index of the checkpointed tree.
    """
    if (entry is None) == (entry_hash is None):
        raise ValueError("give exactly one of entry or entry_hash")
    proof = parse_proof(text)
    checkpoint = open_checkpoint(proof.signed_checkpoint, verifier, origin)
    leaf = leaf_hash(entry) if entry is not None else entry_hash
    assert leaf is not None
    verify_inclusion(leaf, proof.index, checkpoint.size, list(proof.inclusion), checkpoint.root)
    return proof, checkpoint
