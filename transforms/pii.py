"""Sealing personal data so that leaves never cover plaintext (docs/design.md §9).

Each PII value is replaced by a sealed value::

    {"ct": base64(nonce ‖ AES-256-GCM-SIV(value)), "kh": hex(BLAKE2b-256 keyed MAC of value), "kid": key id}

The nonce is derived from (tenant, event id, field), so sealing the same event twice gives the
same bytes and replays stay byte-identical; GCM-SIV stays safe if a nonce ever repeats. The keys
belong to one subject (the actor) and live in a key store; destroying them (crypto-shredding)
makes every `ct` unreadable and every `kh` unlinkable, while the leaves, and so every proof,
stay exactly as they were.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from hashlib import blake2b

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from transforms.errors import AuditlogError

KEY_SIZE = 32
NONCE_SIZE = 12
# Keyed BLAKE2b (RFC 7693) is the MAC: as strong as HMAC-SHA256 here and three times faster on
# the per-event path. The personalisation strings separate the two uses of the subject's MAC key.
_NONCE_PERSON = b"auditlog/nonce/1"
_LOOKUP_PERSON = b"auditlog/lookup1"
LOOKUP_MEMO_SIZE = 64  # lookup hashes remembered per subject


ERASED_MARK = b'{"erased":true}'
"""The canonical bytes of an erased value: what a PII field of an erased subject becomes in a leaf."""


def erased_value() -> dict[str, bool]:
    """The sealed form of a value whose subject was erased before the event was logged.

    The subject has no keys and must not get new ones (that would re-link the person), so the
    value is left out and only marked: the event stays in the log, complete but for the person.
    """
    return {"erased": True}


def is_erased_value(sealed: object) -> bool:
    return isinstance(sealed, dict) and sealed.get("erased") is True


class SubjectErased(AuditlogError):  # noqa: N818 - a base the key store's SubjectErasedError extends
    """Base of the error a key source raises for an erased subject, which must not get keys again."""


class SealError(AuditlogError, ValueError):
    """A sealed value cannot be opened: wrong key, or the ciphertext was altered."""


@dataclass(frozen=True)
class SubjectKeys:
    """One subject's keys: `enc_key` encrypts values, `mac_key` makes lookup hashes and nonces."""

    key_id: str
    enc_key: bytes
    mac_key: bytes
    cipher: AESGCMSIV = field(init=False, repr=False, compare=False)
    # (field, value) -> lookup hash: a subject sends the same email and address again and again.
    # It lives and dies with these keys, so a key store that forgets an erased subject forgets it.
    lookups: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.enc_key) != KEY_SIZE or len(self.mac_key) != KEY_SIZE:
            raise ValueError(f"subject keys must be {KEY_SIZE} bytes each")
        # The key schedule is the costly part of sealing: build it once per subject.
        object.__setattr__(self, "cipher", AESGCMSIV(self.enc_key))
        object.__setattr__(self, "lookups", {})

    def __repr__(self) -> str:  # never print key material
        return f"SubjectKeys(key_id={self.key_id!r})"


def _associated_data(tenant_id: str, event_id: str, field: str) -> bytes:
    return f"{tenant_id}\n{event_id}\n{field}".encode()


def normalize_for_lookup(field: str, value: str) -> str:
    """The form a value is hashed in for lookups: emails compare case-insensitively."""
    return value.strip().lower() if field.endswith("email") else value


def lookup_hash(keys: SubjectKeys, field: str, value: str) -> str:
    """Returns the hex keyed hash that finds events by a PII value (the seed's email_hash)."""
    known = keys.lookups.get((field, value))
    if known is not None:
        return known
    msg = field.encode() + b"\n" + normalize_for_lookup(field, value).encode()
    digest = blake2b(msg, key=keys.mac_key, digest_size=32, person=_LOOKUP_PERSON).hexdigest()
    if len(keys.lookups) >= LOOKUP_MEMO_SIZE:
        keys.lookups.clear()
    keys.lookups[(field, value)] = digest
    return digest


def seal(keys: SubjectKeys, tenant_id: str, event_id: str, field: str, value: str) -> dict[str, str]:
    """Returns the sealed form of one PII value; deterministic for the same inputs and keys."""
    ad = _associated_data(tenant_id, event_id, field)
    nonce = blake2b(ad, key=keys.mac_key, digest_size=NONCE_SIZE, person=_NONCE_PERSON).digest()
    ct = keys.cipher.encrypt(nonce, value.encode(), ad)
    return {
        "ct": base64.b64encode(nonce + ct).decode(),
        "kh": lookup_hash(keys, field, value),
        "kid": keys.key_id,
    }


def unseal(keys: SubjectKeys, tenant_id: str, event_id: str, field: str, sealed: dict[str, str]) -> str:
    """Returns the plaintext of a sealed value; raises SealError if it cannot be opened."""
    try:
        blob = base64.b64decode(sealed["ct"], validate=True)
    except (KeyError, ValueError):
        raise SealError(f"sealed {field} of event {event_id} has no valid ciphertext") from None
    nonce, ct = blob[:NONCE_SIZE], blob[NONCE_SIZE:]
    try:
        plain = keys.cipher.decrypt(nonce, ct, _associated_data(tenant_id, event_id, field))
    except InvalidTag:
        raise SealError(
            f"sealed {field} of event {event_id} does not open with key {keys.key_id}: wrong key or altered"
        ) from None
    return plain.decode()
