"""Global cut-offs for top_fraction / bottom_fraction, exactly or in bounded memory.

DataComp's rule (baselines/apply_filter.py's get_threshold): with N scores and n = int(N * f), the
threshold is the n-th highest score and every sample with score >= threshold is kept, so ties at
the threshold are all kept. bottom_fraction mirrors it (n-th lowest, keep <=). Null and NaN scores
are not part of N. n == 0 keeps nothing.

Exact mode gathers the column (8 bytes a row) and takes the n-th value with numpy's partition.

Approximate mode merges fixed 65,536-bin histograms over the top 16 bits of an order-preserving
uint32 key of the float32 value (sign, 8 exponent bits, 7 mantissa bits): 512 KiB per shard
whatever the pool size. The threshold returned is the lower edge (for top; upper edge for
bottom) of the bin holding the n-th value, so the kept set is a superset of the exact one and
  - value error: |t_approx - t_exact| < 2^-7 * |t_exact| (one bin; relative, for normal floats),
  - rank error: extra rows kept <= the count of that bin, which is reported as `rank_error_bound`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 1 << 16


@dataclass(frozen=True)
class Cutoff:
    """A fraction condition's resolved threshold."""

    threshold: float  # +inf (top) / -inf (bottom) when nothing is kept
    population: int  # N: non-null values the fraction was taken of
    target: int  # n = int(N * fraction)
    rank_error_bound: int = 0  # approximate mode: how many extra rows the cut may keep


def clean(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[~np.isnan(values)]


def exact_cutoff(values: np.ndarray, fraction: float, top: bool) -> Cutoff:
    values = clean(values)
    n_total = len(values)
    n = int(n_total * fraction)
    if n == 0:
        return Cutoff(np.inf if top else -np.inf, n_total, 0)
    # n-th highest == element at ascending index N-n; n-th lowest == index n-1.
    k = n_total - n if top else n - 1
    return Cutoff(float(np.partition(values, k)[k]), n_total, n)


def _keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values (flip negatives, set the sign bit of positives)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))


def _key_to_float(key: int) -> float:
    key = np.uint32(key)
    bits = (key & np.uint32(0x7FFFFFFF)) if key >> 31 == 1 else ~key
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def histogram(values: np.ndarray) -> np.ndarray:
    """A shard's contribution to the approximate cut: counts per 16-bit key prefix."""
    values = clean(values)
    return np.bincount(_keys(values) >> 16, minlength=BINS).astype(np.int64)


def approximate_cutoff(counts: np.ndarray, fraction: float, top: bool) -> Cutoff:
    n_total = int(counts.sum())
    n = int(n_total * fraction)
    if n == 0:
        return Cutoff(np.inf if top else -np.inf, n_total, 0)
    if top:
        from_top = np.cumsum(counts[::-1])
        bin_index = BINS - 1 - int(np.searchsorted(from_top, n))
        threshold = _key_to_float(bin_index << 16)  # smallest value of the bin
    else:
        bin_index = int(np.searchsorted(np.cumsum(counts), n))
        threshold = _key_to_float((bin_index << 16) | 0xFFFF)  # largest value of the bin
    return Cutoff(threshold, n_total, n, rank_error_bound=int(counts[bin_index]))
