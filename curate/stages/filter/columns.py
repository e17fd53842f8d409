"""Which columns a filter can use: shard columns, score columns, derived values, dedup methods.

The catalog is read from parquet footers only (schemas), so `curate spec validate --pool` is
instant on any pool size. Per shard, `load_shard_columns` joins what a spec needs on uid.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.errors import PoolError
from curate.pool import Pool
from curate.population import is_metadata_part, population_ids, population_rel, read_rows
from curate.uid import all_unique

# Shard-table columns a spec may use (status/error_message describe failures, which never reach filters).
SHARD_VALUE_COLUMNS = ("caption", "url", "width", "height", "original_width", "original_height", "sha256")

# Derived values: name -> (inputs, description). DataComp measures image size on the original image.
DERIVED: dict[str, tuple[tuple[str, ...], str]] = {
    "shorter_side": (("original_width", "original_height"), "min(original_width, original_height)"),
    "longer_side": (("original_width", "original_height"), "max(original_width, original_height)"),
    "side_ratio": (("original_width", "original_height"),
                   "longer side / shorter side of the original image (DataComp's aspect ratio, >= 1)"),
    "caption_num_words": (("caption",), "whitespace-separated words of the caption (when no scorer wrote it)"),
    "caption_num_chars": (("caption",), "characters (code points) of the caption (when no scorer wrote it)"),
    "caption_fasttext_tokens": (("caption",), "len(fasttext.tokenize(caption)): runs of bytes other than "
                                "space, \\n, \\r, \\t, \\v, \\f, \\0, plus one end-of-line token per \\n"),
}


@dataclass(frozen=True)
class ColumnCatalog:
    """Where each usable column lives: "shards", "scores/<scorer>" or "derived"."""

    sources: dict[str, str]
    types: dict[str, pa.DataType]
    dedup_methods: tuple[str, ...] = ()
    scorers: tuple[str, ...] = field(default=())

    def names(self) -> list[str]:
        return sorted(self.sources)


def read_catalog(pool: Pool, shard_id: str | None = None) -> ColumnCatalog:
    """Columns of the pool, from the footers of one shard's tables (all shards share schemas).

    Without `shard_id`, the first shard whose tables read is used: a damaged shard fails in its
    own task later, not the whole stage here."""
    shards = population_ids(pool)
    if not shards:
        raise PoolError(f"{pool.url}: no finished download shards (_done/download/fetch/ is empty); run download first")
    if shard_id is not None:
        return _catalog_of(pool, shard_id)
    first_error: PoolError | None = None
    for shard in shards:
        try:
            return _catalog_of(pool, shard)
        except PoolError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def _catalog_of(pool: Pool, shard: str) -> ColumnCatalog:
    sources: dict[str, str] = {}
    types: dict[str, pa.DataType] = {}
    shard_schema = pool.parquet_schema(population_rel(pool, shard))
    # An imported metadata pool's own columns (scores included) are its base table's.
    metadata = is_metadata_part(shard)
    for name in shard_schema.names if metadata else SHARD_VALUE_COLUMNS:
        if name in shard_schema.names and name != "uid":
            sources[name] = "shards"
            types[name] = shard_schema.field(name).type
    scorers = []
    # Score tables are written per download shard, so they cannot line up with metadata parts.
    for scorer in [] if metadata else pool.listdir(layout.SCORES):
        files = [f for f in pool.listdir(layout.scores_dir(scorer)) if f.endswith(".parquet")]
        if not files:
            continue
        scorers.append(scorer)
        rel = layout.scores_file(scorer, shard)
        if not pool.exists(rel):
            rel = layout.scores_file(scorer, files[0][: -len(".parquet")])
        schema = pool.parquet_schema(rel)
        for fld in schema:
            # Shard columns win over a scorer's copy of them; the first scorer (by name) wins a clash.
            if fld.name != "uid" and fld.name not in sources:
                sources[fld.name] = layout.scores_dir(scorer)
                types[fld.name] = fld.type
    for name, (inputs, _) in DERIVED.items():
        if name not in sources and all(i in sources for i in inputs):
            sources[name] = "derived"
            types[name] = pa.float64() if name == "side_ratio" else pa.int64()
    dedup = tuple(f[: -len(".parquet")] for f in pool.listdir(layout.DEDUP) if f.endswith(".parquet"))
    return ColumnCatalog(sources, types, dedup, tuple(scorers))


def load_shard_columns(pool: Pool, shard_id: str, columns: set[str], sources: dict[str, str]) -> tuple[pa.Table, int]:
    """The successful samples of one shard with `columns` (and uid) joined on uid.

    Only `columns` are read. A score table whose uid column equals the shard's is attached
    without a join (the common case); any other order or row set falls back to a left join.

    Returns the table and the number of shard rows that were not successful downloads.
    """
    base_needed = {c for c in columns if sources.get(c) == "shards"}
    for name in columns:
        if sources.get(name) == "derived":
            base_needed.update(DERIVED[name][0])
    table, not_downloaded = read_rows(pool, shard_id, sorted(base_needed))
    by_scorer: dict[str, list[str]] = {}
    for name in sorted(columns):
        src = sources.get(name, "")
        if src.startswith((f"{layout.SCORES}/", f"{layout.EMBEDDINGS}/")):
            by_scorer.setdefault(src, []).append(name)
    aligned = False
    for src, names in sorted(by_scorer.items()):
        rel = posixpath.join(src, f"{shard_id}.parquet")  # src: layout.scores_dir or embeddings_dir
        if not pool.exists(rel):
            raise PoolError(f"{pool.uri(rel)}: missing (needed for {', '.join(names)}); run that scorer on this shard")
        # An embedding is named embedding:<scorer>:<column> in the table, <column> in its file.
        stored = [n.rsplit(":", 1)[1] if src.startswith(f"{layout.EMBEDDINGS}/") else n for n in names]
        scores = pool.read_parquet(rel, columns=["uid", *stored]).rename_columns(["uid", *names])
        if table["uid"].null_count == 0 and scores["uid"].equals(table["uid"]):
            # Scorers write one row per successful sample in shard order, so the uid columns are
            # usually identical: the columns line up as they are and the hash join is skipped.
            aligned = True
            for name in names:
                table = table.append_column(name, scores[name])
            continue
        rows = table.num_rows
        if src.startswith(f"{layout.EMBEDDINGS}/"):
            # Acero cannot carry fixed-size lists through a join: look each uid up instead.
            if not all_unique(scores["uid"]):
                raise PoolError(f"{pool.uri(rel)}: uid values repeat; an embedding table must hold one row per sample")
            where = pc.index_in(table["uid"], value_set=scores["uid"].combine_chunks())
            for name in names:
                table = table.append_column(name, scores[name].take(where))
            continue
        table = table.join(scores, "uid", join_type="left outer", use_threads=False)
        if table.num_rows != rows:
            raise PoolError(f"{pool.uri(rel)}: uid values repeat; a score table must hold one row per sample")
    if aligned and not all_unique(table["uid"]):
        # What the join would have found: a repeated uid in a score table multiplies rows.
        raise PoolError(f"{pool.uri(population_rel(pool, shard_id))}: uid values repeat in this shard's successful "
                        "samples and its score tables; a score table must hold one row per sample")
    for name in sorted(columns):
        if sources.get(name) == "derived":
            table = table.append_column(name, derive(name, table))
    return table, not_downloaded


def derive(name: str, table: pa.Table) -> pa.Array | pa.ChunkedArray:
    """Compute a derived value column, vectorised; nulls propagate."""
    if name in ("shorter_side", "longer_side", "side_ratio"):
        w = pc.cast(table["original_width"], pa.int64())
        h = pc.cast(table["original_height"], pa.int64())
        short = pc.min_element_wise(w, h, skip_nulls=False)
        long_ = pc.max_element_wise(w, h, skip_nulls=False)
        if name == "shorter_side":
            return short
        if name == "longer_side":
            return long_
        # A zero side has no ratio: null, so a comparison on it is false rather than an error.
        short_f = pc.if_else(pc.equal(short, 0), pa.scalar(None, pa.float64()), pc.cast(short, pa.float64()))
        return pc.divide(pc.cast(long_, pa.float64()), short_f)
    if name == "caption_num_words":
        # Python's str.split(): leading/trailing whitespace yields no words, an empty caption has none.
        trimmed = pc.utf8_trim_whitespace(table["caption"])
        words = pc.list_value_length(pc.utf8_split_whitespace(trimmed)).cast(pa.int64())
        return pc.if_else(pc.equal(trimmed, ""), pa.scalar(0, pa.int64()), words)
    if name == "caption_num_chars":
        return pc.utf8_length(table["caption"]).cast(pa.int64())
    if name == "caption_fasttext_tokens":
        # fastText's Dictionary::readWord splits at these seven ASCII bytes only and returns "</s>"
        # for every newline, which DataComp's image-based caption filter counts as a word.
        runs = pc.count_substring_regex(table["caption"], r"[^ \n\r\t\v\f\x00]+")
        return pc.add(runs, pc.count_substring(table["caption"], "\n")).cast(pa.int64())
    raise KeyError(name)
