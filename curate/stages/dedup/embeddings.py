"""Reading embedding tables: fixed-size float16 lists -> L2-normalised float32 matrices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def embedding_matrix(column: pa.Array | pa.ChunkedArray, normalise: bool = True) -> np.ndarray:
    """(n, D) float32, L2-normalised again because float16 storage rounds the norms (unless
    normalise=False: DataComp's image-based filter uses the stored values as they are)."""
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"embedding column must be fixed_size_list<float>[D], got {column.type}")
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(values, dtype=np.float32).reshape(-1, dim)
    if not normalise:
        return matrix
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def embedding_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """float16 fixed-size-list column, the contract's storage type for embeddings."""
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float16).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
