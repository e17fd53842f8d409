"""Write one shard's score outputs: a parquet per scorer, embeddings per clip scorer, and its stats."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from curate import layout
from curate.pool import Pool
from curate.scorers.base import IMAGE_OK, IMAGE_REASON, INDEX, UID, Batch, Scorer, embedding_column
from curate.stages.score.read import NOTES
from curate.uid import check_uids

SCORED = "scored"
MISSING = "missing_from_tar"  # listed as success in the shard parquet, absent from its tar


def sort_rows(rows: Batch) -> Batch:
    """A shard's rows, gathered in arrival order, back in the shard's order."""
    if not rows:
        return {}
    order = np.argsort(rows[INDEX], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def _column(values: np.ndarray, null: np.ndarray | None) -> pa.Array:
    """Arrow column with nulls where the image did not decode (and for NaN floats)."""
    if values.dtype == object:
        return pa.array(values.tolist(), pa.string(), mask=null)
    mask = null
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        mask = nan if mask is None else (mask | nan)
    return pa.array(values, mask=mask if mask is not None and mask.any() else None)


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float → fixed_size_list<float16>[D] (vectors are already L2-normalised)."""
    flat = pa.array(np.ascontiguousarray(vectors, np.float16).reshape(-1), pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1]))


def write_shard(pool: Pool, shard: str, expected: int, rows: Batch, scorers: list[Scorer]) -> dict[str, Any]:
    """Write every scorer's table for the shard (`rows`: all of its rows, in any order; `expected`:
    how many its table lists as downloaded); returns the shard stats for its completion marker."""
    rows = sort_rows(rows)
    n = len(rows[UID]) if rows else 0
    ok = rows[IMAGE_OK].astype(bool) if rows else np.zeros(0, bool)
    uids = pa.array(rows[UID].tolist() if rows else [], pa.string())
    # A tar's .json can carry any uid: one not made by make_uid must stop here, not at filter's merge.
    check_uids(uids, f"{pool.uri(layout.SHARDS)}/{shard} (uids of its samples)")
    for scorer in scorers:
        masked = set(scorer.image_columns())
        cols: dict[str, pa.Array] = {UID: uids}
        for name in scorer.columns():
            values = rows[name] if rows else np.zeros(0, np.float32)
            cols[name] = _column(values, ~ok if name in masked else None)
        pool.write_parquet(layout.scores_file(scorer.name, shard), pa.table(cols))
        dims = scorer.embedding_dims()
        if dims:
            emb: dict[str, pa.Array] = {UID: pa.array(rows[UID][ok].tolist() if rows else [], pa.string())}
            for kind, dim in dims.items():
                vectors = rows[embedding_column(scorer.name, kind)][ok] if rows else np.zeros((0, dim), np.float16)
                emb[f"{kind}_embedding"] = embedding_array(vectors.reshape(-1, dim))
            pool.write_parquet(layout.embeddings_file(scorer.name, shard), pa.table(emb))
    reasons = Counter(rows[IMAGE_REASON][~ok].tolist()) if rows else Counter()
    counts: dict[str, int] = {SCORED: int(ok.sum()), **{str(k): int(v) for k, v in reasons.items()}}
    if expected > n:
        counts[MISSING] = expected - n
    joined_notes = rows[NOTES].tolist() if rows else []
    notes = Counter(note for joined in joined_notes for note in str(joined).split(",") if note)
    return {"samples": n, "expected_samples": expected, "counts": counts,
            "notes": {str(k): int(v) for k, v in notes.items()}, "scorers": [s.name for s in scorers],
            "finished_at": f"{time.time():.3f}"}  # a string: reports sum numbers across shards
