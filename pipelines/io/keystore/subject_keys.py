"""New subject keys: random from the operating system, or derived from a seed (CI replays only)."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transforms.pii import KEY_SIZE, SubjectKeys

__all__ = ["KEY_ID_SIZE", "SUBJECT_MATERIAL_SIZE", "derive_subject_keys", "random_subject_keys"]

KEY_ID_SIZE = 8
"""Bytes of a subject key id (16 hex digits): a label carried in sealed values, not an index."""
SUBJECT_MATERIAL_SIZE = 2 * KEY_SIZE + KEY_ID_SIZE

_SEED_SALT = b"auditlog/keystore/subject-keys/1"
_SEED_ID_LABEL = b"auditlog/keystore/seed-id/1"


def _keys_from_material(material: bytes) -> SubjectKeys:
    enc, mac, kid = material[:KEY_SIZE], material[KEY_SIZE : 2 * KEY_SIZE], material[2 * KEY_SIZE :]
    return SubjectKeys(key_id=kid.hex(), enc_key=enc, mac_key=mac)


def random_subject_keys() -> SubjectKeys:
    """New keys from the operating system's CSPRNG: the production default."""
    return _keys_from_material(os.urandom(SUBJECT_MATERIAL_SIZE))


def derive_subject_keys(key_seed: bytes, tenant_id: str, subject_id: str) -> SubjectKeys:
    """Keys derived from a seed: HKDF-SHA256(seed, info = tenant ‖ 0x00 ‖ subject).

    For CI replays only: a fresh stack replaying a recorded topic then seals every event into the
    same bytes (docs/design.md §6). Anyone who knows the seed can read every sealed value, and
    erasure no longer shreds anything, so production must never set AUDITLOG_KEY_SEED. Tenant ids
    cannot contain 0x00 (schema pattern), so the info string is unambiguous.
    """
    info = tenant_id.encode() + b"\x00" + subject_id.encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SUBJECT_MATERIAL_SIZE, salt=_SEED_SALT, info=info)
    return _keys_from_material(hkdf.derive(key_seed))


def _key_mode(key_seed: bytes | None) -> str:
    if key_seed is None:
        return "random"
    return "seeded:" + hmac.new(key_seed, _SEED_ID_LABEL, hashlib.sha256).hexdigest()[:16]
