"""C2SP signed notes with Ed25519, byte-compatible with Go's golang.org/x/mod/sumdb/note.

A note is UTF-8 text ending in a newline, a blank line, then signature lines::

    example.com/log
    42
    qG8...=

    — example.com/log Az3grl...

Each signature line is an em dash, a space, the key name, a space and base64(key ID ‖ signature),
where the key ID is the first four bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key). Keys are
written as Go writes them:

    verifier: name+hexkeyid+base64(0x01 ‖ public key)
    signer:   PRIVATE+KEY+name+hexkeyid+base64(0x01 ‖ seed)
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from transforms.errors import NoteFormatError, SignatureError

ALG_ED25519 = b"\x01"
SIG_PREFIX = "\u2014 "  # em dash and space
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
MAX_NOTE_SIZE = 1_000_000
MAX_SIGNATURES = 100  # as Go's sumdb/note; C2SP asks verifiers for a limit of at least 16


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteFormatError(f"key name {name!r} must be non-empty with no spaces and no '+'")


def key_id(name: str, public_key: bytes) -> int:
    """Returns the 32-bit key ID: the first four bytes of SHA-256(name ‖ newline ‖ 0x01 ‖ key)."""
    digest = sha256(name.encode() + b"\n" + ALG_ED25519 + public_key).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteFormatError(f"{what} {text!r} is not valid base64") from None


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def parse_public_key(
    vkey: str, alg: bytes, what: str, key_id_of: Callable[[str, bytes], int], kind: str
) -> tuple[str, int, Ed25519PublicKey]:
    """Parses `name+hexkeyid+base64(alg ‖ pubkey)` into (name, key id, key); `what` and `kind` word the errors.

    Shared by log verifier keys (alg 0x01) and witness keys (cosignature/v1, alg 0x04); the key
    id must be `key_id_of(name, pubkey)`, as Go's sumdb/note checks it.
    """
    vkey = vkey.strip()
    # The base64 key may itself contain '+': split off only the name and the key ID, as
    # Go's note.NewVerifier does (names cannot contain '+').
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteFormatError(f"{what} {vkey!r} is not name+keyid+base64key")
    name, hex_id, b64 = parts
    _check_name(name)
    raw = _b64decode(b64, what)
    if len(raw) != 33 or raw[:1] != alg:
        raise NoteFormatError(f"{what} for {name!r} is not {kind} (0x{alg.hex()} ‖ 32 bytes)")
    try:
        claimed = int(hex_id, 16)
    except ValueError:
        raise NoteFormatError(f"{what} id {hex_id!r} is not hexadecimal") from None
    if len(hex_id) != 8 or claimed != key_id_of(name, raw[1:]):
        raise NoteFormatError(f"{what} id {hex_id!r} does not match the key for {name!r}")
    return name, claimed, Ed25519PublicKey.from_public_bytes(raw[1:])


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that checks note signatures."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        """Parses a verifier key `name+hexkeyid+base64(0x01 ‖ pubkey)`."""
        name, claimed, public = parse_public_key(vkey, ALG_ED25519, "verifier key", key_id, "an Ed25519 key")
        return cls(name, claimed, public)

    def encode(self) -> str:
        raw = ALG_ED25519 + raw_public(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key that signs notes."""

    name: str
    key_id: int
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        _check_name(name)
        private = Ed25519PrivateKey.generate()
        return cls(name, key_id(name, raw_public(private.public_key())), private)

    @classmethod
    def from_key(cls, skey: str) -> Signer:
        """Parses a signer key `PRIVATE+KEY+name+hexkeyid+base64(0x01 ‖ seed)`."""
        skey = skey.strip()
        if not skey.startswith(PRIVATE_KEY_PREFIX):
            raise NoteFormatError("signer key does not start with PRIVATE+KEY+")
        parts = skey[len(PRIVATE_KEY_PREFIX) :].split("+", 2)  # the base64 may contain '+'.
        if len(parts) != 3:
            raise NoteFormatError("signer key is not PRIVATE+KEY+name+keyid+base64key")
        name, hex_id, b64 = parts
        _check_name(name)
        raw = _b64decode(b64, "signer key")
        if len(raw) != 33 or raw[:1] != ALG_ED25519:
            raise NoteFormatError(f"signer key for {name!r} is not an Ed25519 seed (0x01 ‖ 32 bytes)")
        private = Ed25519PrivateKey.from_private_bytes(raw[1:])
        kid = key_id(name, raw_public(private.public_key()))
        if len(hex_id) != 8 or hex_id != f"{kid:08x}":
            raise NoteFormatError(f"signer key id {hex_id!r} does not match the key for {name!r}")
        return cls(name, kid, private)

    def encode(self) -> str:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        b64 = base64.b64encode(ALG_ED25519 + seed).decode()
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id:08x}+{b64}"

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.private_key.public_key())

    def sign(self, text: bytes) -> bytes:
        return self.private_key.sign(text)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = struct.pack(">I", self.key_id) + self.signature
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text and the signatures that verified."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")
    for ch in text:
        if ch < " " and ch != "\n":
            raise NoteFormatError(f"note text contains control character {ch!r}")


def sign_note(text: str, *signers: Signer) -> str:
    """Returns `text` followed by a blank line and one signature line per signer."""
    _check_text(text)
    if not signers:
        raise ValueError("sign_note needs at least one signer")
    body = text.encode()
    lines = [NoteSignature(s.name, s.key_id, s.sign(body)).line() for s in signers]
    return text + "\n" + "".join(lines)


def split_note(message: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Splits a signed note into its text and its signature lines, checking only the format."""
    if len(message) > MAX_NOTE_SIZE:
        raise NoteFormatError(f"note is {len(message)} bytes or more, above the limit of {MAX_NOTE_SIZE}")
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteFormatError("note is not valid UTF-8") from None
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("note has no blank line between text and signatures")
    text, block = message[: split + 1], message[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise NoteFormatError("note signature block must end with a newline")
    return text, parse_signature_lines(block)


def parse_signature_lines(block: str) -> list[NoteSignature]:
    """Parses signature lines (`— name base64`, each ending in a newline), as a witness returns them."""
    if not block.endswith("\n"):
        raise NoteFormatError("signature lines must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    out = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise NoteFormatError(f"signature line {line!r} does not start with an em dash and a space")
        name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not name or not b64 or " " in b64:
            raise NoteFormatError(f"signature line {line!r} is not '— name signature'")
        _check_name(name)
        blob = _b64decode(b64, "signature")
        if len(blob) < 5:
            raise NoteFormatError(f"signature from {name!r} is too short ({len(blob)} bytes)")
        out.append(NoteSignature(name, int(struct.unpack(">I", blob[:4])[0]), blob[4:]))
    return out


def open_note(message: str | bytes, *verifiers: Verifier) -> Note:
    """Splits a signed note and checks its signatures against `verifiers`.

    Returns the note when at least one known key's signature verifies. Raises NoteFormatError
    for a malformed note and SignatureError when a known key's signature is wrong or no
    signature comes from a known key.
    """
    text, signatures = split_note(message)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    body = text.encode()
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
            continue
        if not verifier.verify(body, sig.signature):
            raise SignatureError(f"signature by {sig.name} (key {sig.key_id:08x}) does not verify")
        verified.append(sig)
    if not verified:
        names = ", ".join(f"{s.name}/{s.key_id:08x}" for s in unverified) or "none"
        wanted = ", ".join(f"{v.name}/{v.key_id:08x}" for v in verifiers) or "none"
        raise SignatureError(f"no signature from a known key (signed by: {names}; known: {wanted})")
    return Note(text, tuple(verified), tuple(unverified))
