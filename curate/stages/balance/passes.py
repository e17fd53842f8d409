"""The two per-shard passes of balancing, run by the runner (`ctx.run_pass`) for curate.stages.balance.

Pass 1 (match): the shard's successful captions (optionally only a subset's uids) are matched
against the metadata; writes `_work/matches/<shard>.parquet` (uid, lang, metadata_language,
entry_ids list<int32>) and `_work/counts/<shard>.parquet` (entry_id, count) under balanced/<name>/.
Pass 2 (sample): with global counts turned into entry probabilities q, decides each sample;
writes the documented per-sample table `samples/<shard>.parquet` (the inverted index uid →
entry_ids, with each sample's keep probability and decision; the kept uids are read from it) and
`_work/entry_stats/<shard>.parquet` (entry_id, expected, actual). Paths: curate.layout.balanced_*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.errors import PoolError
from curate.pool import Pool
from curate.population import is_metadata_part, read_rows
from curate.stages.balance.matching import SharedMatcher
from curate.stages.balance.metadata import ALL_LANGUAGES
from curate.stages.balance.sampling import keep_probabilities, uniform_draws

MATCHES_SCHEMA = pa.schema([("uid", pa.string()), ("lang", pa.string()), ("metadata_language", pa.string()),
                            ("entry_ids", pa.list_(pa.int32()))])
SAMPLES_SCHEMA = pa.schema([*MATCHES_SCHEMA, ("keep_probability", pa.float64()), ("kept", pa.bool_())])
NOT_AVAILABLE = "N/A"


def route_language(code: str, languages: set[str] | frozenset[str], language_map: dict[str, str],
                   other: str) -> str | None:
    """The metadata language a caption of language-id `code` is matched against (MetaCLIP 2's
    lid_langcode_to_metadata_langcode: mapped through language_map; "" or "N/A" go to `other`),
    extended: a code whose metadata file is missing also goes to `other`; None if that is missing too."""
    target = language_map.get(code, code)
    if target in ("", NOT_AVAILABLE) or target not in languages:
        target = other
    return target if target in languages else None


@dataclass
class MatchSettings:
    matcher: SharedMatcher
    name: str  # balanced/<name>/
    per_language: bool
    language_scorer: str
    subset_uids: pa.Array | None
    language_map: dict[str, str] = field(default_factory=dict)
    other_language: str = "other"


@dataclass
class SampleSettings:
    q: np.ndarray  # entry probability per global entry id
    seed: int
    keep_unmatched: bool
    name: str  # balanced/<name>/


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def match_shard(pool: Pool, shard_id: str, payload: Any, settings: MatchSettings) -> dict[str, Any]:
    metadata = is_metadata_part(shard_id)
    table, not_success = read_rows(pool, shard_id, ["caption", "lang"] if metadata and settings.per_language
                                   else ["caption"])
    samples = table.num_rows + not_success
    counts: dict[str, int] = {"not_success": not_success}
    if settings.subset_uids is not None:
        inside = pc.is_in(table["uid"], value_set=settings.subset_uids)
        counts["not_in_subset"] = table.num_rows - _count(inside)
        table = table.filter(inside)

    matcher = settings.matcher.get()
    if settings.per_language and metadata:
        counts["missing_language_score"] = table["lang"].null_count
    elif settings.per_language:
        rel = layout.scores_file(settings.language_scorer, shard_id)
        if not pool.exists(rel):
            raise PoolError(f"per-language metadata needs {rel} (lang column); run the "
                            f"'{settings.language_scorer}' scorer first")
        langs = pool.read_parquet(rel, ["uid", "lang"])
        table = table.join(langs, "uid", join_type="left outer")
        counts["missing_language_score"] = table["lang"].null_count
    else:
        table = table.append_column("lang", pa.repeat(pa.scalar(ALL_LANGUAGES, pa.string()), table.num_rows))
    # Deterministic row order, whatever the join did.
    table = table.sort_by("uid").combine_chunks()
    n = table.num_rows

    lang = table["lang"].combine_chunks() if n else pa.array([], pa.string())
    row_parts: list[np.ndarray] = []
    entry_parts: list[np.ndarray] = []
    covered = np.zeros(n, bool)
    routed = np.full(n, None, object)
    # Only codes present in this shard (MetaCLIP 2 metadata has hundreds of languages), grouped by
    # the metadata language they route to.
    targets: dict[str, list[str]] = {}
    available = frozenset(matcher.languages)
    for code in sorted(pc.unique(lang).drop_null().to_pylist()):
        target = code if not settings.per_language else route_language(
            code, available, settings.language_map, settings.other_language)
        if target is not None:
            targets.setdefault(target, []).append(code)
    for target, codes in sorted(targets.items()):
        lang_matcher = matcher.languages[target]
        in_codes = pc.is_in(lang, value_set=pa.array(codes, pa.string()))
        rows = np.flatnonzero(pc.fill_null(in_codes, False).to_numpy(zero_copy_only=False))
        covered[rows] = True
        routed[rows] = target
        captions = table["caption"].take(pa.array(rows))
        local_rows, entries = lang_matcher.match(matcher.space(captions))
        row_parts.append(rows[local_rows])
        entry_parts.append(entries)
    rows_all = np.concatenate(row_parts) if row_parts else np.empty(0, np.int64)
    entries_all = np.concatenate(entry_parts) if entry_parts else np.empty(0, np.int32)
    order = np.lexsort((entries_all, rows_all))
    rows_all, entries_all = rows_all[order], entries_all[order]
    per_row = np.bincount(rows_all, minlength=n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(per_row, out=offsets[1:])
    entry_ids = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(entries_all, pa.int32()))

    no_metadata = ~covered
    if settings.per_language:
        no_metadata &= ~pc.is_null(lang).to_numpy(zero_copy_only=False)
        counts["language_without_metadata"] = int(no_metadata.sum())
    counts["matched"] = int((per_row > 0).sum())
    counts["unmatched"] = int(((per_row == 0) & covered).sum())

    matches = pa.table({"uid": table["uid"], "lang": lang, "metadata_language": pa.array(routed.tolist(), pa.string()),
                        "entry_ids": entry_ids}, schema=MATCHES_SCHEMA)
    pool.write_parquet(layout.balanced_matches(settings.name, shard_id), matches)
    ids, per_entry = np.unique(entries_all, return_counts=True)
    pool.write_parquet(
        layout.balanced_counts(settings.name, shard_id),
        pa.table({"entry_id": pa.array(ids, pa.int32()), "count": pa.array(per_entry, pa.int64())}),
    )
    return {"samples": samples, "captions_matched": n, "matches": int(entries_all.size), "counts": counts}


def sample_shard(pool: Pool, shard_id: str, payload: Any, settings: SampleSettings) -> dict[str, Any]:
    matches = pool.read_parquet(layout.balanced_matches(settings.name, shard_id))
    entry_ids = matches["entry_ids"].combine_chunks()
    n = matches.num_rows
    p_keep = keep_probabilities(entry_ids, settings.q) if n else np.empty(0)
    sizes = pc.list_value_length(entry_ids).to_numpy(zero_copy_only=False) if n else np.empty(0, np.int32)
    unmatched = sizes == 0
    p_keep[unmatched] = 1.0 if settings.keep_unmatched else 0.0
    keep = uniform_draws(matches["uid"], settings.seed) < p_keep

    flat = pc.list_flatten(entry_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    parents = pc.list_parent_indices(entry_ids).to_numpy(zero_copy_only=False)
    ids, inverse = np.unique(flat, return_inverse=True)
    expected = np.bincount(inverse, weights=p_keep[parents], minlength=ids.size)
    actual = np.bincount(inverse, weights=keep[parents].astype(np.float64), minlength=ids.size)

    samples = matches.append_column("keep_probability", pa.array(p_keep, pa.float64()))
    samples = samples.append_column("kept", pa.array(keep, pa.bool_()))
    pool.write_parquet(layout.balanced_samples(settings.name, shard_id), samples.cast(SAMPLES_SCHEMA))
    pool.write_parquet(
        layout.balanced_entry_stats(settings.name, shard_id),
        pa.table({
            "entry_id": pa.array(ids, pa.int32()),
            "expected": pa.array(expected, pa.float64()),
            "actual": pa.array(actual.astype(np.int64), pa.int64()),
        }),
    )
    kept_unmatched = int((keep & unmatched).sum())
    kept_matched = int(keep.sum()) - kept_unmatched
    counts = {
        "kept": kept_matched,
        "dropped_by_sampling": int((~keep & ~unmatched).sum()),
    }
    if settings.keep_unmatched:
        counts["kept_unmatched"] = kept_unmatched
    else:
        counts["dropped_unmatched"] = int(unmatched.sum())
    return {"samples": n, "expected_kept": float(p_keep.sum()), "counts": counts}
