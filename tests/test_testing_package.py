"""curate.testing holds helpers for tests, benchmarks and the demo: no pipeline module may import it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CURATE = Path(__file__).resolve().parent.parent / "curate"
# The demo is a user command built on the test helpers (a local web server, generated images).
ALLOWED = ("testing", "demo")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = CURATE) -> set[str]:
    """Every module `path` (under package `root`) imports, relative imports resolved, `from a import b`
    counted as a and a.b."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _imports_testing(path: Path, root: Path = CURATE) -> list[str]:
    return sorted(m for m in imported_modules(path, root) if m == "curate.testing" or m.startswith("curate.testing."))


def test_no_pipeline_module_imports_curate_testing() -> None:
    pipeline = [p for p in CURATE.rglob("*.py") if p.relative_to(CURATE).parts[0] not in ALLOWED]
    assert len(pipeline) > 50, "the walk should see the whole package"
    offenders = {str(p.relative_to(CURATE.parent)): _imports_testing(p) for p in pipeline}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("source, where", [
    ("import curate.testing.http\n", "curate/stages/x.py"),
    ("from curate.testing.pool import make_score_pool\n", "curate/stages/x.py"),
    ("from curate import testing\n", "curate/stages/x.py"),
    ("from ..testing import synthetic\n", "curate/stages/x.py"),
    ("from ...testing.watgen import write_wat\n", "curate/stages/ingest/x.py"),
    ("from . import testing\n", "curate/x.py"),
])
def test_the_check_sees_every_import_form(tmp_path: Path, source: str, where: str) -> None:
    # The same walk on a planted module, so a blind spot in it cannot pass the test above silently.
    root, path = tmp_path / "curate", tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert _imports_testing(path, root), source


def test_the_check_ignores_other_imports(tmp_path: Path) -> None:
    path = tmp_path / "curate" / "stages" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("import testing\nfrom curate import testing_notes\nfrom .testing import x\nimport curate.pool\n")
    assert _imports_testing(path, tmp_path / "curate") == []
