"""C2SP tlog-cosignature (cosignature/v1): a witness's timestamped signature on a checkpoint.

A witness (C2SP tlog-witness) cosigns a checkpoint only if it is consistent with every checkpoint
of the same origin it cosigned before, so a log cannot show two histories to two auditors, or roll
back and re-sign, without some witness refusing. A cosignature is an ordinary signed-note signature
line added to the checkpoint note::

    — witness.example/w1 BASE64(key ID ‖ timestamp ‖ Ed25519 signature)

- the key ID is the first four bytes of SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key) (0x04 names
  cosignature/v1, where 0x01 names a plain Ed25519 note signature);
- the timestamp is 8 bytes, big-endian seconds since the Unix epoch;
- the signature is Ed25519 over the lines ``cosignature/v1`` and ``time <timestamp>`` followed by the checkpoint
  body (the note text, every line ending in a newline);
- a witness's verifier key is written ``name+hexkeyid+base64(0x04 ‖ public key)``.

The same checkpoint text carries the operator's signature and any number of cosignatures, so a
cosigned checkpoint is still a valid signed note for verifiers that know only the log's key (they
ignore lines from unknown keys), and byte-compatible with Go's golang.org/x/mod/sumdb/note with
torchwood's CosignatureVerifier (checked in tests/interop/).

`check_cosigned` is what the CLI, the archive verifier and the proof verifier call.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from transforms.checkpoint import Checkpoint, parse_checkpoint
from transforms.errors import NoteFormatError, SignatureError, VerificationError
from transforms.note import (
    NoteSignature,
    Verifier,
    _check_name,
    _check_text,
    open_note,
    parse_public_key,
    parse_signature_lines,
    raw_public,
    split_note,
)

ALG_COSIGNATURE_V1 = b"\x04"
COSIGNATURE_HEADER = "cosignature/v1"
TIMESTAMP_SIZE = 8
SIGNATURE_SIZE = 64


class WitnessError(VerificationError):
    """Too few witnesses cosigned a checkpoint, or a witness's cosignature does not verify."""


def cosignature_key_id(name: str, public_key: bytes) -> int:
    """The 32-bit key ID of a cosignature/v1 key: SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[:4]."""
    digest = sha256(name.encode() + b"\n" + ALG_COSIGNATURE_V1 + public_key).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a witness signs: the cosignature/v1 header, the time line, then the checkpoint body."""
    _check_text(checkpoint_text)
    parse_checkpoint(checkpoint_text)  # only checkpoints are cosigned
    if not 0 <= timestamp < 2**63:
        raise NoteFormatError(f"cosignature timestamp {timestamp} is out of range")
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n".encode() + checkpoint_text.encode()


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's named cosignature/v1 public key."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_key(cls, vkey: str) -> CosignatureVerifier:
        """Parses a witness verifier key `name+hexkeyid+base64(0x04 ‖ pubkey)`.

        A log's key (0x01) cannot stand for a witness: it is refused as not a cosignature/v1 key.
        """
        name, claimed, public = parse_public_key(
            vkey, ALG_COSIGNATURE_V1, "witness key", cosignature_key_id, "a cosignature/v1 key"
        )
        return cls(name, claimed, public)

    @classmethod
    def from_public(cls, name: str, public_key: bytes) -> CosignatureVerifier:
        _check_name(name)
        return cls(name, cosignature_key_id(name, public_key), Ed25519PublicKey.from_public_bytes(public_key))

    def encode(self) -> str:
        raw = ALG_COSIGNATURE_V1 + raw_public(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, checkpoint_text: str, signature: bytes) -> int | None:
        """Returns the cosignature's timestamp if it verifies over `checkpoint_text`, else None."""
        if len(signature) != TIMESTAMP_SIZE + SIGNATURE_SIZE:
            return None
        (timestamp,) = struct.unpack(">Q", signature[:TIMESTAMP_SIZE])
        if timestamp >= 2**63:
            return None
        try:
            message = cosigned_message(checkpoint_text, timestamp)
            self.public_key.verify(signature[TIMESTAMP_SIZE:], message)
        except (InvalidSignature, NoteFormatError):
            return None
        return int(timestamp)


@dataclass(frozen=True)
class CosignatureSigner:
    """A witness's cosignature/v1 private key (what litewitness does, for tests and vectors)."""

    name: str
    key_id: int
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> CosignatureSigner:
        return cls.from_private(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_private(cls, name: str, private_key: Ed25519PrivateKey) -> CosignatureSigner:
        _check_name(name)
        return cls(name, cosignature_key_id(name, raw_public(private_key.public_key())), private_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.key_id, self.private_key.public_key())

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        signature = self.private_key.sign(cosigned_message(checkpoint_text, timestamp))
        return NoteSignature(self.name, self.key_id, struct.pack(">Q", timestamp) + signature)


def add_cosignatures(signed_checkpoint: str, signatures: list[NoteSignature]) -> str:
    """Returns the signed note with `signatures` appended (lines already present are not repeated)."""
    text, present = split_note(signed_checkpoint)
    lines = [s.line() for s in present]
    for s in signatures:
        if s.line() not in lines:
            lines.append(s.line())
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class Cosigned:
    """A witness's valid cosignature on a checkpoint."""

    witness: str
    key_id: int
    timestamp: int


@dataclass(frozen=True)
class WitnessReport:
    """What `check_cosigned` found: the checkpoint, the valid cosignatures, and why others were not."""

    checkpoint: Checkpoint
    cosigned: tuple[Cosigned, ...]
    problems: dict[str, str] = field(default_factory=dict)  # witness name -> why it does not count


def _distinct(witnesses: list[CosignatureVerifier] | tuple[CosignatureVerifier, ...]) -> list[CosignatureVerifier]:
    """The witnesses with each public key once: one witness given twice (or under two names) counts once."""
    seen: set[bytes] = set()
    out = []
    for witness in witnesses:
        raw = raw_public(witness.public_key)
        if raw not in seen:
            seen.add(raw)
            out.append(witness)
    return out


def check_cosigned(
    signed_checkpoint: str | bytes,
    log_verifier: Verifier,
    witnesses: list[CosignatureVerifier] | tuple[CosignatureVerifier, ...],
    min_witnesses: int = 0,
    origin: str | None = None,
) -> WitnessReport:
    """Verifies the log's signature and each known witness's cosignature on a checkpoint note.

    Raises SignatureError/NoteFormatError when the log's own signature or the note is bad, and
    WitnessError, naming each witness and why, when a known witness's cosignature line does not
    verify or fewer than `min_witnesses` of `witnesses` validly cosigned the checkpoint.
    """
    witnesses = _distinct(witnesses)
    if min_witnesses > len(witnesses):
        raise WitnessError(
            f"--min-witnesses {min_witnesses} asks for more witnesses than the {len(witnesses)} distinct keys given"
        )
    note = open_note(signed_checkpoint, log_verifier)
    checkpoint = parse_checkpoint(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteFormatError(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    _, signatures = split_note(signed_checkpoint)
    valid: list[Cosigned] = []
    problems: dict[str, str] = {}
    bad: list[str] = []
    for witness in witnesses:
        lines = [s for s in signatures if s.name == witness.name and s.key_id == witness.key_id]
        if not lines:
            problems[witness.name] = "no cosignature from this witness on the checkpoint"
            continue
        stamps = [witness.verify(note.text, s.signature) for s in lines]
        if any(t is None for t in stamps):
            problems[witness.name] = "its cosignature does not verify over this checkpoint"
            bad.append(witness.name)
            continue
        valid.append(Cosigned(witness.name, witness.key_id, min(t for t in stamps if t is not None)))
    where = f"{checkpoint.origin} at size {checkpoint.size}"
    if bad:
        raise WitnessError("; ".join(f"witness {name}: {problems[name]}" for name in bad) + f" ({where})")
    if len(valid) < min_witnesses:
        missing = "; ".join(f"witness {name}: {why}" for name, why in problems.items())
        raise WitnessError(f"{len(valid)} of the required {min_witnesses} witness cosignature(s) on {where}: {missing}")
    return WitnessReport(checkpoint, tuple(valid), problems)


__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosigned",
    "CosignatureSigner",
    "CosignatureVerifier",
    "SignatureError",
    "WitnessError",
    "WitnessReport",
    "add_cosignatures",
    "check_cosigned",
    "cosignature_key_id",
    "cosigned_message",
    "parse_signature_lines",
    "split_note",
]
