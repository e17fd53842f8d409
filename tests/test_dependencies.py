"""Dependencies chosen with care: what curate imports is declared, what is pinned is imported, and the
model stack (torch, open_clip) and faiss are optional extras that CPU-only stages never load."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
USER_EXTRAS = ("models", "dedup", "emoji", "gpu", "s3", "gcs")  # what a user installs; dev is for the suite
# Pins whose package is loaded by another package rather than imported by name.
NOT_IMPORTED = {
    "s3fs": "fsspec loads it for s3:// URLs",
    "gcsfs": "fsspec loads it for gs:// URLs",
    "faiss-gpu": "the GPU build of faiss-cpu (module faiss); installed instead of it",
    "fasttext-predict-v2": "the Python >= 3.14 build of fasttext-predict (module fasttext)",
}
# The model stack and faiss, which the CPU-only stages must not import.
HEAVY = ("torch", "torchvision", "open_clip", "timm", "faiss", "matplotlib")


def _requirements(group: str) -> list[Requirement]:
    specs = PYPROJECT["dependencies"] if group == "runtime" else PYPROJECT["optional-dependencies"].get(group, [])
    return [Requirement(s) for s in specs]


def _declared() -> dict[str, set[str]]:
    """Canonical distribution name -> the groups (runtime or extra) that pin it."""
    groups: dict[str, set[str]] = defaultdict(set)
    for group in ["runtime", *PYPROJECT["optional-dependencies"]]:
        for req in _requirements(group):
            if canonicalize_name(req.name) != "curate":  # dev's curate[models,dedup]
                groups[canonicalize_name(req.name)].add(group)
    return groups


def _imports(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import, at module level or inside functions, and of every
    curate.extras.require("module", ...)."""
    found = set()
    for node in ast.walk(tree):
        if _require_call(node):
            found.add(node.args[0].value.split(".")[0])  # type: ignore[attr-defined]
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _require_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("require", "check_installed")
            and len(node.args) == 3
            and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:2]))


def _imports_of(files: list[Path]) -> dict[str, set[str]]:
    """Top-level module -> the files importing it, for the third-party modules among them."""
    local = {"curate", "tests", "benchmarks"}
    local |= {p.stem for d in ("tests", "benchmarks") for p in (ROOT / d).rglob("*.py")}
    local |= {p.name for d in ("tests", "benchmarks") for p in (ROOT / d).iterdir() if p.is_dir()}
    found: dict[str, set[str]] = defaultdict(set)
    for path in files:
        for module in _imports(ast.parse(path.read_text(), str(path))):
            if module not in sys.stdlib_module_names and module not in local:
                found[module].add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _packages() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _packages().get(module, [])}


CURATE_FILES = sorted((ROOT / "curate").rglob("*.py"))


def test_every_third_party_import_in_curate_is_declared() -> None:
    """Runtime or a user extra: a package that arrives only through another one (cv2 through img2dataset)
    disappears when that one is dropped or changes its own dependencies."""
    declared = _declared()
    problems = []
    for module, files in sorted(_imports_of(CURATE_FILES).items()):
        dists = _distributions(module)
        groups = set().union(*(declared.get(d, set()) for d in dists)) if dists else set()
        if not groups & {"runtime", *USER_EXTRAS}:
            problems.append(f"{module} (distribution {sorted(dists) or '?'}; in {sorted(groups) or 'no group'}) "
                            f"imported by {sorted(files)[:3]}")
    assert not problems, "imports not in pyproject.toml's dependencies or a user extra:\n" + "\n".join(problems)


def test_every_runtime_and_extra_pin_is_imported_by_curate() -> None:
    """A pin nothing imports is weight every install carries (img2dataset, duckdb, timm were)."""
    imported = set()
    for module in _imports_of(CURATE_FILES):
        imported |= _distributions(module)
    unused = []
    for group in ("runtime", *USER_EXTRAS):
        for req in _requirements(group):
            name = canonicalize_name(req.name)
            if req.marker is not None and not req.marker.evaluate():
                assert name in NOT_IMPORTED, f"{req}: say in NOT_IMPORTED which pin covers this Python"
                continue
            if name not in imported and name not in NOT_IMPORTED:
                unused.append(f"{group}: {req}")
    assert not unused, "pinned but imported nowhere in curate/ (move to dev or drop):\n" + "\n".join(unused)


def test_require_names_the_extra_that_pins_the_package() -> None:
    """Each require(module, extra, purpose) tells the user to install an extra that really brings `module`."""
    declared = _declared()
    calls = []
    for path in CURATE_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if _require_call(node):
                calls.append((path.relative_to(ROOT), node.lineno, node.args[0].value, node.args[1].value))
    assert len(calls) >= 10  # the scorers, dedup, filter clusters and dfn all go through it
    wrong = [f"{p}:{line}: require({module!r}, {extra!r})" for p, line, module, extra in calls
             if not any(extra in declared.get(d, set()) for d in _distributions(module.split(".")[0]))]
    assert not wrong, "require() names an extra that does not pin the package:\n" + "\n".join(wrong)


def test_tests_benchmarks_and_notebooks_import_only_declared_packages() -> None:
    """`make install` (.[dev]) must bring everything the suite, the benchmarks and the notebooks import."""
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    found = _imports_of(files)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        lines = [line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))]
        for module in _imports(ast.parse("\n".join(lines))):
            if module not in sys.stdlib_module_names and module != "curate":
                found[module].add(str(notebook.relative_to(ROOT)))
    declared = _declared()
    missing = [f"{m} imported by {sorted(f)[:3]}" for m, f in sorted(found.items())
               if not any(declared.get(d) for d in _distributions(m))]
    assert not missing, "imported but declared nowhere in pyproject.toml:\n" + "\n".join(missing)


def test_dev_installs_every_extra_the_suite_needs() -> None:
    dev = _requirements("dev")
    self_ref = [r for r in dev if canonicalize_name(r.name) == "curate"]
    assert self_ref and {"models", "dedup"} <= set(self_ref[0].extras)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path, **env}, cwd=ROOT)


CPU_ONLY = """
import importlib, json, pkgutil, sys, tempfile
from pathlib import Path

import curate.cli, curate.commands, curate.config, curate.stages.balance, curate.stages.filter
for package in (curate.commands, curate.stages.filter, curate.stages.balance):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)

from typer.testing import CliRunner
from curate.cli import app
from curate.pool import Pool
from curate.testing.pool import make_score_pool

runner = CliRunner()
assert runner.invoke(app, ["filter", "--help"]).exit_code == 0
root = tempfile.mkdtemp()
pool = Pool(root + "/pool")
make_score_pool(pool, n_shards=2, rows_per_shard=60, seed=3)
metadata = Path(root) / "metadata.txt"
metadata.write_text("photo\\nthe\\ndog\\nred\\n")
done = runner.invoke(app, ["filter", "--pool", pool.url, "--spec", "filters/datacomp_basic.yaml"])
assert done.exit_code == 0, done.output
done = runner.invoke(app, ["balance", "--pool", pool.url, "--metadata", str(metadata), "--t", "5",
                           "--subset", "datacomp_basic"])
assert done.exit_code == 0, done.output
assert pool.exists("balanced") and pool.exists("subsets/datacomp_basic")
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


@pytest.mark.slow
def test_cpu_only_filter_and_balance_never_import_the_model_stack() -> None:
    """`curate filter` and `curate balance` run end to end (in-process executor) without loading torch,
    open_clip or faiss, so an install without the models and dedup extras runs them."""
    done = _python(CPU_ONLY % (HEAVY,), CURATE_EXECUTOR="local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_import_curate_config_loads_no_optional_package() -> None:
    """Config validation builds the scorer union from the scorer plug-ins: they must stay light."""
    done = _python(f"import sys, curate.config; print(sorted(m for m in {(*HEAVY, 'scipy', 'fasttext')!r} "
                   "if m in sys.modules))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]"]


MISSING = """
import sys
for name in %r:
    sys.modules[name] = None  # what an install without the extra looks like to `import`
from curate.cli import main
sys.argv = ["curate", *%r]
main()
"""


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.fault("score", "the clip scorer without the models extra (open_clip not installed)",
                   "one line naming the extra to install, before any shard is scored")
def test_missing_models_extra_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    from curate.pool import Pool
    from curate.testing.pool import make_score_pool

    make_score_pool(Pool(str(tmp_path / "pool")), n_shards=1, rows_per_shard=10)
    config = tmp_path / "p.yaml"
    config.write_text(f"pool: {tmp_path / 'pool'}\nscore:\n  scorers:\n    - type: clip\n      name: fresh\n"
                      "      model: ViT-B-32\n      pretrained: random\n")
    args = ["score", "--pool", str(tmp_path / "pool"), "--config", str(config)]
    done = _python(MISSING % (("open_clip",), args))
    assert done.returncode == 2, done.stderr[-3000:]
    # Ray's own start-up warnings may come first; the error is the last line, and no traceback.
    assert done.stderr.strip().splitlines()[-1] == ("error: the clip scorer needs open_clip: "
                                                    "pip install 'curate[models]'")
    assert "Traceback" not in done.stderr
    assert not Pool(str(tmp_path / "pool")).exists("scores/fresh")


@pytest.mark.fault("dfn", "eval-dfn without the models extra (torch not installed)",
                   "one line naming the extra to install")
def test_missing_torch_for_eval_dfn_names_the_extra(tmp_path: Path) -> None:
    done = _python(MISSING % (("torch",), ["eval-dfn", "--model", str(tmp_path), "--data", str(tmp_path)]))
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip() == "error: eval-dfn needs torch: pip install 'curate[models]'"


@pytest.mark.fault("filter", "image_clusters k-means without the dedup extra (faiss not installed)",
                   "one line naming the extra to install")
def test_missing_faiss_names_the_dedup_extra() -> None:
    code = ("import sys; sys.modules['faiss'] = None\n"
            "import numpy as np\n"
            "from curate.errors import ConfigError\n"
            "from curate.stages.filter.clusters import train_kmeans\n"
            "try:\n    train_kmeans(np.zeros((4, 2), np.float32), 2)\n"
            "except ConfigError as exc:\n    print(exc)\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "image_clusters (k-means) needs faiss: pip install 'curate[dedup]'"


def test_check_installed_imports_nothing() -> None:
    """A scorer's preflight checks its extra without importing it (importing torch costs the driver seconds)."""
    code = ("import sys; from curate.extras import check_installed; check_installed('torch', 'models', 'x'); "
            "assert 'torch' not in sys.modules; sys.modules['open_clip'] = None\n"
            "try:\n    check_installed('open_clip', 'models', 'the clip scorer')\n"
            "except Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "the clip scorer needs open_clip: pip install 'curate[models]'"
