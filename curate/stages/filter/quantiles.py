"""Global cut-offs for top_fraction / bottom_fraction / top_count / bottom_count, exactly or in
bounded memory.

DataComp's rule, as its code computes it (baselines/apply_filter.py, get_threshold and the
`>= threshold` of load_uids_with_clip_score_helper):

    n = int(len(df) * fraction)
    threshold = -np.sort(-df[key].values)[n]      # keep df[key] >= threshold

so with N rows the threshold is the value at 0-based index n of the scores sorted high to low, the
(n+1)-th highest, and every row scoring >= it is kept (all ties kept). Consequences reproduced here:
- fraction 0 keeps the rows equal to the maximum (at least one row);
- NaN (and null, which pandas reads as NaN) scores count in N and sort after every number, so when
  n reaches past the last number the threshold is NaN and nothing is kept;
- n == N (fraction 1.0, or an empty pool) is out of range: DataComp raises IndexError; curate keeps
  every row with a score (threshold -inf).
bottom_fraction mirrors it: the value at index n of the scores sorted low to high (NaN last), keep <=.

Exact mode gathers the column (8 bytes a row) and takes the value with numpy's partition.

Approximate mode merges fixed 65,536-bin histograms over the top 16 bits of an order-preserving
uint32 key of the float32 value (sign, 8 exponent bits, 7 mantissa bits), plus one count of NaNs:
512 KiB per shard whatever the pool size. The threshold returned is the lower edge (for top; upper
edge for bottom) of the bin holding the (n+1)-th value, so the kept set is a superset of the exact one and
  - value error: |t_approx - t_exact| < 2^-7 * |t_exact| (one bin; relative, for normal floats),
  - rank error: extra rows kept <= the count of that bin, which is reported as `rank_error_bound`.

Counts (top_count: N) keep exactly N rows: rows better than t, the N-th best value, and the rows
equal to t whose uid is <= tie_uid (ties by uid ascending). The first gather gives a Band: the value t
(exact) or the bin holding it (approximate), and how many rows are strictly better; a second gather
returns each shard's best `need` rows of the band with their uids, and the need-th of their union,
ranked by (value, uid), is (t, tie_uid). Both modes are exact for counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.errors import PoolError

BINS = 1 << 16


@dataclass(frozen=True)
class Cutoff:
    """A fraction condition's resolved threshold."""

    threshold: float  # NaN when nothing is kept; -inf (top) / +inf (bottom) when every scored row is
    population: int  # N: rows the fraction was taken of, NaN/null scores included (as DataComp counts them)
    target: int  # n = int(N * fraction); the threshold is the value at 0-based rank n
    rank_error_bound: int = 0  # approximate mode: how many extra rows the cut may keep
    # top_count/bottom_count: rows equal to the threshold are kept only when uid <= tie_uid (string
    # order); None keeps every tie (fractions, and counts that keep every row with a number).
    tie_uid: str | None = None


@dataclass(frozen=True)
class Band:
    """Where a count cut's N-th best value lies, from the first gather: rows strictly better than the
    band are kept outright (`above` of them); the band's rows are ranked by (value, uid) in a second
    gather. Exact mode: the band is one value; approximate mode: one histogram bin."""

    top: bool
    value: float | None = None  # exact: rows == value
    bin: int | None = None  # approximate: rows whose key's 16-bit prefix is this bin
    above: int = 0
    need: int = 0  # rows of the band to keep: N - above

    def better(self, values: np.ndarray) -> np.ndarray:
        if self.bin is not None:
            prefix = _keys(values) >> 16
            return ~np.isnan(values) & ((prefix > self.bin) if self.top else (prefix < self.bin))
        return (values > self.value) if self.top else (values < self.value)

    def within(self, values: np.ndarray) -> np.ndarray:
        if self.bin is not None:
            return ~np.isnan(values) & ((_keys(values) >> 16) == self.bin)
        return values == self.value


def _resolve(n_total: int, n_numbers: int, fraction: float, top: bool) -> tuple[int, float | None]:
    """n, and the threshold when it does not depend on the values (None when it does)."""
    n = int(n_total * fraction)
    if n >= n_total:
        return n, -np.inf if top else np.inf
    if n >= n_numbers:
        return n, float("nan")
    return n, None


def exact_cutoff(values: np.ndarray, fraction: float, top: bool) -> Cutoff:
    values = np.asarray(values, dtype=np.float64)
    numbers = values[~np.isnan(values)]
    n, fixed = _resolve(len(values), len(numbers), fraction, top)
    if fixed is not None:
        return Cutoff(fixed, len(values), n)
    # Index n of the descending order == ascending index M-1-n among the M numbers (NaN sort last).
    k = len(numbers) - 1 - n if top else n
    return Cutoff(float(np.partition(numbers, k)[k]), len(values), n)


def _all_numbers(n_total: int, top: bool) -> Cutoff:
    return Cutoff(-np.inf if top else np.inf, n_total, n_total)


def exact_band(values: np.ndarray, count: int, top: bool) -> Cutoff | Band:
    """A count cut from the gathered values: a final Cutoff when it keeps every number, else the band
    (the single value t of the count-th best row) whose rows the tie pass ranks by uid."""
    values = np.asarray(values, dtype=np.float64)
    numbers = values[~np.isnan(values)]
    if count >= len(numbers):
        return _all_numbers(len(values), top)
    k = len(numbers) - count if top else count - 1  # ascending index of the count-th best
    t = float(np.partition(numbers, k)[k])
    above = int((numbers > t).sum() if top else (numbers < t).sum())
    return Band(top, value=t, above=above, need=count - above)


def approximate_band(counts: np.ndarray, count: int, top: bool) -> Cutoff | Band:
    """As exact_band from merged histograms: the band is the bin holding the count-th best value."""
    bins = counts[:BINS]
    if count >= int(bins.sum()):
        return _all_numbers(int(counts.sum()), top)
    ordered = bins[::-1] if top else bins
    position = int(np.searchsorted(np.cumsum(ordered), count))  # first running count >= count
    bin_index = BINS - 1 - position if top else position
    above = int(ordered[:position].sum())
    return Band(top, bin=bin_index, above=above, need=count - above)


def rank_band_rows(values: np.ndarray, uids: np.ndarray, band: Band) -> tuple[np.ndarray, np.ndarray]:
    """A shard's rows inside the band, best first (value, then uid ascending), at most band.need of
    them: the global best `need` of the band are among the union of every shard's best `need`."""
    order = np.lexsort((uids, -values if band.top else values))[: band.need]
    return values[order], uids[order]


def count_cutoff(band: Band, values: list[np.ndarray], uids: list[np.ndarray], population: int,
                 count: int) -> Cutoff:
    """The count cut from every shard's ranked band rows: the need-th of them gives threshold and tie uid."""
    v = np.concatenate(values) if values else np.empty(0)
    u = np.concatenate(uids).astype(str) if uids else np.empty(0, dtype=str)
    order = np.lexsort((u, -v if band.top else v))
    if len(order) < band.need:  # only when the scores changed between the two gathers
        raise PoolError(f"count cut: {len(order)} rows in the threshold band but {band.need} needed; "
                        "did a score table change during the filter run?")
    last = order[band.need - 1]
    return Cutoff(float(v[last]), population, count, tie_uid=str(u[last]))


def _keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values (flip negatives, set the sign bit of positives)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))


def _key_to_float(key: int) -> float:
    key = np.uint32(key)
    bits = (key & np.uint32(0x7FFFFFFF)) if key >> 31 == 1 else ~key
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def histogram(values: np.ndarray) -> np.ndarray:
    """A shard's contribution to the approximate cut: counts per 16-bit key prefix, then the NaN count."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    counts = np.bincount(_keys(values[~nan]) >> 16, minlength=BINS + 1).astype(np.int64)
    counts[BINS] = int(nan.sum())
    return counts


def approximate_cutoff(counts: np.ndarray, fraction: float, top: bool) -> Cutoff:
    n_total = int(counts.sum())
    bins = counts[:BINS]
    n, fixed = _resolve(n_total, int(bins.sum()), fraction, top)
    if fixed is not None:
        return Cutoff(fixed, n_total, n)
    # The bin holding the value at 0-based rank n, i.e. where the running count first reaches n + 1.
    if top:
        from_top = np.cumsum(bins[::-1])
        bin_index = BINS - 1 - int(np.searchsorted(from_top, n + 1))
        threshold = _key_to_float(bin_index << 16)  # smallest value of the bin
    else:
        bin_index = int(np.searchsorted(np.cumsum(bins), n + 1))
        threshold = _key_to_float((bin_index << 16) | 0xFFFF)  # largest value of the bin
    return Cutoff(threshold, n_total, n, rank_error_bound=int(bins[bin_index]))
