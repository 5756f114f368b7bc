"""A configured witness: its name, URL and cosignature verifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transforms.cosignature import CosignatureVerifier


@dataclass(frozen=True)
class Witness:
    """A configured witness: a short name, its URL and its cosignature verifier."""

    name: str
    url: str
    verifier: CosignatureVerifier

    @classmethod
    def from_config(cls, name: str, url: str, vkey: str) -> Witness:
        return cls(name, url.rstrip("/"), CosignatureVerifier.from_key(vkey))


def witnesses_from_settings(settings: Any) -> list[Witness]:
    return [Witness.from_config(w.name, w.url, w.vkey) for w in settings.witness_list]
