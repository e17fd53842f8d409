"""Generated DataComp-format metadata (parquet + .npz) for tests and benchmarks, built vectorised.

The columns and .npz arrays are DataComp's (uid, url, text, original_width, original_height,
clip_b32_similarity_score, clip_l14_similarity_score, face_bboxes, sha256; b32_img, b32_txt,
l14_img, l14_txt); captions mix English and other languages so a language filter has work to do.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.testing import random_hex

ENGLISH = ("the", "a", "photo", "of", "red", "blue", "house", "dog", "cat", "garden", "with", "and", "small",
           "large", "beautiful", "old", "new", "car", "street", "view", "from", "mountain", "river", "city")
OTHER = ("das", "ein", "haus", "mit", "und", "der", "hund", "la", "maison", "avec", "le", "chat", "una",
         "casa", "con", "perro", "gato", "grande")

def metadata_table(rows: int, seed: int, first_row: int = 0) -> pa.Table:
    """One DataComp metadata table of `rows` rows (uids random, so unique in practice)."""
    rng = np.random.default_rng(seed)
    uids = random_hex(rng, rows)
    index = pa.array(np.arange(first_row, first_row + rows).astype(str))
    urls = pc.binary_join_element_wise("http://img.example/", index, ".jpg", "")
    english = rng.random(rows) < 0.7
    nwords = rng.integers(1, 9, rows)
    offsets = np.concatenate([[0], np.cumsum(nwords)]).astype(np.int32)
    vocab = np.array(ENGLISH + OTHER, dtype=object)
    pick = np.where(np.repeat(english, nwords), rng.integers(0, len(ENGLISH), offsets[-1]),
                    rng.integers(len(ENGLISH), len(vocab), offsets[-1]))
    words = pa.array(vocab[pick], pa.string())
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words), " ")
    width = rng.integers(50, 2000, rows).astype(np.int64)
    height = rng.integers(50, 2000, rows).astype(np.int64)
    b32 = rng.normal(0.28, 0.05, rows).astype(np.float64)
    l14 = rng.normal(0.25, 0.05, rows).astype(np.float64)
    faces = pa.array([[]] * rows, pa.list_(pa.list_(pa.float64())))
    sha = random_hex(rng, rows, 32)
    return pa.table({"uid": uids, "url": urls, "text": text, "original_width": width, "original_height": height,
                     "clip_b32_similarity_score": b32, "clip_l14_similarity_score": l14,
                     "face_bboxes": faces, "sha256": sha})


def write_npz(path: Path, rows: int, seed: int, dims: tuple[int, int] = (512, 768)) -> None:
    """DataComp's per-file .npz: b32_img, b32_txt, l14_img, l14_txt, float16 and L2-normalised."""
    rng = np.random.default_rng(seed + 7919)
    arrays = {}
    for key, dim in (("b32_img", dims[0]), ("b32_txt", dims[0]), ("l14_img", dims[1]), ("l14_txt", dims[1])):
        v = rng.normal(size=(rows, dim)).astype(np.float32)
        arrays[key] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def write_metadata_dir(directory: Path, files: int, rows_per_file: int, seed: int = 0, npz: bool = True,
                       dims: tuple[int, int] = (512, 768), row_group_size: int = 1_000_000) -> list[Path]:
    """`files` DataComp metadata parquets (and .npz) named 00000000.parquet, …; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(files):
        path = directory / f"{i:08d}.parquet"
        pq.write_table(metadata_table(rows_per_file, seed * 100_003 + i, i * rows_per_file), path,
                       row_group_size=row_group_size)
        if npz:
            write_npz(path.with_suffix(".npz"), rows_per_file, seed * 100_003 + i, dims)
        out.append(path)
    return out

