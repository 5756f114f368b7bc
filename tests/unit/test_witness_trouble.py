"""A witness that answers, but not usefully, is retried: only a 422 is stored as refusal evidence.

A wrong URL (404), a log the witness's operator has not added yet (403), throttling (429) or an
answer without a valid cosignature (a mistyped vkey) must not write a WORM "refusal" that would
make every later `auditlog verify` fail; the publisher backs off and tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipelines.io.archive.testing import InMemoryArchive
from pipelines.witnessing import Publisher, Witness
from tests.synthetic import ORIGIN, build_logs
from transforms.cosignature import CosignatureSigner
from transforms.note import Signer


@pytest.fixture(params=[(404, "404 page not found"), (403, "unknown key"), (429, "slow down"), (200, "— x AAAA\n")])
def answering(request: pytest.FixtureRequest) -> Iterator[str]:
    status, body = request.param

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_an_unhelpful_answer_is_retried_and_stores_no_evidence(answering: str) -> None:
    signer = Signer.generate(ORIGIN)
    archive = InMemoryArchive()
    build_logs(archive, None, 100, logs=1, block_size=50, signer=signer, seed=1)
    witness = Witness.from_config("w", answering, CosignatureSigner.generate("witness.test/w").verifier().encode())
    publisher = Publisher(archive, signer.verifier(), signer.verifier().encode(), ORIGIN, [witness])
    assert publisher.sync_once() == 0
    assert publisher.stats.refused == 0 and publisher.stats.failures >= 1
    assert not [k for k in archive.keys("logs/") if "witness-refusals" in k], "trouble was stored as evidence"
    (row,) = publisher.lag()
    assert row.error and not row.refused
