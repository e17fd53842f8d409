"""The notebooks run top to bottom against a small pool, so they never rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.pool_helpers import make_image_pool

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "curate-test-venv"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory) -> dict[str, str]:
    """A kernel spec pointing at this interpreter (the venv), found through JUPYTER_PATH."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, prefix=str(prefix))
    return {"JUPYTER_PATH": str(prefix / "share" / "jupyter")}


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory) -> str:
    return make_image_pool(tmp_path_factory.mktemp("nb") / "pool", n_shards=2, per_shard=16).pool.url


def _execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS.parent),
                                                                   os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def _text_outputs(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_pool_statistics_notebook(kernel_env, small_pool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_POOL", small_pool)
    nb = _execute("pool_statistics.ipynb", kernel_env, monkeypatch)
    text = _text_outputs(nb)
    assert "2 download shards" in text and "samples loaded" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 4  # status, scores, language/captions/sizes, balancing


def test_filter_explorer_notebook(kernel_env, small_pool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_POOL", small_pool)
    monkeypatch.setenv("CURATE_THRESHOLD", "0.25")
    nb = _execute("filter_explorer.ipynb", kernel_env, monkeypatch)
    text = _text_outputs(nb)
    assert "clip_b32_similarity_score" in text
    assert "kept at 0.25:" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 2  # the sweep curve and the grid around the cut
