"""Regenerates the committed gRPC stubs in this folder from `schemas/audit.proto`.

    .venv/bin/python -m api.gateway.codegen

Runs grpc_tools' bundled protoc (grpcio-tools, pinned in pyproject.toml beside grpcio) with the
proto mapped to `api/gateway/audit.proto`, so the stubs import each other as `api.gateway.*`,
and marks each output as generated so that ruff leaves it alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO = REPO_ROOT / "schemas" / "audit.proto"
OUTPUTS = ("audit_pb2.py", "audit_pb2.pyi", "audit_pb2_grpc.py")
HEADER = "# ruff: noqa\n# Generated from schemas/audit.proto by `python -m api.gateway.codegen`; do not edit.\n"


def generate() -> list[Path]:
    """Runs protoc; returns the files written. Raises RuntimeError if protoc fails."""
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-Iapi/gateway={PROTO.parent}",
        f"--python_out={REPO_ROOT}",
        f"--pyi_out={REPO_ROOT}",
        f"--grpc_python_out={REPO_ROOT}",
        f"api/gateway/{PROTO.name}",
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {PROTO}")
    written = []
    for name in OUTPUTS:
        path = Path(__file__).with_name(name)
        text = path.read_text()
        if not text.startswith("# ruff: noqa"):
            path.write_text(HEADER + text)
        written.append(path)
    return written


def main() -> int:
    for path in generate():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
