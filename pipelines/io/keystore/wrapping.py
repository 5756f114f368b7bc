"""Master keys in use: their ids and key-check values, and wrapping subject keys under them.

A subject key is stored only wrapped (AES-256-GCM-SIV under a key derived from the master), bound
to its tenant, subject, key id and master id, so a database writer cannot swap keys between rows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipelines.io.keystore.errors import KeyStoreError, MasterKeyError
from transforms.pii import KEY_SIZE, SubjectKeys

__all__ = ["MASTER_KEY_SIZE", "WRAP_NONCE_SIZE", "master_key_id"]

MASTER_KEY_SIZE = 32
WRAP_NONCE_SIZE = 12

_CHECK_LABEL = b"auditlog/keystore/key-check/1"
_MASTER_ID_LABEL = b"auditlog/keystore/master-id/1"
_WRAP_INFO = b"auditlog/keystore/wrap/1"


def master_key_id(master_key: bytes) -> str:
    """The public id of a master key (16 hex digits), stored beside everything it wraps."""
    return hmac.new(master_key, _MASTER_ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class _Master:
    """One master key, ready to use: its id, key-check value and wrapping cipher."""

    master_id: str
    check_value: bytes
    cipher: AESGCMSIV = field(repr=False)

    @classmethod
    def of(cls, key: bytes) -> _Master:
        if len(key) != MASTER_KEY_SIZE:
            raise MasterKeyError(f"a master key is {MASTER_KEY_SIZE} bytes, not {len(key)}")
        wrap_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAP_INFO).derive(key)
        return cls(
            master_id=master_key_id(key),
            check_value=hmac.new(key, _CHECK_LABEL, hashlib.sha256).digest(),
            cipher=AESGCMSIV(wrap_key),
        )


def _wrap_aad(tenant_id: str, subject_id: str, key_id: str, master_id: str) -> bytes:
    # Binding the wrap to its row stops a database writer from swapping keys between subjects.
    parts = [_WRAP_INFO, *(p.encode() for p in (tenant_id, subject_id, key_id, master_id))]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _wrap(master: _Master, tenant_id: str, subject_id: str, keys: SubjectKeys) -> bytes:
    nonce = os.urandom(WRAP_NONCE_SIZE)
    aad = _wrap_aad(tenant_id, subject_id, keys.key_id, master.master_id)
    return nonce + master.cipher.encrypt(nonce, keys.enc_key + keys.mac_key, aad)


def _unwrap(master: _Master, tenant_id: str, subject_id: str, key_id: str, blob: bytes) -> SubjectKeys:
    aad = _wrap_aad(tenant_id, subject_id, key_id, master.master_id)
    try:
        plain = master.cipher.decrypt(blob[:WRAP_NONCE_SIZE], blob[WRAP_NONCE_SIZE:], aad)
    except InvalidTag:
        raise KeyStoreError(
            f"the key of subject {subject_id!r} (tenant {tenant_id!r}) wrapped under master "
            f"{master.master_id} does not open: the key store was altered or damaged"
        ) from None
    return SubjectKeys(key_id=key_id, enc_key=plain[:KEY_SIZE], mac_key=plain[KEY_SIZE:])
