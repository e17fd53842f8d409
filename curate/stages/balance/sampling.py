"""MetaCLIP's balancing arithmetic: thresholds, keep probabilities and the per-sample draw.

- entry probability q_e = min(1, t / c_e): an entry matched by at most t samples keeps them all;
- a sample matching entries E keeps with probability 1 − ∏_{e∈E} (1 − q_e);
- tail fraction (MetaCLIP 2, metaclip/curation/curate.py): t_to_p(t, c) = Σ_{c_e<t} c_e / Σ c_e, the
  share of all matches on tail entries; p_to_t(p, c) is MetaCLIP 2's: sort the counts ascending (never
  matched entries included), take the running total over the grand total, and return the count at
  the first position whose running share is closest to p. Its t is an observed count whose
  *inclusive* running share is ~p, so t_to_p(p_to_t(p)) (which excludes entries at t) is below p;
- the draw for a sample is a hash of (uid, seed) mapped to [0, 1): the decision for a sample
  depends on nothing but its uid, its matches, the counts and the seed — not on sharding, worker
  count or order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.uid import hex_uid_keys

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def t_to_p(t: float, counts: np.ndarray) -> float:
    """Share of matches on entries with fewer than t matches."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    return float(counts[counts < t].sum() / total) if total > 0 else 0.0


def p_to_t(p: float, counts: np.ndarray) -> int:
    """MetaCLIP 2's p_to_t: the count at the sorted position whose running share is closest to p.

    Ties go to the first (smallest) position, as np.argmin does; with no matches at all the share is
    NaN everywhere and MetaCLIP's argmin picks position 0, whose count (0) is returned here too."""
    ordered = np.sort(np.asarray(counts, np.int64))
    if ordered.size == 0:
        return 0
    total = ordered.sum()
    if total == 0:
        return int(ordered[0])
    share = np.cumsum(ordered) / float(total)
    return int(ordered[int(np.argmin(np.abs(share - p)))])


def entry_probabilities(counts: np.ndarray, t_per_entry: np.ndarray) -> np.ndarray:
    """q_e = min(1, t_e / c_e); entries never matched get 1 (they are in no sample anyway)."""
    counts = np.asarray(counts, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(counts > 0, np.minimum(1.0, t_per_entry / counts), 1.0)
    return q


def keep_probabilities(entry_ids: pa.ListArray | pa.ChunkedArray, q: np.ndarray) -> np.ndarray:
    """1 − ∏(1 − q_e) per row of a list<int32> column; 0 for rows matching nothing."""
    if isinstance(entry_ids, pa.ChunkedArray):
        entry_ids = entry_ids.combine_chunks()
    n = len(entry_ids)
    flat = pc.list_flatten(entry_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = pc.list_parent_indices(entry_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    with np.errstate(divide="ignore"):
        log_miss = np.log1p(-q[flat])  # -inf where q = 1: such a sample is always kept
    total = np.bincount(rows, weights=log_miss, minlength=n)
    return -np.expm1(total)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def uniform_draws(uids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A float64 in [0, 1) per uid, a hash of (uid, seed): splitmix64 chained over both halves."""
    keys = hex_uid_keys(uids)
    if keys is None:
        raise ValueError("uids must be 32 lowercase hexadecimal characters")
    hi, lo = keys[:, 0], keys[:, 1]
    s = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    x = _splitmix64(_splitmix64(hi ^ s) ^ lo)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
