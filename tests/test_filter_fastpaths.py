"""The filter's fast paths give the results of the general ones: join-free score alignment,
narrow pass-1 reads, vectorised uid sorting and uids.npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.config import FilterConfig
from curate.errors import PoolError
from curate.pool import Pool
from curate.stages.filter import run
from curate.stages.filter.columns import load_shard_columns, read_catalog
from curate.stages.filter.evaluate import fraction_columns
from curate.stages.filter.spec import load_spec
from curate.testing import random_hex
from curate.testing.pool import make_score_pool
from curate.uid import all_unique, hex_uid_keys, sorted_uids_and_npy, uids_to_npy_array

FILTERS = Path(__file__).resolve().parent.parent / "filters"
COLUMNS = {"lang", "clip_l14_similarity_score", "caption_num_words", "shorter_side"}


def _pool(tmp_path: Path, name: str = "pool") -> Pool:
    pool = Pool(str(tmp_path / name))
    make_score_pool(pool, n_shards=2, rows_per_shard=300, seed=3, scorers=("l14", "language", "text_stats"),
                    dedup=False)
    return pool


def _by_uid(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table["uid"]))


def test_misaligned_score_tables_fall_back_to_the_join(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    sources = read_catalog(pool).sources
    aligned, _ = load_shard_columns(pool, "00000000", COLUMNS, sources)
    # Shuffle one score table and drop a row of another: neither lines up with the shard any more.
    rel = "scores/l14/00000000.parquet"
    l14 = pool.read_parquet(rel)
    pool.write_parquet(rel, l14.take(np.random.default_rng(0).permutation(l14.num_rows)))
    rel = "scores/language/00000000.parquet"
    lang = pool.read_parquet(rel)
    dropped = lang["uid"][5].as_py()
    pool.write_parquet(rel, pa.concat_tables([lang.slice(0, 5), lang.slice(6)]))
    joined, _ = load_shard_columns(pool, "00000000", COLUMNS, sources)
    assert joined.num_rows == aligned.num_rows
    a, j = _by_uid(aligned), _by_uid(joined)
    for name in COLUMNS:
        if name == "lang":
            continue
        assert a[name].equals(j[name]), name
    missing = pc.equal(j["uid"], dropped)
    assert j.filter(missing)["lang"].null_count == 1
    keep = pc.invert(missing)
    assert a.filter(keep)["lang"].equals(j.filter(keep)["lang"])


def test_repeated_uids_are_errors_on_both_paths(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    sources = read_catalog(pool).sources
    shard_rel = "shards/00000000.parquet"
    shard = pool.read_parquet(shard_rel)
    ok = shard.filter(pc.equal(shard["status"], "success"))
    first, second = ok["uid"][0].as_py(), ok["uid"][1].as_py()
    # The shard repeats a uid and the score tables follow it row for row: aligned, but still a repeat.
    uid = pc.if_else(pc.equal(shard["uid"], second), first, shard["uid"])
    pool.write_parquet(shard_rel, shard.set_column(shard.schema.get_field_index("uid"), "uid", uid))
    for scorer in ("l14", "language", "text_stats"):
        rel = f"scores/{scorer}/00000000.parquet"
        table = pool.read_parquet(rel)
        fixed = pc.if_else(pc.equal(table["uid"], second), first, table["uid"])
        pool.write_parquet(rel, table.set_column(0, "uid", fixed))
    with pytest.raises(PoolError, match="repeat"):
        load_shard_columns(pool, "00000000", COLUMNS, sources)
    # Misaligned (reversed) tables with the repeat go through the join, which finds it too.
    rel = "scores/l14/00000000.parquet"
    table = pool.read_parquet(rel)
    pool.write_parquet(rel, table.take(pa.array(np.arange(table.num_rows)[::-1])))
    with pytest.raises(PoolError, match="repeat"):
        load_shard_columns(pool, "00000000", COLUMNS, sources)


def test_shuffled_score_tables_give_the_same_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    spec = str(FILTERS / "datacomp_basic.yaml")
    results = []
    for name, shuffle in (("aligned", False), ("shuffled", True)):
        pool = _pool(tmp_path, name)
        if shuffle:
            for sid in ("00000000", "00000001"):
                for scorer in ("l14", "language", "text_stats"):
                    rel = f"scores/{scorer}/{sid}.parquet"
                    table = pool.read_parquet(rel)
                    pool.write_parquet(rel, table.take(np.random.default_rng(1).permutation(table.num_rows)))
        funnel = run(pool, FilterConfig(spec=spec), quiet=True)
        uids = pool.read_parquet("subsets/datacomp_basic/uids.parquet")["uid"]
        npy = np.load(pool.open("subsets/datacomp_basic/uids.npy"))
        results.append((funnel["conditions"], uids, npy))
    assert results[0][0] == results[1][0]
    assert results[0][1].equals(results[1][1]) and len(results[0][1]) > 0
    assert np.array_equal(results[0][2], results[1][2])


def test_pass_one_reads_only_what_fractions_rank(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(f"""name: s
conditions:
  - include: {FILTERS}/datacomp_basic.yaml
  - {{column: clip_l14_similarity_score, top_fraction: 0.3}}
  - {{column: clip_b32_similarity_score, top_fraction: 0.5, within: survivors}}
""")
    spec, _ = load_spec(path)
    assert fraction_columns(spec, [0]) == {"clip_l14_similarity_score"}
    assert fraction_columns(spec, [1]) == {"lang", "caption_num_words", "caption_num_chars", "shorter_side",
                                           "side_ratio", "clip_l14_similarity_score", "clip_b32_similarity_score"}


def test_vectorised_uids_match_the_reference_conversion() -> None:
    uids = pa.concat_arrays([random_hex(np.random.default_rng(0), 5000), pa.array(["0" * 32, "f" * 32])])
    ordered, npy = sorted_uids_and_npy(uids.slice(3))
    assert ordered.equals(pc.take(uids.slice(3), pc.sort_indices(uids.slice(3))))
    assert npy.dtype == np.dtype("u8,u8") and np.array_equal(npy, uids_to_npy_array(uids.slice(3)))
    assert [int(x) for x in hex_uid_keys(pa.array(["0123456789abcdef" * 2]))[0]] == [0x0123456789ABCDEF] * 2


@pytest.mark.parametrize("bad", ["A" * 32, "g" * 32, " " * 32, "0" * 31, "é" * 16, None])
def test_uids_that_are_not_lowercase_hex_take_the_general_path(bad: str | None) -> None:
    uids = pa.array(["0" * 32, bad], pa.string())
    assert hex_uid_keys(uids) is None and sorted_uids_and_npy(uids) is None


def test_all_unique() -> None:
    uids = random_hex(np.random.default_rng(1), 1000)
    assert all_unique(uids)
    assert not all_unique(pa.concat_arrays([uids, uids.slice(7, 1)]))
    # Same 64-bit prefix, different second half: still unique.
    assert all_unique(pa.array(["0" * 16 + "1" * 16, "0" * 16 + "2" * 16]))
    assert not all_unique(pa.array(["x", "y", "x"])) and all_unique(pa.array(["x", "y"]))
