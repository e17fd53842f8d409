"""Decontamination: pool embeddings and eval images embedded by the same CLIP model (load_clip).

The model is curate-tiny with seeded random weights saved in the local-directory layout: a fixed
random image embedding, which is enough here because copies of an image land close together
while different images do not. Untrained weights squeeze all cosines towards 1 (copies >= 0.999,
unrelated <= 0.996 here), hence the high threshold; a real model spreads them further.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from curate.config import DedupConfig
from curate.errors import ConfigError
from curate.stages.dedup import run
from curate.stages.dedup.embeddings import embedding_array
from tests.test_dedup_pool import build_pool, jpeg, make_copy, random_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import open_clip

    from curate.models.save import save_clip_dir
    from curate.models.tiny import TINY_MODEL, register_tiny_configs

    register_tiny_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    return save_clip_dir(model, open_clip.get_model_config(TINY_MODEL), tmp_path_factory.mktemp("m") / "tiny")


def embed_pool(pool, model_dir: Path, images: dict[str, bytes]) -> None:
    from curate.models.loading import load_clip

    clip = load_clip(str(model_dir))
    for sid in pool.listdir("embeddings/proj"):
        uids = pool.read_parquet(f"embeddings/proj/{sid}", columns=["uid"])["uid"].to_pylist()
        pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(images[u])).convert("RGB")) for u in uids])
        vectors = clip.encode_images(pixels).numpy()
        table = pa.table({"uid": uids, "image_embedding": embedding_array(vectors)})
        pool.write_parquet(f"embeddings/tiny/{sid}", table)


def test_flags_planted_eval_images_and_nothing_else(tmp_path: Path, model_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    planted = build_pool(str(tmp_path / "pool"), n_originals=60, n_duplicated=0, n_shards=2)
    embed_pool(planted.pool, model_dir, planted.images)
    # Eval set: re-encoded copies of 8 pool images, plus 12 images that are not in the pool.
    contaminated = planted.uids[:8]
    rng = np.random.default_rng(99)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for i, uid in enumerate(contaminated):
        (eval_dir / f"in_pool_{i}.jpg").write_bytes(make_copy("reencode", planted.images[uid]))
    for i in range(12):
        (eval_dir / f"other_{i}.png").write_bytes(jpeg(random_image(rng)))
    (eval_dir / "notes.txt").write_text("not an image")
    method = {"method": "decontaminate", "eval_images": str(eval_dir), "model": str(model_dir),
              "embeddings": "tiny", "threshold": 0.998}
    report = run(planted.pool, DedupConfig(methods=[method]), quiet=True)
    table = planted.pool.read_parquet("dedup/decontaminate.parquet")
    flagged = {u for u, d in zip(table["uid"].to_pylist(), table["is_duplicate"].to_pylist(), strict=True) if d}
    assert flagged == set(contaminated)
    stats = report["methods"]["decontaminate"]
    assert stats["counts"]["eval_images"] == 20
    rows = {r["uid"]: r for r in table.to_pylist()}
    for i, uid in enumerate(contaminated):
        assert rows[uid]["eval_image"] == f"in_pool_{i}.jpg"

    # The same eval set as a webdataset tar gives the same flags.
    tar_path = tmp_path / "eval.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path in sorted(eval_dir.iterdir()):
            tar.add(path, arcname=f"{path.stem}.{path.suffix[1:]}")
    run(planted.pool, DedupConfig(methods=[{**method, "name": "decon_tar", "eval_images": str(tar_path)}]),
        quiet=True)
    table = planted.pool.read_parquet("dedup/decon_tar.parquet")
    assert {u for u, d in zip(table["uid"].to_pylist(), table["is_duplicate"].to_pylist(), strict=True) if d} == \
        set(contaminated)


def test_wrong_model_or_eval_set_is_a_clear_error(tmp_path: Path, model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    planted = build_pool(str(tmp_path / "pool"), n_originals=4, n_duplicated=0, n_shards=1)
    (tmp_path / "eval").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "eval" / "a.png")
    # embeddings/proj are 128-d pixel projections; the tiny model gives 64-d vectors.
    method = {"method": "decontaminate", "eval_images": str(tmp_path / "eval"), "model": str(model_dir),
              "embeddings": "proj"}
    with pytest.raises(ConfigError, match="dims"):
        run(planted.pool, DedupConfig(methods=[method]), quiet=True)
    with pytest.raises(ConfigError, match="no such folder"):
        run(planted.pool, DedupConfig(methods=[{**method, "eval_images": str(tmp_path / "nope.tar")}]), quiet=True)
