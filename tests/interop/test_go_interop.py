"""Byte-compatibility of the pure core with independent Go implementations.

The reference is `tests/interop/go`, a small Go CLI built only from
`golang.org/x/mod/sumdb/note` (C2SP signed notes, docs/design.md §4) and
`github.com/transparency-dev/merkle` v0.0.2 (RFC 6962/9162 hashing, compact ranges and proofs,
§2) — the libraries outside reviewers use. Everything is batched into a handful of Go
process calls.

The binary is built once per session with GOPROXY=off, so this module never downloads: the Go
module cache must have been filled beforehand (`make setup` runs
`go -C tests/interop/go mod download`). Tests skip only when no `go` binary is on PATH.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.interop.gobuild import build_go
from transforms.checkpoint import Checkpoint, parse_checkpoint, sign_checkpoint
from transforms.errors import VerificationError
from transforms.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from transforms.note import Signer, Verifier, key_id, open_note, sign_note

SEED = 20240917  # fixed: a failure must be reproducible
MAX_LEAVES = 1025

GoCall = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _hexes(proof: Sequence[bytes]) -> list[str]:
    return [h.hex() for h in proof]


def _report(what: str, mismatches: list[str]) -> str:
    shown = "\n".join(mismatches[:15])
    more = f"\n… and {len(mismatches) - 15} more" if len(mismatches) > 15 else ""
    return f"{len(mismatches)} {what} disagree between Python and Go (seed {SEED}):\n{shown}{more}"


# --------------------------------------------------------------------------------------------
# The Go reference binary
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def go_call(tmp_path_factory: pytest.TempPathFactory) -> GoCall:
    binary = build_go(tmp_path_factory.mktemp("go-interop"))

    def call(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        run = subprocess.run(
            [str(binary)],
            input=json.dumps(requests),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"Go interop binary failed: {run.stderr}"
        responses = json.loads(run.stdout)
        assert isinstance(responses, list) and len(responses) == len(requests)
        return responses

    return call


# --------------------------------------------------------------------------------------------
# Signed notes and checkpoints (docs/design.md §4)
# --------------------------------------------------------------------------------------------

ORIGIN = "auditlog.example/log/p0003"


def _checkpoints() -> list[Checkpoint]:
    rng = random.Random(SEED)
    leaves = [leaf_hash(rng.randbytes(rng.randrange(0, 64))) for _ in range(37)]
    return [
        Checkpoint(ORIGIN, 0, root([])),
        Checkpoint(ORIGIN, 1, root(leaves[:1])),
        Checkpoint(ORIGIN, 37, root(leaves)),
        Checkpoint(ORIGIN, 37, root(leaves), ("ext/one 1", "ext/two — ünïcode")),
    ]


def _go_verify(vkey: str, msg: str) -> dict[str, Any]:
    return {"op": "note-verify", "vkey": vkey, "msg": msg}


def _python_opens(msg: str | bytes, verifier: Verifier) -> str | None:
    """The opened text, or None if Python rejects the note."""
    try:
        return open_note(msg, verifier).text
    except VerificationError:
        return None


def test_python_signed_checkpoints_open_in_go(go_call: GoCall) -> None:
    signer = Signer.generate(ORIGIN)
    vkey = signer.verifier().encode()
    cps = _checkpoints()
    signed = [sign_checkpoint(cp, signer) for cp in cps]
    responses = go_call([_go_verify(vkey, msg) for msg in signed])
    for cp, msg, resp in zip(cps, signed, responses, strict=True):
        assert resp.get("ok") is True, f"Go rejected a Python-signed checkpoint (vkey {vkey!r}): {resp}\nnote:\n{msg}"
        assert resp["text"] == cp.text()
        assert parse_checkpoint(resp["text"]) == cp


def test_python_verifier_key_is_accepted_by_go_new_verifier(go_call: GoCall) -> None:
    # Several names and fresh keys, so the key ID's hex (leading zeros) and base64 vary.
    signers = [Signer.generate(name) for name in (ORIGIN, "a", "x.example/ü", ORIGIN, ORIGIN)]
    text = "hello, note\n"
    responses = go_call([_go_verify(s.verifier().encode(), sign_note(text, s)) for s in signers])
    for s, resp in zip(signers, responses, strict=True):
        assert resp.get("ok") is True, f"{s.verifier().encode()!r}: {resp}"
        assert resp["text"] == text


def test_go_signs_with_python_private_key(go_call: GoCall) -> None:
    signer = Signer.generate(ORIGIN)
    skey = signer.encode()
    texts = [cp.text() for cp in _checkpoints()] + ["one line\n", "two\nlines — with ünïcode\n"]
    responses = go_call([{"op": "note-sign", "skey": skey, "text": t} for t in texts])
    for text, resp in zip(texts, responses, strict=True):
        assert "error" not in resp, f"Go's note.NewSigner/Sign rejected our PRIVATE+KEY {skey[:30]}…: {resp}"
        msg = resp["msg"]
        note = open_note(msg, signer.verifier())
        assert note.text == text
        assert [s.key_id for s in note.verified] == [signer.key_id]
        # Ed25519 is deterministic, so both implementations must emit the very same bytes.
        assert msg == sign_note(text, signer)


def test_go_generated_keys_parse_in_python(go_call: GoCall) -> None:
    names = [ORIGIN, "b", "sum.golang.org"]
    generated = go_call([{"op": "note-generate", "name": n} for n in names])
    text = Checkpoint(ORIGIN, 0, root([])).text()
    for name, keys in zip(names, generated, strict=True):
        signer = Signer.from_key(keys["skey"])
        verifier = Verifier.from_key(keys["vkey"])
        assert signer.name == verifier.name == name
        assert signer.encode() == keys["skey"]
        assert verifier.encode() == keys["vkey"]
        assert signer.verifier() == verifier
    signed = [sign_note(text, Signer.from_key(keys["skey"])) for keys in generated]
    responses = go_call([_go_verify(keys["vkey"], m) for keys, m in zip(generated, signed, strict=True)])
    assert len(responses) == len(names) and all(r.get("ok") is True for r in responses), responses


def _signer_with_plus_and_slash(name: str) -> Signer:
    """A fixed key whose verifier and signer base64 both contain '+' and '/' (key parsers must
    not split on every '+'), found deterministically from a counter."""
    for k in range(10_000):
        private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"interop %d" % k).digest())
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        signer = Signer(name, key_id(name, public), private)
        vb64, sb64 = signer.verifier().encode().split("+", 2)[2], signer.encode().split("+", 4)[4]
        if all("+" in b and "/" in b for b in (vb64, sb64)):
            return signer
    raise AssertionError("no such key in 10,000 tries")


def test_keys_whose_base64_contains_plus_work_in_both(go_call: GoCall) -> None:
    signer = _signer_with_plus_and_slash(ORIGIN)
    skey, vkey = signer.encode(), signer.verifier().encode()
    assert Signer.from_key(skey).encode() == skey
    assert Verifier.from_key(vkey).encode() == vkey
    text = _checkpoints()[2].text()
    signed, opened = go_call(
        [{"op": "note-sign", "skey": skey, "text": text}, _go_verify(vkey, sign_note(text, signer))]
    )
    assert "error" not in signed, f"Go rejected {skey[:30]}…: {signed}"
    assert signed["msg"] == sign_note(text, signer)
    assert opened.get("ok") is True, f"Go rejected {vkey!r}: {opened}"
    # Go-generated keys are random: with 16 of them, about half contain '+' in their base64.
    generated = go_call([{"op": "note-generate", "name": ORIGIN} for _ in range(16)])
    for keys in generated:
        assert Signer.from_key(keys["skey"]).encode() == keys["skey"]
        assert Verifier.from_key(keys["vkey"]).encode() == keys["vkey"]


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _tampered(msg: bytes) -> Iterator[tuple[int, bytes]]:
    """Every one-byte change of `msg`.

    Inside the signature lines a base64 character gets its top data bit flipped (a change of
    only the padding bits, which decoders ignore, would not be a change at all); every other
    byte gets bit 0 flipped.
    """
    sig_start = msg.rindex(b"\n\n") + 2
    for i, b in enumerate(msg):
        ch = chr(b)
        if i >= sig_start and ch in _B64:
            new = ord(_B64[_B64.index(ch) ^ 0b100000])
        else:
            new = b ^ 0x01
        yield i, msg[:i] + bytes([new]) + msg[i + 1 :]


def test_tampered_notes_are_rejected_by_both(go_call: GoCall) -> None:
    signer = Signer.generate(ORIGIN)
    verifier = signer.verifier()
    vkey = verifier.encode()
    msg = sign_checkpoint(_checkpoints()[3], signer).encode()
    cases = list(_tampered(msg))
    # Raw bytes (some cases are invalid UTF-8), so the note goes to Go base64-encoded.
    responses = go_call([{"op": "note-verify", "vkey": vkey, "msg_b64": _b64(bad)} for _, bad in cases])
    accepted = []
    for (i, bad), resp in zip(cases, responses, strict=True):
        py = _python_opens(bad, verifier)
        if resp.get("ok") is not False or py is not None:
            accepted.append(
                f"byte {i} ({msg[i : i + 1]!r} -> {bad[i : i + 1]!r}): Go={resp} "
                f"Python={'accepted' if py is not None else 'rejected'}"
            )
    assert not accepted, "tampered notes accepted:\n" + "\n".join(accepted)

    # Controls: the untampered note opens in both; the right note under another key in neither.
    other = Signer.generate(ORIGIN).verifier()
    ok, wrong = go_call([_go_verify(vkey, msg.decode()), _go_verify(other.encode(), msg.decode())])
    assert ok.get("ok") is True and _python_opens(msg, verifier) is not None
    assert wrong.get("ok") is False and _python_opens(msg, other) is None


def _edge_notes() -> tuple[Signer, list[tuple[str, str, bool | tuple[bool, bool]]]]:
    """Hand-made notes: (label, message, expected acceptance).

    The expectation is one bool when Python and Go must agree, or (python, go) for a known,
    deliberate divergence (both are within C2SP signed-note).
    """
    a, b = Signer.generate("a.example/log"), Signer.generate("b.example/log")
    text = "a.example/log\n5\n" + _b64(bytes(32)) + "\n"
    good = sign_note(text, a)
    sig_a = good.split("\n\n")[1]
    sig_b = sign_note(text, b).split("\n\n")[1]
    bad_a = sign_note("other\n", a).split("\n\n")[1]  # a's signature over another text
    junk = _b64(b"12345")
    others = [sign_note(text, Signer.generate(f"k{i}")).split("\n\n")[1] for i in range(100)]
    return a, [
        ("valid", good, True),
        ("valid plus an unknown key", text + "\n" + sig_a + sig_b, True),
        ("unknown key only", sign_note(text, b), False),
        ("same signature twice", text + "\n" + sig_a + sig_a, True),
        ("bad then good signature by the known key", text + "\n" + bad_a + sig_a, False),
        # C2SP: a failing known-key signature SHOULD reject the note; Go skips repeats of a key.
        ("good then bad signature by the known key", text + "\n" + sig_a + bad_a, (False, True)),
        ("no trailing newline", good[:-1], False),
        ("CRLF line ends", good.replace("\n", "\r\n"), False),
        ("two spaces after the name", good.replace("log ", "log  "), False),
        ("tab in the text", "a\tb\n\n" + sig_a, False),
        ("text is one empty line", sign_note("\n", a), True),
        ("100 signatures", text + "\n" + "".join(others[:99]) + sig_a, True),
        # C2SP: verifiers SHOULD limit signatures, MUST accept >= 16; both cap at 100, as Go does.
        ("101 signatures", text + "\n" + "".join(others) + sig_a, False),
        ("signature without base64 padding", good[:-1].rstrip("=") + "\n", False),
        ("signature of 4 bytes", text + "\n— a.example/log " + _b64(b"1234") + "\n", False),
        ("unknown name with '+'", text + "\n" + sig_a + "— a+b " + junk + "\n", False),
        ("unknown name with U+00A0", text + "\n" + sig_a + "— a\u00a0b " + junk + "\n", False),
        ("unknown name with U+200B (not a space)", text + "\n" + sig_a + "— a\u200bb " + junk + "\n", True),
        ("empty signature line", text + "\n" + sig_a + "\n", False),
        ("lone em dash line", text + "\n" + sig_a + "—\n", False),
        ("trailing space after signature", text + "\n" + sig_a[:-1] + " \n", False),
        ("two blank lines before signatures", text + "\n\n" + sig_a, False),
        ("no signatures", text + "\n", False),
    ]


def test_edge_case_notes_python_and_go_agree(go_call: GoCall) -> None:
    signer, cases = _edge_notes()
    vkey = signer.verifier().encode()
    responses = go_call([_go_verify(vkey, msg) for _, msg, _ in cases])
    wrong = []
    for (label, msg, expected), resp in zip(cases, responses, strict=True):
        want_py, want_go = expected if isinstance(expected, tuple) else (expected, expected)
        py = _python_opens(msg, signer.verifier()) is not None
        go = resp.get("ok") is True
        if (py, go) != (want_py, want_go):
            wrong.append(f"{label}: Python {py}, Go {go} ({resp.get('error')}); want {want_py}, {want_go}")
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------------------------
# Merkle trees (docs/design.md §2)
# --------------------------------------------------------------------------------------------

BIG_SIZES = [127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1023, 1024, 1025]


def _interesting(n: int, rng: random.Random, k: int) -> list[int]:
    """Edges, powers of two and their neighbours, plus k random values, all in [0, n)."""
    picks = {0, 1, 2, n - 2, n - 1, n // 2}
    p = 1
    while p < n:
        picks.update((p - 1, p, p + 1))
        p <<= 1
    picks.update(rng.randrange(n) for _ in range(k))
    return sorted(x for x in picks if 0 <= x < n)


@dataclass
class MerkleExchange:
    leaves: list[bytes]
    leaf_hashes: list[bytes]
    inclusion_pairs: list[tuple[int, int]]
    consistency_pairs: list[tuple[int, int]]
    py_roots: list[bytes] = field(default_factory=list)
    py_inclusion: list[list[bytes]] = field(default_factory=list)
    py_consistency: list[list[bytes]] = field(default_factory=list)
    bad_inclusion: list[tuple[str, int, int, list[bytes]]] = field(default_factory=list)
    bad_consistency: list[tuple[str, int, int, list[bytes]]] = field(default_factory=list)
    go: dict[str, Any] = field(default_factory=dict)


def _spoil(proof: list[bytes], rng: random.Random) -> Iterator[tuple[str, list[bytes]]]:
    if proof:
        j = rng.randrange(len(proof))
        h = bytearray(proof[j])
        h[rng.randrange(32)] ^= 1 << rng.randrange(8)
        yield f"bit flipped in element {j}", [*proof[:j], bytes(h), *proof[j + 1 :]]
        yield "last element dropped", proof[:-1]
    yield "extra element", [*proof, bytes(32)]


@pytest.fixture(scope="session")
def merkle(go_call: GoCall) -> MerkleExchange:
    rng = random.Random(SEED)
    # Random leaf data of varied length (one of them empty), all distinct so that no spoiled
    # proof below can be valid by coincidence.
    leaves: list[bytes] = []
    seen: set[bytes] = set()
    while len(leaves) < MAX_LEAVES:
        data = rng.randbytes(rng.choice([0, 1, 7, 32, 33, rng.randrange(200)]))
        if data not in seen:
            seen.add(data)
            leaves.append(data)
    hashes = [leaf_hash(d) for d in leaves]

    inclusion_pairs = [(i, n) for n in range(1, 71) for i in range(n)]
    inclusion_pairs += [(i, n) for n in BIG_SIZES for i in _interesting(n, rng, 12)]

    consistency_pairs = [(m, n) for n in range(0, 41) for m in range(0, n + 1)]
    consistency_pairs += [(m, n) for n in range(41, 71) for m in _interesting(n + 1, rng, 3)]
    consistency_pairs += [(m, n) for n in BIG_SIZES for m in _interesting(n + 1, rng, 6)]

    ex = MerkleExchange(leaves, hashes, inclusion_pairs, consistency_pairs)
    ex.py_roots = [root(hashes[:n]) for n in range(MAX_LEAVES + 1)]
    ex.py_inclusion = [inclusion_proof(hashes[:n], i) for i, n in inclusion_pairs]
    ex.py_consistency = [consistency_proof(hashes[:n], m) for m, n in consistency_pairs]

    # Spoiled proofs, which both sides must reject.
    for (i, n), p in rng.sample(list(zip(inclusion_pairs, ex.py_inclusion, strict=True)), 150):
        ex.bad_inclusion += [(how, i, n, bad) for how, bad in _spoil(p, rng)]
        if n > 1:
            ex.bad_inclusion.append(("wrong index", (i + 1) % n, n, p))
    for (m, n), p in rng.sample(list(zip(consistency_pairs, ex.py_consistency, strict=True)), 150):
        ex.bad_consistency += [(how, m, n, bad) for how, bad in _spoil(p, rng)]

    request = {
        "op": "merkle",
        "leaves": [_b64(d) for d in leaves],
        "roots": True,
        "inclusion": inclusion_pairs,
        "consistency": consistency_pairs,
        "verify_inclusion": [
            {"index": i, "size": n, "proof": [_b64(h) for h in p]}
            for (i, n), p in zip(inclusion_pairs, ex.py_inclusion, strict=True)
        ]
        + [{"index": i, "size": n, "proof": [_b64(h) for h in p]} for _, i, n, p in ex.bad_inclusion],
        "verify_consistency": [
            {"size1": m, "size2": n, "proof": [_b64(h) for h in p]}
            for (m, n), p in zip(consistency_pairs, ex.py_consistency, strict=True)
        ]
        + [{"size1": m, "size2": n, "proof": [_b64(h) for h in p]} for _, m, n, p in ex.bad_consistency],
    }
    (resp,) = go_call([request])
    assert "error" not in resp, resp
    ex.go = resp
    return ex


def test_leaf_hashes_match_go(merkle: MerkleExchange) -> None:
    go = [_unb64(h) for h in merkle.go["leaf_hashes"]]
    bad = [
        f"leaf {i} data={d.hex()!r}: Python {p.hex()} Go {g.hex()}"
        for i, (d, p, g) in enumerate(zip(merkle.leaves, merkle.leaf_hashes, go, strict=True))
        if p != g
    ]
    assert not bad, _report("leaf hashes", bad)


def test_roots_match_go_for_every_size(merkle: MerkleExchange) -> None:
    go = [_unb64(h) for h in merkle.go["roots"]]
    assert len(go) == MAX_LEAVES + 1
    bad = [
        f"size {n}: Python {p.hex()} Go {g.hex()}"
        for n, (p, g) in enumerate(zip(merkle.py_roots, go, strict=True))
        if p != g
    ]
    assert not bad, _report("roots", bad)


def test_python_inclusion_proofs_verify_in_go(merkle: MerkleExchange) -> None:
    results = merkle.go["verify_inclusion"][: len(merkle.inclusion_pairs)]
    bad = [
        f"index {i} size {n}: Go says {err!r}; Python proof {_hexes(p)}"
        for (i, n), p, err in zip(merkle.inclusion_pairs, merkle.py_inclusion, results, strict=True)
        if err != ""
    ]
    assert not bad, _report("inclusion proofs", bad)


def test_go_inclusion_proofs_equal_python_bytes(merkle: MerkleExchange) -> None:
    go = [[_unb64(h) for h in p] for p in merkle.go["inclusion"]]
    bad = []
    for (i, n), p, g in zip(merkle.inclusion_pairs, merkle.py_inclusion, go, strict=True):
        if p != g:
            bad.append(f"index {i} size {n}:\n  Python {_hexes(p)}\n  Go     {_hexes(g)}")
            continue
        verify_inclusion(merkle.leaf_hashes[i], i, n, g, merkle.py_roots[n])
    assert not bad, _report("inclusion proofs", bad)


def test_python_consistency_proofs_verify_in_go(merkle: MerkleExchange) -> None:
    results = merkle.go["verify_consistency"][: len(merkle.consistency_pairs)]
    bad = [
        f"{m} -> {n}: Go says {err!r}; Python proof {_hexes(p)}"
        for (m, n), p, err in zip(merkle.consistency_pairs, merkle.py_consistency, results, strict=True)
        if err != ""
    ]
    assert not bad, _report("consistency proofs", bad)


def test_go_consistency_proofs_equal_python_bytes(merkle: MerkleExchange) -> None:
    go = [[_unb64(h) for h in p] for p in merkle.go["consistency"]]
    bad = []
    for (m, n), p, g in zip(merkle.consistency_pairs, merkle.py_consistency, go, strict=True):
        if p != g:
            bad.append(f"{m} -> {n}:\n  Python {_hexes(p)}\n  Go     {_hexes(g)}")
            continue
        verify_consistency(m, n, g, merkle.py_roots[m], merkle.py_roots[n])
    assert not bad, _report("consistency proofs", bad)


def test_spoiled_proofs_are_rejected_by_both(merkle: MerkleExchange) -> None:
    roots = merkle.py_roots
    go_incl = merkle.go["verify_inclusion"][len(merkle.inclusion_pairs) :]
    go_cons = merkle.go["verify_consistency"][len(merkle.consistency_pairs) :]
    assert len(go_incl) == len(merkle.bad_inclusion) > 300
    assert len(go_cons) == len(merkle.bad_consistency) > 200
    accepted = []
    for (how, i, n, p), go_err in zip(merkle.bad_inclusion, go_incl, strict=True):
        with pytest.raises(VerificationError):
            verify_inclusion(merkle.leaf_hashes[i], i, n, p, roots[n])
        if go_err == "":
            accepted.append(f"inclusion index {i} size {n} ({how}): Go accepted {_hexes(p)}")
    for (how, m, n, p), go_err in zip(merkle.bad_consistency, go_cons, strict=True):
        with pytest.raises(VerificationError):
            verify_consistency(m, n, p, roots[m], roots[n])
        if go_err == "":
            accepted.append(f"consistency {m} -> {n} ({how}): Go accepted {_hexes(p)}")
    assert not accepted, "\n".join(accepted)


# --------------------------------------------------------------------------------------------
# Witness cosignatures (C2SP tlog-cosignature, cosignature/v1)
# --------------------------------------------------------------------------------------------


def test_cosignatures_open_in_go(go_call: GoCall) -> None:
    """The real witness's vector and Python-made cosignatures open with Go's note.Open; tampering fails."""
    from tests.unit.test_cosignature import LOG_NOTE, WITNESS_LINE, WITNESS_VKEY
    from transforms.cosignature import CosignatureSigner, add_cosignatures

    log_signer = Signer.generate(ORIGIN)
    witness = CosignatureSigner.generate("witness.example/w1")
    cp = _checkpoints()[2]
    cosigned = add_cosignatures(sign_checkpoint(cp, log_signer), [witness.cosign(cp.text(), 1_767_225_600)])
    other = _checkpoints()[1]
    moved = sign_checkpoint(other, log_signer) + cosigned[cosigned.rindex("\u2014 witness") :]
    requests = [
        {"op": "cosig-verify", "vkey": WITNESS_VKEY, "msg": LOG_NOTE + WITNESS_LINE},
        {
            "op": "cosig-verify",
            "vkey": witness.verifier().encode(),
            "vkey2": log_signer.verifier().encode(),
            "msg": cosigned,
        },
        {"op": "cosig-verify", "vkey": witness.verifier().encode(), "msg": moved},
    ]
    real, ours, tampered = go_call(requests)
    assert real.get("ok") is True, real
    assert ours.get("ok") is True and ours["text"] == cp.text(), ours
    assert tampered.get("ok") is False, tampered


# --------------------------------------------------------------------------------------------
# Tiles (C2SP tlog-tiles, docs/design.md §13) against golang.org/x/mod/sumdb/tlog
# --------------------------------------------------------------------------------------------

TILE_LEAVES = 70_000  # three tile levels: 273 full level-0 tiles, a full level-1 tile, a level-2 tile
# (old, new) tree sizes whose new tiles are compared: from scratch at tile edges, and growth steps.
TILE_SIZE_PAIRS = [(0, n) for n in (1, 2, 255, 256, 257, 511, 512, 513, 65_535, 65_536, 65_537, TILE_LEAVES)] + [
    (1, 256),
    (256, 257),
    (100, 300),
    (257, 65_537),
    (65_535, 65_536),
    (65_536, TILE_LEAVES),
    (69_999, TILE_LEAVES),
    (TILE_LEAVES, TILE_LEAVES),
]


@pytest.fixture(scope="session")
def tile_entries() -> list[bytes]:
    rng = random.Random(SEED + 17)
    return [rng.randbytes(rng.choice([0, 1, 7, rng.randrange(60)])) for _ in range(TILE_LEAVES)]


def test_hash_tiles_equal_go_new_tiles_and_read_tile_data(go_call: GoCall, tile_entries: list[bytes]) -> None:
    """Every tile tlog.NewTiles names, with tlog.ReadTileData's bytes, is what Python publishes."""
    from transforms.tiles import TileBuilder, hash_tiles

    hashes = [leaf_hash(e) for e in tile_entries]
    (resp,) = go_call([{"op": "tiles", "leaves": [_b64(e) for e in tile_entries], "tile_sizes": TILE_SIZE_PAIRS}])
    assert "error" not in resp, resp
    assert len(resp["tiles"]) == len(TILE_SIZE_PAIRS)
    bad = []
    for (old, new), go_tiles in zip(TILE_SIZE_PAIRS, resp["tiles"], strict=True):
        py = [(t.path, data) for t, data in hash_tiles(hashes[:new], old).items()]
        go = [(t["path"], _unb64(t["data"])) for t in go_tiles]
        if [p for p, _ in py] != [p for p, _ in go]:
            bad.append(f"{old} -> {new}: paths Python {[p for p, _ in py][-5:]} Go {[p for p, _ in go][-5:]}")
        elif py != go:
            bad += [f"{old} -> {new}: {p} differs" for (p, d), (_, g) in zip(py, go, strict=True) if d != g]
    assert not bad, _report("tile sets", bad)
    # The streaming builder publishes the same: full tiles as they complete, partials at the end.
    builder = TileBuilder()
    streamed = dict(builder.extend(hashes))
    streamed.update(builder.partial_tiles())
    (whole,) = [
        t for (old, new), t in zip(TILE_SIZE_PAIRS, resp["tiles"], strict=True) if (old, new) == (0, TILE_LEAVES)
    ]
    assert {t.path: d for t, d in streamed.items()} == {t["path"]: _unb64(t["data"]) for t in whole}
    assert builder.root() == root(hashes)


def _published(entries: Sequence[bytes]) -> dict[str, bytes]:
    """A log's hash tiles and entry bundles for its full size, by path, as Python writes them."""
    from transforms.tiles import BundleBuilder, hash_tiles

    resources = {t.path: d for t, d in hash_tiles([leaf_hash(e) for e in entries]).items()}
    bundles = BundleBuilder()
    resources.update({t.path: d for t, d in bundles.extend(entries)})
    partial = bundles.partial_bundle()
    if partial is not None:
        resources[partial[0].path] = partial[1]
    return resources


def _tiles_check(entries: Sequence[bytes], resources: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    return {
        "op": "tiles-check",
        "tree_size": len(entries),
        "tree_root": _b64(root([leaf_hash(e) for e in entries])),
        "resources": {p: _b64(d) for p, d in resources.items()},
        **extra,
    }


def test_go_tile_reader_reads_python_tiles_and_any_flipped_byte_fails(
    go_call: GoCall, tile_entries: list[bytes]
) -> None:
    """tlog.TileHashReader authenticates Python's tiles against the root and every bundle entry
    hashes to its leaf; then every single byte of every tile and bundle of a 600-leaf log is
    flipped in turn, and in the 70,000-leaf log one byte of each edge tile (levels 0-2) and of 40
    other tiles and bundles: each must fail."""
    small = tile_entries[:600]  # 0/000, 0/001, 0/002.p/88, 1/000.p/2; bundles 000, 001, 002.p/88
    small_res = _published(small)
    assert sorted(small_res) == [
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002.p/88",
    ]
    every = [{"path": p, "offset": i} for p, d in sorted(small_res.items()) for i in range(len(d))]
    big_res = _published(tile_entries)
    rng = random.Random(SEED)
    edges = ["tile/2/000.p/1", "tile/1/001.p/17", "tile/1/000", "tile/0/273.p/112", "tile/entries/273.p/112"]
    sample = edges + rng.sample(sorted(set(big_res) - set(edges)), 40)
    one_each = [{"path": p, "offset": rng.randrange(len(big_res[p]))} for p in sample]
    one_each += [{"path": p, "offset": 0} for p in edges]
    small_resp, big_resp = go_call(
        [_tiles_check(small, small_res, flips=every), _tiles_check(tile_entries, big_res, flips=one_each)]
    )
    for entries, resp in ((small, small_resp), (tile_entries, big_resp)):
        assert resp.get("ok") is True, resp.get("error")
        assert resp["entries"] == len(entries)
    passed = [
        f"{f['path']} byte {f['offset']}"
        for flips, resp in ((every, small_resp), (one_each, big_resp))
        for f, err in zip(flips, resp["flip_errors"], strict=True)
        if err == ""
    ]
    assert len(every) > 600 * 32 and not passed, f"Go accepted tampered tiles: {passed[:20]}"


def test_go_tile_reader_refuses_a_wrong_root_a_missing_tile_and_leftover_bytes(go_call: GoCall) -> None:
    entries = [b"entry %d" % i for i in range(300)]
    res = _published(entries)
    wrong_root = {**_tiles_check(entries, res), "tree_root": _b64(root([leaf_hash(e) for e in entries[:299]]))}
    missing = _tiles_check(entries, {p: d for p, d in res.items() if p != "tile/1/000.p/1"})
    leftover = _tiles_check(entries, {**res, "tile/entries/001.p/44": res["tile/entries/001.p/44"] + b"\x00\x00"})
    ok, *refused = go_call([_tiles_check(entries, res), wrong_root, missing, leftover])
    assert ok.get("ok") is True, ok
    assert [r.get("ok") for r in refused] == [False, False, False], refused
