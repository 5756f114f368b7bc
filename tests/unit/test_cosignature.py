"""cosignature/v1 (C2SP tlog-cosignature): a vector from the real witness, key IDs, tamper cases."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.cosignature import (
    CosignatureSigner,
    CosignatureVerifier,
    WitnessError,
    add_cosignatures,
    check_cosigned,
    cosignature_key_id,
    cosigned_message,
    parse_signature_lines,
    split_note,
)
from transforms.errors import NoteFormatError, SignatureError
from transforms.merkle import leaf_hash, root
from transforms.note import Signer, Verifier, key_id, open_note

ORIGIN = "auditlog.test/log"
HASHES = [leaf_hash(f"entry {i}".encode()) for i in range(21)]

# Made by the real witness: litewitness (filippo.io/torchwood v0.6.1, its key in an ssh-agent)
# answered this POST /add-checkpoint ("old 0", blank line, the note below) with WITNESS_LINE.
# The log's key is the fixed seed 0x07 * 32, so the note below is reproducible.
WITNESS_VKEY = "example.com/w+3a2a175b+BAjUMI3hL1kuKbl4UF/rp3E1ak/evIo7QTpBUXtw9Zql"
LOG_NOTE = (
    "auditlog.test/log\n21\nSvea78FcRz5nsuDIk+L3vD1cxCHH7bm4Q7d2/bhAboM=\n\n"
    "— auditlog.test/log LFjVydhcMHqMfP3DlJ4iJTuP0Pt+9JG1g8MVozpjgksPx+/MrKCQE61I4IS0ubVKOsvusdlPETvzxQFYIXn0sGLX4Ac=\n"
)
WITNESS_LINE = (
    "— example.com/w OioXWwAAAABrEUMz4s2lcdjFGupfwob91ui3Z0f1s3U5pJbfXfuNmevH/u3Ozk4j"
    "UiuKGEdNrDhomSUgLTMvTzDm6HeUHEVL4lE/DQ==\n"
)
WITNESS_TIME = 0x6B114333  # the 8 bytes after the key ID


@pytest.fixture(scope="module")
def log_signer() -> Signer:
    pub = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    b64 = base64.b64encode(b"\x01" + b"\x07" * 32).decode()
    return Signer.from_key(f"PRIVATE+KEY+{ORIGIN}+{key_id(ORIGIN, pub):08x}+{b64}")


def test_log_note_is_ours(log_signer: Signer) -> None:
    assert sign_checkpoint(Checkpoint(ORIGIN, 21, root(HASHES)), log_signer) == LOG_NOTE


def test_witness_vector_verifies() -> None:
    witness = CosignatureVerifier.from_key(WITNESS_VKEY)
    assert witness.encode() == WITNESS_VKEY
    assert witness.key_id == 0x3A2A175B
    [line] = parse_signature_lines(WITNESS_LINE)
    assert line.key_id == witness.key_id
    text, _ = split_note(LOG_NOTE)
    assert witness.verify(text, line.signature) == WITNESS_TIME


def test_check_cosigned_counts_the_witness(log_signer: Signer) -> None:
    cosigned = LOG_NOTE + WITNESS_LINE
    witness = CosignatureVerifier.from_key(WITNESS_VKEY)
    report = check_cosigned(cosigned, log_signer.verifier(), [witness], min_witnesses=1, origin=ORIGIN)
    assert [c.witness for c in report.cosigned] == ["example.com/w"]
    assert report.cosigned[0].timestamp == WITNESS_TIME
    # The log's own verifier still opens it: the cosignature is a line from an unknown key.
    assert open_note(cosigned, log_signer.verifier()).text == split_note(LOG_NOTE)[0]
    assert add_cosignatures(LOG_NOTE, parse_signature_lines(WITNESS_LINE)) == cosigned
    assert add_cosignatures(cosigned, parse_signature_lines(WITNESS_LINE)) == cosigned  # no duplicates


def test_missing_witness_is_named(log_signer: Signer) -> None:
    witness = CosignatureVerifier.from_key(WITNESS_VKEY)
    with pytest.raises(WitnessError, match=r"0 of the required 1 .*witness example.com/w: no cosignature"):
        check_cosigned(LOG_NOTE, log_signer.verifier(), [witness], min_witnesses=1)
    assert check_cosigned(LOG_NOTE, log_signer.verifier(), [witness], min_witnesses=0).cosigned == ()


def test_cosignature_on_another_checkpoint_fails(log_signer: Signer) -> None:
    """A split view: the witness's line moved onto a checkpoint of the same size with another root."""
    forged = sign_checkpoint(Checkpoint(ORIGIN, 21, root(HASHES[:20] + [leaf_hash(b"other")])), log_signer)
    witness = CosignatureVerifier.from_key(WITNESS_VKEY)
    with pytest.raises(WitnessError, match=r"witness example.com/w: its cosignature does not verify"):
        check_cosigned(forged + WITNESS_LINE, log_signer.verifier(), [witness], min_witnesses=1)


@pytest.mark.parametrize("flip", [4, 8, 11, 40, 75])
def test_any_flipped_byte_fails(log_signer: Signer, flip: int) -> None:
    [line] = parse_signature_lines(WITNESS_LINE)
    blob = bytearray(line.signature)
    blob[flip - 4 if flip >= 4 else 0] ^= 1
    witness = CosignatureVerifier.from_key(WITNESS_VKEY)
    assert witness.verify(split_note(LOG_NOTE)[0], bytes(blob)) is None


def test_sign_and_verify_round_trip() -> None:
    signer = CosignatureSigner.generate("witness.test/w1")
    text = Checkpoint(ORIGIN, 21, root(HASHES)).text()
    sig = signer.cosign(text, 1_700_000_000)
    assert signer.verifier().verify(text, sig.signature) == 1_700_000_000
    assert CosignatureVerifier.from_key(signer.verifier().encode()) == signer.verifier()
    assert cosigned_message(text, 5) == b"cosignature/v1\ntime 5\n" + text.encode()


def test_key_id_uses_alg_4() -> None:
    pub = b"\x01" * 32
    assert cosignature_key_id("w", pub) != key_id("w", pub)  # 0x01 is a plain note key


def test_log_key_is_not_a_witness_key(log_signer: Signer) -> None:
    with pytest.raises(NoteFormatError, match="not a cosignature/v1 key"):
        CosignatureVerifier.from_key(log_signer.verifier().encode())
    with pytest.raises(NoteFormatError):
        Verifier.from_key(WITNESS_VKEY)


def test_bad_log_signature_is_not_a_witness_matter() -> None:
    other = Signer.generate(ORIGIN)
    with pytest.raises(SignatureError):
        check_cosigned(LOG_NOTE + WITNESS_LINE, other.verifier(), [CosignatureVerifier.from_key(WITNESS_VKEY)])


def test_only_checkpoints_are_cosigned() -> None:
    with pytest.raises(NoteFormatError):
        cosigned_message("hello\n", 1)


def test_one_witness_given_twice_counts_once_toward_min_witnesses() -> None:
    """`--witness w.vkey --witness w.vkey --min-witnesses 2` must not pass on one cosignature."""
    import pytest as _pytest

    from transforms.checkpoint import Checkpoint, sign_checkpoint
    from transforms.cosignature import WitnessError, check_cosigned
    from transforms.note import Signer

    log = Signer.generate("example.com/log")
    note = sign_checkpoint(Checkpoint("example.com/log", 3, bytes(32)), log)
    signer = CosignatureSigner.generate("example.com/w1")
    body = note.split("\n\n", 1)[0] + "\n"
    cosigned = add_cosignatures(note, [signer.cosign(body, 1_700_000_000)])
    witness = signer.verifier()
    assert len(check_cosigned(cosigned, log.verifier(), [witness], 1).cosigned) == 1
    with _pytest.raises(WitnessError, match="distinct keys"):
        check_cosigned(cosigned, log.verifier(), [witness, witness], 2)
