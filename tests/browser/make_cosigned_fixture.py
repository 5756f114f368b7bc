"""Makes the cosignature test vector of the browser's verifier from transforms/cosignature.py.

    .venv/bin/python tests/browser/make_cosigned_fixture.py

Takes the real proof bundle fixtures/audit.events.p3.5.tlog-proof, has two witnesses with fixed
keys cosign its checkpoint (cosignature/v1, the code the Go interop test checks) at fixed times,
and writes fixtures/audit.events.p3.5.cosigned.tlog-proof and fixtures/witnesses.json (their
verifier keys and times). Ed25519 is deterministic, so running it again writes the same bytes;
verify_test.mjs checks the browser's verifier (api/query/ui/verify.js) against them.
"""

from __future__ import annotations

import json
import sys
from hashlib import sha256
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from transforms.cosignature import CosignatureSigner, add_cosignatures, check_cosigned  # noqa: E402
from transforms.note import Verifier  # noqa: E402

FIXTURES = Path(__file__).with_name("fixtures")
WITNESSES = (("witness.example/w1", 1767225600), ("witness.example/w2", 1767225661))


def main() -> None:
    proof = (FIXTURES / "audit.events.p3.5.tlog-proof").read_text()
    head, _, note = proof.partition("\n\n")
    text = note[: note.rfind("\n\n") + 1]
    signers = [
        CosignatureSigner.from_private(name, Ed25519PrivateKey.from_private_bytes(sha256(name.encode()).digest()))
        for name, _ in WITNESSES
    ]
    lines = [signer.cosign(text, when) for signer, (_, when) in zip(signers, WITNESSES, strict=True)]
    cosigned = add_cosignatures(note, lines)
    log_key = Verifier.from_key((FIXTURES / "auditlog.local.vkey").read_text())
    verifiers = [s.verifier() for s in signers]
    report = check_cosigned(cosigned, log_key, verifiers, min_witnesses=2)
    assert [c.timestamp for c in report.cosigned] == [when for _, when in WITNESSES]
    (FIXTURES / "audit.events.p3.5.cosigned.tlog-proof").write_text(f"{head}\n\n{cosigned}")
    vector = [{"vkey": v.encode(), "time": when} for v, (_, when) in zip(verifiers, WITNESSES, strict=True)]
    (FIXTURES / "witnesses.json").write_text(json.dumps(vector, indent=2) + "\n")


if __name__ == "__main__":
    main()
