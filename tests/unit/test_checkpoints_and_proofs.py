"""Signed notes, checkpoints and tlog-proof@v1 bundles: round trips and tamper cases."""

from __future__ import annotations

import base64
from hashlib import sha256

import pytest

from transforms.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from transforms.errors import InvalidProofError, NoteFormatError, RootMismatchError, SignatureError
from transforms.merkle import inclusion_proof, leaf_hash, root
from transforms.note import Signer, Verifier, key_id, open_note, sign_note
from transforms.tlogproof import format_proof, parse_proof, verify_proof

# A fixed key so the expected bytes below never change (the seed is 32 bytes of 0x07).
SKEY = "PRIVATE+KEY+auditlog.test/log+" + "{kid}+" + base64.b64encode(b"\x01" + b"\x07" * 32).decode()
ENTRIES = [f"entry {i}".encode() for i in range(21)]
HASHES = [leaf_hash(e) for e in ENTRIES]
ORIGIN = "auditlog.test/log"


@pytest.fixture(scope="module")
def signer() -> Signer:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Signer.from_key(SKEY.format(kid=f"{key_id(ORIGIN, pub):08x}"))


@pytest.fixture(scope="module")
def verifier(signer: Signer) -> Verifier:
    return Verifier.from_key(signer.verifier().encode())


@pytest.fixture(scope="module")
def signed(signer: Signer) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, len(HASHES), root(HASHES)), signer)


def test_key_id_is_first_four_bytes_of_sha256_of_name_newline_alg_key(signer):
    pub = signer.verifier().encode().split("+", 2)[2]
    raw = base64.b64decode(pub)
    want = int.from_bytes(sha256(ORIGIN.encode() + b"\n" + raw).digest()[:4], "big")
    assert signer.key_id == want
    assert signer.verifier().encode().startswith(f"{ORIGIN}+{want:08x}+")


def test_keys_round_trip_through_their_text_form(signer):
    again = Signer.from_key(signer.encode())
    assert again.encode() == signer.encode()
    assert Verifier.from_key(signer.verifier().encode()).encode() == signer.verifier().encode()


def test_signed_checkpoint_layout(signed):
    text, sig_block = signed.split("\n\n")
    assert text == f"{ORIGIN}\n21\n{base64.b64encode(root(HASHES)).decode()}"
    assert sig_block.startswith(f"\u2014 {ORIGIN} ")
    assert signed.endswith("\n")
    # Ed25519 is deterministic, so the note is stable byte for byte.
    assert len(base64.b64decode(sig_block.split(" ")[2])) == 4 + 64


def test_checkpoint_round_trip(signed, verifier):
    cp = open_checkpoint(signed, verifier, origin=ORIGIN)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 21, root(HASHES))


def _replace_line(note: str, line_no: int, new: str) -> str:
    lines = note.split("\n")
    lines[line_no] = new
    return "\n".join(lines)


def test_altered_checkpoint_text_is_rejected(signed, verifier):
    cases = [
        _replace_line(signed, 1, "22"),  # size
        _replace_line(signed, 0, "auditlog.test/other"),  # origin
        _replace_line(signed, 2, base64.b64encode(root(HASHES[:20])).decode()),  # root
        signed.replace("\n\n", "\nextension\n\n", 1),  # added line
    ]
    for tampered in cases:
        with pytest.raises(SignatureError):
            open_checkpoint(tampered, verifier)


def test_flipped_signature_bit_is_rejected(signed, verifier):
    text, sig_line = signed.split("\n\n")
    prefix, b64 = sig_line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01
    tampered = f"{text}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(tampered, verifier)


def test_wrong_key_is_rejected(signed):
    other = Signer.generate(ORIGIN).verifier()
    with pytest.raises(SignatureError, match="no signature from a known key"):
        open_checkpoint(signed, other)


def test_signature_by_another_key_with_the_same_name_is_rejected(verifier):
    impostor = Signer.generate(ORIGIN)
    forged = sign_checkpoint(Checkpoint(ORIGIN, 21, root(HASHES)), impostor)
    with pytest.raises(SignatureError):
        open_checkpoint(forged, verifier)


def test_origin_mismatch_is_rejected(signed, verifier):
    with pytest.raises(NoteFormatError, match="origin"):
        open_checkpoint(signed, verifier, origin="auditlog.test/elsewhere")


@pytest.mark.parametrize(
    "bad",
    [
        "no blank line\n",
        "text\n\nnot a signature line\n",
        "text\n\n\u2014 name\n",
        "text\n\n\u2014 name !!!notbase64\n",
        "text\n\n\u2014 name AAAA\n",
        "text\n\n\u2014 name AAAAAAAA",
        "text with \x07 bell\n\n\u2014 name AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_format_errors(bad, verifier):
    with pytest.raises(NoteFormatError):
        open_note(bad, verifier)


@pytest.mark.parametrize(
    "text",
    [
        "origin\n012\nAAAA\n",
        "origin\n-1\n" + "A" * 44 + "\n",
        "origin\n5\nnot base64\n",
        "origin\n5\n",
        "\n5\nAA==\n",
        "origin\n5\n" + base64.b64encode(b"x" * 31).decode() + "\n",
    ],
)
def test_malformed_checkpoint_bodies(text):
    with pytest.raises(NoteFormatError):
        parse_checkpoint(text)


def test_note_text_must_end_with_newline(signer):
    with pytest.raises(NoteFormatError):
        sign_note("no newline", signer)


def test_bad_key_strings_are_rejected(signer):
    vkey = signer.verifier().encode()
    name, kid, b64 = vkey.split("+", 2)
    for bad in [
        f"{name}+{kid}",
        f"{name}+00000000+{b64}",
        f"other+{kid}+{b64}",
        f"{name}+{kid}+AAAA",
        f"na me+{kid}+{b64}",
    ]:
        with pytest.raises(NoteFormatError):
            Verifier.from_key(bad)
    with pytest.raises(NoteFormatError):
        Signer.from_key(signer.encode().replace("PRIVATE+KEY+", ""))


# tlog-proof@v1


def _proof(index: int, signed: str) -> str:
    return format_proof(index, inclusion_proof(HASHES, index), signed)


def test_proof_layout(signed):
    text = _proof(5, signed)
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1] == "index 5"
    assert text.endswith(signed)
    parsed = parse_proof(text)
    assert parsed.index == 5 and list(parsed.inclusion) == inclusion_proof(HASHES, 5)
    assert parsed.signed_checkpoint == signed


def test_proof_with_extra_round_trips(signed):
    text = format_proof(3, inclusion_proof(HASHES, 3), signed, extra=b"hello")
    assert text.split("\n")[1] == "extra aGVsbG8="
    assert parse_proof(text).extra == b"hello"


def test_every_entry_verifies(signed, verifier):
    for i, entry in enumerate(ENTRIES):
        proof, cp = verify_proof(_proof(i, signed), verifier, entry=entry, origin=ORIGIN)
        assert proof.index == i and cp.size == 21


def test_proof_tamper_cases(signed, verifier):
    good = _proof(5, signed)
    lines = good.split("\n")
    sibling = base64.b64decode(lines[2])
    flipped = base64.b64encode(bytes([sibling[0] ^ 1]) + sibling[1:]).decode()
    cases = {
        "wrong entry": (good, ENTRIES[6], RootMismatchError),
        "wrong index": (good.replace("index 5", "index 4"), ENTRIES[5], RootMismatchError),
        "index beyond size": (good.replace("index 5", "index 21"), ENTRIES[5], InvalidProofError),
        "flipped proof bit": (good.replace(lines[2], flipped), ENTRIES[5], RootMismatchError),
        "truncated proof": (good.replace(lines[2] + "\n", ""), ENTRIES[5], InvalidProofError),
        "extended proof": (good.replace("\n\n", "\n" + lines[2] + "\n\n", 1), ENTRIES[5], InvalidProofError),
        "altered checkpoint": (good.replace("\n21\n", "\n22\n"), ENTRIES[5], SignatureError),
        "leading zero index": (good.replace("index 5", "index 05"), ENTRIES[5], NoteFormatError),
        "bad header": (good.replace("tlog-proof@v1", "tlog-proof@v2"), ENTRIES[5], NoteFormatError),
        "no checkpoint": (good.split("\n\n")[0], ENTRIES[5], NoteFormatError),
        "not base64": (good.replace(lines[2], "%%%"), ENTRIES[5], NoteFormatError),
    }
    for name, (text, entry, error) in cases.items():
        with pytest.raises(error):
            verify_proof(text, verifier, entry=entry)
        assert name


def test_proof_under_another_key_is_rejected(signed):
    with pytest.raises(SignatureError):
        verify_proof(_proof(5, signed), Signer.generate(ORIGIN).verifier(), entry=ENTRIES[5])
