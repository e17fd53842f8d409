"""DataComp's image-based baseline: keep samples in the k-means clusters that reference images fall in.

DataComp (baselines/apply_filter.py, load_uids_with_image_filter and image_filter_helper;
baselines/image_based_clustering.py, train_kmeans):
- centroids: faiss.Clustering(d, k) with niter = 20, seed = 0, max_points_per_centroid = 10^7 (no
  sub-sampling), trained with a flat L2 index (GpuIndexFlatL2, useFloat16 = False) on the float32
  stored image embeddings of the samples passing its caption filter, in shard order, not normalised;
- assignment: `torch.argmax(features.float() @ centroids.T, dim=1)`: the centroid of largest inner
  product (not smallest L2), the first one on a tie;
- target clusters: `torch.unique` of the assignments of the reference embeddings (ImageNet-1k train
  images, OpenAI CLIP ViT-L/14);
- a sample is kept when its own assignment is one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import ConfigError
from curate.extras import require
from curate.stages.dedup.embeddings import embedding_matrix

BLOCK_FLOATS = 1 << 25  # rows x centroids per similarity block: 128 MiB of float32


def embedding_key(embeddings: str, column: str) -> str:
    """The name under which a shard table carries embeddings/<embeddings>/<column>."""
    return f"embedding:{embeddings}:{column}"


def load_matrix(path: str | Path, what: str) -> np.ndarray:
    """A 2-D float .npy as float32 (DataComp converts with `.float()`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a .npy array ({exc})") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating) or arr.shape[0] == 0:
        raise ConfigError(f"{path}: expected a non-empty 2-D float array of {what}, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def nearest_centroid(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the centroid with the largest inner product per row; the first one on a tie (torch.argmax)."""
    out = np.empty(len(features), dtype=np.int64)
    step = max(1, BLOCK_FLOATS // max(1, len(centroids)))
    for start in range(0, len(features), step):
        sims = features[start:start + step] @ centroids.T
        out[start:start + step] = sims.argmax(axis=1)
    return out


def target_clusters(reference: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Sorted distinct clusters of the reference embeddings (torch.unique of their assignments)."""
    if reference.shape[1] != centroids.shape[1]:
        raise ConfigError(f"reference embeddings have {reference.shape[1]} dimensions, centroids "
                          f"{centroids.shape[1]}")
    return np.unique(nearest_centroid(reference, centroids))


def train_kmeans(embeddings: np.ndarray, clusters: int, niter: int = 20, seed: int = 0,
                 gpu: bool = False) -> np.ndarray:
    """DataComp's train_kmeans: faiss.Clustering with a flat L2 index, every point used."""
    faiss = require("faiss", "dedup", "image_clusters (k-means)")

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    d = x.shape[1]
    cluster = faiss.Clustering(d, clusters)
    cluster.verbose = False
    cluster.niter = niter
    cluster.seed = seed
    cluster.max_points_per_centroid = 10000000  # DataComp: otherwise faiss sub-samples the training set
    if gpu:
        cfg = faiss.GpuIndexFlatConfig()
        cfg.useFloat16 = False
        cfg.device = 0
        index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), d, cfg)
    else:
        index = faiss.IndexFlatL2(d)
    cluster.train(x, index)
    return faiss.vector_float_to_array(cluster.centroids).reshape(clusters, d)


def embedding_rows(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Stored embeddings as float32 (not renormalised) for the rows that have one, and which rows those are."""
    valid = np.asarray(pc.is_valid(column), dtype=bool)
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
    present = column.filter(pa.array(valid))
    return embedding_matrix(present, normalise=False), valid


@dataclass
class ClusterSelection:
    """Centroids and the clusters to keep; shipped to every shard task."""

    centroids: np.ndarray
    targets: np.ndarray

    def mask(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Keep-mask of a shard's embedding column; a sample without an embedding is not kept."""
        matrix, valid = embedding_rows(column)
        out = np.zeros(len(valid), dtype=bool)
        if len(matrix):
            if matrix.shape[1] != self.centroids.shape[1]:
                raise ConfigError(f"embeddings have {matrix.shape[1]} dimensions, centroids {self.centroids.shape[1]}")
            out[valid] = np.isin(nearest_centroid(matrix, self.centroids), self.targets)
        return out
