"""Evaluation images for decontamination: a folder of image files or webdataset tar(s), embedded with CLIP."""

from __future__ import annotations

import glob
import io
import os
import tarfile
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from curate.errors import ConfigError
from curate.extras import require

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _eval_files(source: str) -> list[str]:
    if os.path.isdir(source):
        return sorted(p for p in glob.glob(os.path.join(source, "**", "*"), recursive=True)
                      if os.path.isfile(p) and _is_image_name(p))
    tars = sorted(glob.glob(source)) if any(c in source for c in "*?[") else [source]
    return [t for t in tars if os.path.isfile(t)]


def eval_source_identity(source: str) -> list[list[str | int]]:
    """(path, size, mtime in ns) of every file the eval set is read from, without reading them: a
    decontamination finished with the same identity is not redone (so the images are not embedded again)."""
    out: list[list[str | int]] = []
    for path in _eval_files(source):
        st = os.stat(path)
        out.append([os.path.relpath(path, source) if os.path.isdir(source) else path, st.st_size, st.st_mtime_ns])
    return out


def iter_eval_images(source: str) -> Iterator[tuple[str, bytes]]:
    """(name, encoded bytes) in a fixed order: sorted file names, or tar member order per sorted tar."""
    if os.path.isdir(source):
        for path in _eval_files(source):
            with open(path, "rb") as fh:
                yield os.path.relpath(path, source), fh.read()
        return
    tars = _eval_files(source)
    if not tars:
        raise ConfigError(f"eval_images {source!r}: no such folder, tar file or glob of tar files")
    for tar_path in tars:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                if member.isfile() and _is_image_name(member.name):
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    yield f"{os.path.basename(tar_path)}:{member.name}", data


def embed_eval_images(source: str, model: str, pretrained: str | None, *, device: str = "cpu",
                      precision: str = "fp32", batch_size: int = 64) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Names, (n, D) L2-normalised float32 embeddings, and counts of images that could not be decoded."""
    require("torch", "models", "decontamination (embedding the eval images)")
    require("open_clip", "models", "decontamination (embedding the eval images)")
    import torch

    from curate.models.loading import load_clip

    clip = load_clip(model, pretrained, device=device, precision=precision)
    names: list[str] = []
    chunks: list[np.ndarray] = []
    counts = {"eval_images": 0, "eval_undecodable": 0}
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            chunks.append(clip.encode_images(torch.stack(batch)).cpu().numpy().astype(np.float32))
            batch.clear()

    for name, data in iter_eval_images(source):
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (UnidentifiedImageError, OSError):
            counts["eval_undecodable"] += 1
            continue
        names.append(name)
        batch.append(clip.preprocess(image))
        counts["eval_images"] += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    if not names:
        raise ConfigError(f"eval_images {source!r}: no decodable images found")
    return names, np.concatenate(chunks), counts
