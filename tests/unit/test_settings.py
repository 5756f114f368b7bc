"""Settings: a second stack beside the configured one (the tests', a benchmark's own)."""

from __future__ import annotations

from schemas.settings import STACK_PORTS, Settings


def test_a_second_stack_moves_every_stack_port_and_nothing_else() -> None:
    base = Settings()
    moved = base.with_ports_moved(3000)
    assert all(getattr(moved, name) == getattr(base, name) + 3000 for name in STACK_PORTS)
    assert moved.replace(**{name: getattr(base, name) for name in STACK_PORTS}) == base
