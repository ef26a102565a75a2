"""docs/providers.md documents every provider kind, and its generated tables are the ones the kinds' own
``Config`` models give (``clarion providers reference --write docs/providers.md`` refreshes them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.channels import reference, registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


@pytest.mark.parametrize("kind", sorted(registry.KINDS))
def test_each_kind_is_documented_with_its_current_fields(kind: str) -> None:
    documented = reference.generated_part(DOC.read_text(), kind)
    assert documented is not None, f"docs/providers.md has no section for {kind}"
    assert documented == reference.table(registry.KINDS[kind]), (
        f"the {kind} table is out of date: run clarion providers reference --write docs/providers.md"
    )


def test_every_secret_field_is_marked_secret() -> None:
    for kind, cls in registry.KINDS.items():
        table = reference.table(cls)
        for name in cls.Config.secret_fields:
            [row] = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")]
            assert "| secret |" in row, (kind, name)
