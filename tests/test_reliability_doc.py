"""docs/reliability.md must list every test marked as a fault test (regenerate: make reliability-doc)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_reliability_doc_lists_every_fault_test():
    doc = (REPO / "docs" / "reliability.md").read_text()
    marked = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        text = path.read_text()
        for match in re.finditer(r"@pytest\.mark\.fault\((?:.|\n)*?\n(?:@.*\n)*def (\w+)\(", text):
            marked.append(f"tests/{path.name}::{match.group(1)}")
    assert len(marked) >= 20
    missing = [m for m in marked if f"`{m}`" not in doc]
    assert not missing, f"not in docs/reliability.md (run `make reliability-doc`): {missing}"
    assert "| FAILED" not in doc
