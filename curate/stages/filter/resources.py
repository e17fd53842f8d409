"""Files conditions need besides the pool (synset lists, WordNet, centroids, reference embeddings),
loaded once by the driver into EvalContext.resources; and the k-means pass of image_clusters.

A `clusters:` image_clusters condition trains its centroids at filter time, DataComp's way, on the
embeddings of the samples that pass every earlier top-level condition (DataComp: its caption filter),
gathered in shard order; the centroids are written to subsets/<name>/centroids-<k>.npy.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curate import layout
from curate.errors import ConfigError
from curate.extras import require
from curate.pool import Pool
from curate.stages.filter import clusters as cl
from curate.stages.filter.columns import load_shard_columns
from curate.stages.filter.evaluate import EvalContext, Evaluator, combine, condition_columns, resource_conditions
from curate.stages.filter.spec import (
    ClusterCondition,
    ColumnCondition,
    FilterSpec,
    SourceMap,
    SynsetCondition,
    iter_conditions,
)
from curate.stages.filter.wordnet import SynsetMatcher, WordNet, read_synset_ids

if TYPE_CHECKING:
    from curate.stages.filter import FilterSettings


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def embedding_sources(spec: FilterSpec, pool: Pool, sources: SourceMap) -> dict[str, str]:
    """Table name -> embeddings/<scorer> for every image_clusters condition; errors when a pool lacks them."""
    out: dict[str, str] = {}
    for cond in iter_conditions(spec.conditions):
        if not isinstance(cond, ClusterCondition):
            continue
        args = cond.image_clusters
        files = [f for f in pool.listdir(layout.embeddings_dir(args.embeddings)) if f.endswith(".parquet")]
        if not files:
            raise ConfigError(f"{sources.where(cond, 'image_clusters')}: no embeddings/{args.embeddings}/ in the "
                              f"pool; score with a clip scorer named {args.embeddings!r} and image_embeddings: true")
        out[cl.embedding_key(args.embeddings, args.column)] = layout.embeddings_dir(args.embeddings)
    return out


def check_training_placement(spec: FilterSpec, sources: SourceMap) -> None:
    """k-means trains on the rows passing the earlier top-level conditions, which must be plain row tests."""
    top = {id(c): i for i, c in enumerate(spec.conditions)}
    for cond in iter_conditions(spec.conditions):
        if not isinstance(cond, ClusterCondition) or cond.image_clusters.clusters is None:
            continue
        if id(cond) not in top:
            raise ConfigError(f"{sources.where(cond, 'image_clusters')}: an image_clusters condition that trains "
                              "k-means (clusters:) must be a top-level condition of the spec being applied")
        for earlier in iter_conditions(spec.conditions[: top[id(cond)]]):
            if (isinstance(earlier, ColumnCondition) and earlier.is_fraction) or isinstance(earlier, ClusterCondition):
                raise ConfigError(f"{sources.where(cond, 'image_clusters')}: k-means trains on the rows passing the "
                                  "earlier top-level conditions; those may not use top/bottom_fraction, "
                                  "top/bottom_count or image_clusters (move this condition before them)")


def gather_embeddings_shard(pool: Pool, shard_id: str, which: list[int],
                            settings: FilterSettings) -> dict[int, np.ndarray]:
    """For resource conditions `which`: the embeddings of this shard's rows passing the earlier conditions."""
    spec = settings.spec
    conds = resource_conditions(spec)
    out: dict[int, np.ndarray] = {}
    for k in which:
        cond = conds[k]
        assert isinstance(cond, ClusterCondition)
        key = cl.embedding_key(cond.image_clusters.embeddings, cond.image_clusters.column)
        position = next(i for i, c in enumerate(spec.conditions) if c is cond)
        earlier = spec.conditions[:position]
        table, _ = load_shard_columns(pool, shard_id, condition_columns(earlier) | {key}, settings.sources)
        evaluator = Evaluator(spec, settings.ctx)
        keep = combine([evaluator.mask(c, table) for c in earlier], table.num_rows)
        out[k], _ = cl.embedding_rows(table[key].filter(keep))
    return out


def centroids_name(k: int) -> str:
    return f"centroids-{k}.npy"


def load_resources(spec: FilterSpec, ctx: EvalContext,
                   gather: Callable[[list[int]], dict[int, list[np.ndarray]]],
                   cached: Callable[[int, str], np.ndarray | None] = lambda k, digest: None,
                   ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Fill ctx.resources; returns a report per condition (part of the run's fingerprint) and the
    files to write into the subset (trained centroids). `cached(k, digest)` returns the centroids an
    earlier run trained on exactly these points (same digest), so a resumed run does not retrain."""
    conds = resource_conditions(spec)
    report: list[dict[str, Any]] = [{} for _ in conds]
    files: dict[str, bytes] = {}
    wordnets: dict[str, WordNet] = {}
    # Synset matchers and given centroids first: k-means points may be selected by a synset condition.
    for k, cond in enumerate(conds):
        if isinstance(cond, SynsetCondition):
            args = cond.caption_synsets
            if args.wordnet not in wordnets:
                wordnets[args.wordnet] = WordNet.load(args.wordnet)
            ids = read_synset_ids(args.synsets)
            ctx.resources[k] = SynsetMatcher(wordnets[args.wordnet], ids, args.morphy)
            report[k] = {"condition": cond.label(), "synsets": len(ids), "synsets_sha256": _sha(args.synsets),
                         "wordnet": args.wordnet, "wordnet_lemmas": len(wordnets[args.wordnet].first_offset),
                         "morphy": args.morphy}
        elif cond.image_clusters.centroids is not None:
            _clusters(k, cond, cl.load_matrix(cond.image_clusters.centroids, "centroids"), ctx, report, trained=0)
    to_train = [k for k, c in enumerate(conds) if k not in ctx.resources]
    if to_train:
        parts = gather(to_train)
        for k in to_train:
            cond = conds[k]
            assert isinstance(cond, ClusterCondition)
            args = cond.image_clusters
            assert args.clusters is not None
            points = np.concatenate(parts[k]) if parts[k] else np.zeros((0, 0), np.float32)
            if len(points) < args.clusters:
                raise ConfigError(f"image_clusters: {args.clusters} clusters need at least as many training points; "
                                  f"{len(points)} samples pass the conditions before it")
            digest = hashlib.sha256(np.ascontiguousarray(points).tobytes()).hexdigest()[:16]
            digest = f"{digest}-{args.clusters}-{args.niter}-{args.seed}"
            centroids = cached(k, digest)
            if centroids is None:
                require("faiss", "dedup", "image_clusters (k-means)")
                from curate.stages.dedup.semantic import use_gpu

                centroids = cl.train_kmeans(points, args.clusters, args.niter, args.seed, gpu=use_gpu("auto"))
            buf = io.BytesIO()
            np.save(buf, centroids)
            files[centroids_name(k)] = buf.getvalue()
            _clusters(k, cond, centroids, ctx, report, trained=len(points))
            report[k]["kmeans_points_sha256"] = digest
    return report, files


def _clusters(k: int, cond: ClusterCondition, centroids: np.ndarray, ctx: EvalContext, report: list[dict[str, Any]],
              trained: int) -> None:
    args = cond.image_clusters
    reference = cl.load_matrix(args.reference, "reference embeddings")
    targets = cl.target_clusters(reference, centroids)
    ctx.resources[k] = cl.ClusterSelection(centroids, targets)
    report[k] = {"condition": cond.label(), "clusters": len(centroids), "target_clusters": len(targets),
                 "centroids_sha256": hashlib.sha256(centroids.tobytes()).hexdigest()[:16],
                 "reference_sha256": _sha(args.reference), "kmeans_points": trained}
