"""Evaluation-set decontamination: each pool sample's highest cosine to any evaluation image.

The evaluation images are embedded once, in the driver, with the model that produced the pool's
embeddings; one Ray task per embedding shard then searches them with an exact faiss inner-product
index (eval sets are small: tens of thousands of images fit in memory). A sample is flagged when
its best cosine exceeds the threshold; nothing is grouped or kept, every flagged sample goes.

Passes: `<name>/search` (per embedding shard; redone for a shard whose embeddings changed, or for
all when the config or the eval images changed), then `<name>/groups` (one pseudo-shard: the
merge into dedup/<name>.parquet). A finished method with unchanged inputs embeds nothing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from curate import layout
from curate.config import DecontaminateDedup
from curate.errors import ConfigError
from curate.extras import require
from curate.pool import Pool
from curate.stage import Pass, StageContext
from curate.stages.dedup.common import (
    MethodResult,
    already_done,
    check_unique_uids,
    finish_method,
    groups_pass,
    method_fingerprint,
    require_shard_files,
    run_groups,
    shard_ids,
    sort_by_uid,
    table_identity,
)
from curate.stages.dedup.embeddings import embedding_matrix
from curate.stages.dedup.eval_images import embed_eval_images, eval_source_identity


def nearest_eval(pool_emb: np.ndarray, eval_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine and index of the nearest evaluation image for each (normalised) pool embedding."""
    index = require("faiss", "dedup", "decontamination").IndexFlatIP(eval_emb.shape[1])
    index.add(np.ascontiguousarray(eval_emb, dtype=np.float32))
    sims, ids = index.search(np.ascontiguousarray(pool_emb, dtype=np.float32), 1)
    return sims[:, 0], ids[:, 0].astype(np.int64)


def contamination_shard(pool: Pool, shard_id: str, payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    table = pool.read_parquet(layout.shard_table(settings["embeddings_dir"], shard_id),
                              columns=["uid", settings["column"]])
    emb = embedding_matrix(table[settings["column"]])
    eval_emb = np.asarray(settings["eval_embeddings"], dtype=np.float32)
    if len(emb) and emb.shape[1] != eval_emb.shape[1]:
        raise ConfigError(f"{settings['embeddings_dir']}: embeddings have {emb.shape[1]} dims but the eval model "
                          f"gives {eval_emb.shape[1]}; decontaminate with the model that made the pool's embeddings")
    sims, ids = nearest_eval(emb, eval_emb) if len(emb) else (np.zeros(0, np.float32), np.zeros(0, np.int64))
    flagged = sims > settings["threshold"]
    pool.write_parquet(layout.dedup_result(settings["work"], shard_id), pa.table({
        "uid": table["uid"],
        "eval_index": pa.array(ids, pa.int64()),
        "eval_max_cosine": pa.array(sims, pa.float32()),
        "is_duplicate": pa.array(flagged),
    }))
    return {"samples": table.num_rows, "counts": {"contaminated": int(flagged.sum())}}


def run_decontaminate(ctx: StageContext, method: DecontaminateDedup, *,
                      eval_embeddings: tuple[list[str], np.ndarray] | None = None) -> dict[str, Any]:
    """`eval_embeddings` (names, vectors) skips embedding the eval images; for callers that have them."""
    require("faiss", "dedup", "decontamination")  # before the eval images are embedded, not in a Ray task
    pool = ctx.pool
    name = method.output_name
    shards = shard_ids(pool)
    embeddings_dir = layout.embeddings_dir(method.embeddings)
    require_shard_files(pool, embeddings_dir, shards, f"embeddings of {method.embeddings!r}")
    inputs = table_identity(pool, embeddings_dir, shards)
    eval_id = eval_source_identity(method.eval_images) if eval_embeddings is None else _eval_identity(*eval_embeddings)
    work = layout.dedup_work(name)
    settings: dict[str, Any] = {"method": method, "embeddings_dir": embeddings_dir, "shards": shards, "work": work,
                                "names": [], "counts": {}, "started": time.time()}
    groups = groups_pass(method, contamination_groups, settings,
                         method_fingerprint(method, embeddings=inputs, eval_images=eval_id))
    if already_done(ctx, groups):
        return run_groups(ctx, groups)
    counts: dict[str, int] = {}
    if eval_embeddings is None:
        names, vectors, counts = embed_eval_images(method.eval_images, method.model, method.pretrained,
                                                   device=method.device, precision=method.precision,
                                                   batch_size=method.batch_size)
    else:
        names, vectors = eval_embeddings
    _check_dims(pool, layout.shard_table(embeddings_dir, shards[0]), method.column, vectors.shape[1])
    search = {"embeddings_dir": embeddings_dir, "column": method.column, "eval_embeddings": vectors,
              "threshold": method.threshold, "work": work}
    tables = inputs["tables"] if inputs else {}
    ctx.run_pass(Pass(f"{name}/search", contamination_shard, {s: None for s in shards}, search,
                      fingerprint={"config": method.model_dump(mode="json"), **_eval_identity(names, vectors)},
                      shard_inputs=lambda sid, _p: tables.get(sid),
                      outputs=lambda sid, _p, _st: [layout.dedup_result(work, sid)]))
    settings.update(names=names, counts=counts)
    return run_groups(ctx, groups)


def _eval_identity(names: list[str], vectors: np.ndarray) -> dict[str, Any]:
    return {"eval_names": names, "eval_sum": float(np.asarray(vectors, np.float64).sum())}


def contamination_groups(pool: Pool, _sid: str, _payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    """Merge this run's per-shard results into dedup/<name>.parquet."""
    method: DecontaminateDedup = settings["method"]
    work = settings["work"]
    result = sort_by_uid(pa.concat_tables([pool.read_parquet(layout.dedup_result(work, s))
                                           for s in settings["shards"]]))
    check_unique_uids(result["uid"], pool.uri(settings["embeddings_dir"]))
    n = result.num_rows
    eval_index = result["eval_index"].to_numpy()
    names_arr = pa.array(settings["names"], pa.string())
    return finish_method(pool, method, MethodResult(
        result["uid"].combine_chunks(), np.arange(n),
        extra={"eval_max_cosine": result["eval_max_cosine"].combine_chunks(),
               "eval_image": names_arr.take(pa.array(eval_index)) if n else pa.array([], pa.string())},
        counts=settings["counts"],
        group=eval_index,
        is_duplicate=result["is_duplicate"].to_numpy(zero_copy_only=False),
    ), settings["started"])


def _check_dims(pool: Pool, rel: str, column: str, eval_dim: int) -> None:
    """Fail before any shard runs when the eval model is not the one that embedded the pool."""
    schema = pool.parquet_schema(rel)
    if column not in schema.names:
        raise ConfigError(f"{pool.uri(rel)}: no column {column!r}")
    kind = schema.field(column).type
    dim = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    if dim != eval_dim:
        raise ConfigError(f"{pool.uri(rel)}: {column} has {dim} dims but the eval model gives {eval_dim}; "
                          f"decontaminate with the model that made the pool's embeddings")
