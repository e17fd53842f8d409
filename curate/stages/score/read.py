"""CPU side of the score stage: read a download shard, decode its images once, run the CPU scorers.

`read_and_decode` is the Ray Data task function (one shard per call). It yields numpy batches that
carry the shard id, the sample's index in the shard, uid, caption, the decoded views and the
columns of the scorers that need no model (text_stats, image_stats, language), so model scorers
downstream receive images ready for their actors. A shard that cannot be read yields one row with
`shard_error` set instead of failing the whole dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from curate.pool import Pool
from curate.scorers.base import (
    CAPTION,
    HEIGHT,
    IMAGE_OK,
    IMAGE_REASON,
    INDEX,
    ORIG_HEIGHT,
    ORIG_WIDTH,
    SHARD,
    UID,
    WIDTH,
    Batch,
    ImageView,
    Scorer,
    ScorerConfig,
    build_scorers,
)
from curate.shards import iter_shard_samples
from curate.stages.score.decode import NOTE_TINY, TINY_SIDE, Decoded, decode_image, empty_view, jpeg_size
from curate.stages.score.device_decode import IMAGE_BYTES

SHARD_ERROR = "shard_error"
NOTES = "image_notes"  # "," joined repair notes per sample

# Set-up CPU scorers, reused by every task a Ray worker process runs (models load once per worker).
_SCORER_CACHE: dict[str, list[Scorer]] = {}


def _cpu_scorers(configs: list[ScorerConfig], all_configs: list[ScorerConfig]) -> list[Scorer]:
    key = json.dumps([c.model_dump() for c in configs], sort_keys=True, default=str)
    if key not in _SCORER_CACHE:
        peers = build_scorers(all_configs)
        scorers = [s for s in peers if s.config in configs]
        for s in scorers:
            s.setup()
        _SCORER_CACHE[key] = scorers
    return _SCORER_CACHE[key]


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else -1
    except (TypeError, ValueError):
        return -1


def _assemble(shard_id: str, rows: list[dict[str, Any]], views: list[ImageView],
              device_views: list[ImageView]) -> Batch:
    batch: Batch = {
        SHARD: np.array([shard_id] * len(rows), dtype=object),
        INDEX: np.array([r["index"] for r in rows], np.int64),
        UID: np.array([r["uid"] for r in rows], dtype=object),
        CAPTION: np.array([r["caption"] for r in rows], dtype=object),
        IMAGE_OK: np.array([r["decoded"].ok for r in rows], bool),
        IMAGE_REASON: np.array([r["decoded"].reason for r in rows], dtype=object),
        NOTES: np.array([",".join(r["decoded"].notes) for r in rows], dtype=object),
        WIDTH: np.array([r["width"] for r in rows], np.int32),
        HEIGHT: np.array([r["height"] for r in rows], np.int32),
        ORIG_WIDTH: np.array([r["original_width"] for r in rows], np.int32),
        ORIG_HEIGHT: np.array([r["original_height"] for r in rows], np.int32),
        SHARD_ERROR: np.array([""] * len(rows), dtype=object),
    }
    for view in views:
        if view in device_views:
            # The model actor decodes these itself: CPU-decoded views travel as raw bytes beside the JPEGs.
            batch[view.column] = np.array([r["decoded"].views[view.column].tobytes()
                                           if view.column in r["decoded"].views else b"" for r in rows], dtype=object)
            continue
        blank = empty_view(view)
        batch[view.column] = np.stack([r["decoded"].views.get(view.column, blank) for r in rows]) if rows else \
            np.zeros((0, *blank.shape), np.uint8)
    if device_views:
        batch[IMAGE_BYTES] = np.array([r["jpeg"] for r in rows], dtype=object)
    return batch


def _decode(data: bytes, views: list[ImageView], device_views: list[ImageView], max_pixels: int
            ) -> tuple[Decoded, bytes]:
    """(decoded views, JPEG bytes the model actor decodes itself or b"")."""
    if device_views:
        size = jpeg_size(data)
        if size is not None and size[0] * size[1] <= max_pixels:
            cpu_views = [v for v in views if v not in device_views]
            if cpu_views:
                decoded = decode_image(data, cpu_views, max_pixels)
                if decoded.ok:
                    return decoded, data
            else:
                return Decoded(True, "", [NOTE_TINY] if min(size) < TINY_SIDE else [], *size), data
    return decode_image(data, views, max_pixels), b""


def decode_shard(pool: Pool, shard_id: str, views: list[ImageView], max_pixels: int,
                 rows_per_batch: int, device_views: list[ImageView] | None = None) -> Iterator[Batch]:
    """Batches of decoded samples of one shard (without scorer columns).

    `device_views` are left to the model actors for JPEGs they can decode (jpeg_decode_on: model)."""
    device_views = device_views or []
    rows: list[dict[str, Any]] = []
    for index, sample in enumerate(iter_shard_samples(pool, shard_id)):
        meta = sample.get("meta") or {}
        decoded, jpeg = _decode(sample.get("image") or b"", views, device_views, max_pixels)
        rows.append({
            "jpeg": jpeg,
            "index": index, "uid": sample.get("uid") or meta.get("uid"), "caption": sample.get("caption") or "",
            "decoded": decoded,
            # The download stage's sizes are authoritative; the decoder's are the fallback.
            "width": _int(meta.get("width")) if meta.get("width") is not None else decoded.width,
            "height": _int(meta.get("height")) if meta.get("height") is not None else decoded.height,
            "original_width": _int(meta.get("original_width")), "original_height": _int(meta.get("original_height")),
        })
        if len(rows) >= rows_per_batch:
            yield _assemble(shard_id, rows, views, device_views)
            rows = []
    if rows:
        yield _assemble(shard_id, rows, views, device_views)


def read_and_decode(batch: dict[str, np.ndarray], *, pool: Pool, views: list[ImageView], max_pixels: int,
                    rows_per_batch: int, cpu_configs: list[ScorerConfig],
                    all_configs: list[ScorerConfig], device_views: list[ImageView] | None = None,
                    keep: list[str] | None = None) -> Iterator[Batch]:
    """Ray Data map_batches function over shard ids (batch_size=1).

    `keep`: the image columns model actors downstream read; other views (those only CPU scorers
    use) are dropped once those scorers ran. None keeps every column."""
    scorers = _cpu_scorers(cpu_configs, all_configs)
    drop = [v.column for v in views if v.column not in keep] if keep is not None else []
    for shard_id in batch[SHARD].tolist():
        try:
            for out in decode_shard(pool, shard_id, views, max_pixels, rows_per_batch, device_views):
                for scorer in scorers:
                    out.update(scorer(out))
                for column in drop:
                    del out[column]
                yield out
        except Exception as exc:  # the shard is reported failed by name; other shards go on
            out = _error_batch(shard_id, f"{type(exc).__name__}: {exc}"[:500], views, scorers, device_views or [])
            for column in drop:
                del out[column]
            yield out


def _error_batch(shard_id: str, error: str, views: list[ImageView], scorers: list[Scorer],
                 device_views: list[ImageView]) -> Batch:
    """One placeholder row with every column, so downstream actors see the usual schema."""
    from curate.stages.score.decode import Decoded

    row = {"index": -1, "uid": "", "caption": "", "decoded": Decoded(False, "shard_error"), "width": -1,
           "height": -1, "original_width": -1, "original_height": -1, "jpeg": b""}
    out = _assemble(shard_id, [row], views, device_views)
    for scorer in scorers:
        out.update(scorer(out))
    out[SHARD_ERROR] = np.array([error], dtype=object)
    return out
