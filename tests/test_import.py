"""`curate import`: DataComp metadata → a metadata pool → filter over every row → download --subset."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import ConfigError, PoolError
from curate.pool import Pool
from curate.population import population_ids
from curate.shards import list_shards, read_shard_table
from curate.stages.metaimport import ImportSettings, run
from curate.testing.http import Route, serve_routes
from curate.testing.metadata import metadata_table, write_metadata_dir, write_npz
from tests.test_fidelity_datacomp import datacomp_get_threshold, datacomp_saved_bytes, datacomp_uid_array

REPO = Path(__file__).resolve().parents[1]
DIMS = (8, 16)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 90, 40)).save(buf, "JPEG")
    return buf.getvalue()


def _import(pool: Pool, inputs: list[Path | str], **kwargs: object) -> dict:
    return run(pool, [str(p) for p in inputs], ImportSettings(**kwargs), quiet=True)  # type: ignore[arg-type]


def test_import_keeps_rows_uids_columns_and_embeddings(tmp_path: Path) -> None:
    files = write_metadata_dir(tmp_path / "meta", 2, 700, dims=DIMS)
    pool = Pool(str(tmp_path / "pool"))
    found = _import(pool, [tmp_path / "meta"], rows_per_part=500, batch_rows=300)
    assert found["rows"] == 1400
    assert population_ids(pool) == ["m00000000", "m00000001", "m00000002", "m00000003"]
    assert found["renamed"] == {"text": "caption"}
    source = pa.concat_tables([pq.read_table(f) for f in files])
    imported = pool.read_parquet_dir("metadata")
    assert imported["uid"].to_pylist() == source["uid"].to_pylist()  # unchanged, in input order
    assert imported["caption"].equals(source["text"])
    for name in ("clip_l14_similarity_score", "original_width", "sha256", "face_bboxes"):
        assert imported[name].equals(source[name])
    emb = pool.read_parquet_dir("embeddings/clip_l14")
    assert emb["uid"].equals(imported["uid"])
    expected = np.concatenate([np.load(f.with_suffix(".npz"))["l14_img"] for f in files])
    got = np.asarray(emb["image_embedding"].combine_chunks().flatten()).reshape(-1, DIMS[1])
    assert np.array_equal(got, expected)
    text = np.asarray(pool.read_parquet_dir("embeddings/clip_b32")["text_embedding"].combine_chunks().flatten())
    assert np.array_equal(text.reshape(-1, DIMS[0]), np.concatenate([np.load(f.with_suffix(".npz"))["b32_txt"]
                                                                     for f in files]))


def test_laion_style_columns_are_renamed(tmp_path: Path) -> None:
    table = metadata_table(50, 3)
    laion = pa.table({"uid": table["uid"], "URL": table["url"], "TEXT": table["text"],
                      "WIDTH": table["original_width"], "HEIGHT": table["original_height"],
                      "similarity": table["clip_b32_similarity_score"]})
    pq.write_table(laion, tmp_path / "laion.parquet")
    pool = Pool(str(tmp_path / "pool"))
    found = _import(pool, [tmp_path / "laion.parquet"])
    assert sorted(found["columns"]) == ["caption", "original_height", "original_width", "similarity", "uid", "url"]
    assert pool.read_parquet("metadata/m00000000.parquet")["caption"].equals(table["text"])


def _top_fraction_uids(table: pa.Table, column: str, fraction: float) -> set[str]:
    """DataComp's get_threshold over every metadata row: the value at index n = int(N f) of the
    descending sort (the (n+1)-th highest), and every row scoring at least that is kept."""
    scores = table[column].to_numpy()
    threshold = datacomp_get_threshold(scores, fraction)
    return set(table["uid"].filter(pa.array(scores >= threshold)).to_pylist())


@pytest.mark.ray
def test_import_filter_then_download_only_the_subset(tmp_path: Path, ray_runtime) -> None:
    image = _jpeg()
    tables = [metadata_table(1500, seed) for seed in (11, 12)]
    paths = [f"/{i}/{j}.jpg" for i in range(2) for j in range(1500)]
    routes = {p: Route(image, content_type="image/jpeg") for p in paths}
    with serve_routes(routes) as server:
        urls = iter(server.url(p) for p in paths)
        meta = tmp_path / "meta"
        meta.mkdir()
        for i, table in enumerate(tables):
            table = table.set_column(1, "url", pa.array([next(urls) for _ in range(table.num_rows)]))
            tables[i] = table
            pq.write_table(table, meta / f"part{i}.parquet")
            write_npz(meta / f"part{i}.npz", table.num_rows, i, DIMS)
        pool = Pool(str(tmp_path / "pool"))
        runner = CliRunner()
        result = runner.invoke(app, ["import", str(meta), "--pool", pool.url, "--rows-per-part", "1000"])
        assert result.exit_code == 0, result.output
        spec = REPO / "filters" / "clip_l14_top30.yaml"
        result = runner.invoke(app, ["filter", "--pool", pool.url, "--spec", str(spec)])
        assert result.exit_code == 0, result.output
        everything = pa.concat_tables(tables)
        expected = _top_fraction_uids(everything, "clip_l14_similarity_score", 0.3)
        subset = set(pool.read_parquet("subsets/clip_l14_top30/uids.parquet")["uid"].to_pylist())
        assert subset == expected and len(subset) == 901
        assert pool.read_bytes("subsets/clip_l14_top30/uids.npy") == datacomp_saved_bytes(
            datacomp_uid_array(sorted(expected)))
        funnel = pool.read_json("subsets/clip_l14_top30/funnel.json")
        assert funnel["cutoffs"][0]["population"] == 3000  # every metadata row, none downloaded
        assert sum(server.hits.values()) == 0

        result = runner.invoke(app, ["download", "--pool", pool.url, "--subset", "clip_l14_top30",
                                     "--allow-address", "127.0.0.1", "--samples-per-shard", "400"])
        assert result.exit_code == 0, result.output
    rows = pa.concat_tables([read_shard_table(pool, sid) for sid in list_shards(pool)])
    assert set(rows["uid"].to_pylist()) == expected and rows.num_rows == 901
    assert pc.all(pc.equal(rows["status"], "success")).as_py()
    wanted = {u for u, uid in zip(everything["url"].to_pylist(), everything["uid"].to_pylist(), strict=True)
              if uid in expected}
    assert {server.url(p) for p, hits in server.hits.items() if hits} == wanted
    assert all(hits == 1 for hits in server.hits.values() if hits)
    # The metadata pool's population does not change with a download.
    assert population_ids(pool) == ["m00000000", "m00000001", "m00000002", "m00000003"]


def test_download_subset_needs_a_metadata_pool(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(PoolError, match="curate import"):
        from curate.stages.metaimport import subset_candidates

        subset_candidates(pool, "x")


# ------------------------------------------------------------------------------- bad input


def _write_good(meta: Path, files: int = 2, rows: int = 400) -> list[Path]:
    return write_metadata_dir(meta, files, rows, dims=DIMS)


def _spoil_last(meta: Path, change: Callable[[pa.Table], pa.Table]) -> Path:
    last = sorted(meta.glob("*.parquet"))[-1]
    pq.write_table(change(pq.read_table(last)), last)
    return last


def _set_uid(table: pa.Table, row: int, value: str) -> pa.Table:
    uids = table["uid"].to_pylist()
    uids[row] = value
    return table.set_column(0, "uid", pa.array(uids, pa.string()))


BAD_INPUTS = {
    "missing uid": (lambda t: t.drop_columns(["uid"]), "missing column(s) uid"),
    "missing text": (lambda t: t.drop_columns(["text"]), "missing column(s) caption (or text)"),
    "width as text": (lambda t: t.set_column(3, "original_width", pc.cast(t["original_width"], pa.string())),
                      "column original_width is string, expected an integer type"),
    "score as text": (lambda t: t.set_column(6, "clip_l14_similarity_score",
                                             pc.cast(t["clip_l14_similarity_score"], pa.string())),
                      "column clip_l14_similarity_score is string, expected a number"),
    "uid as int": (lambda t: t.set_column(0, "uid", pa.array(range(t.num_rows))),
                   "column uid is int64, expected a string"),
    "extra column": (lambda t: t.append_column("other", pa.array([1] * t.num_rows)),
                     "extra column(s) other compared with"),
    "non-hex uid": (lambda t: _set_uid(t, 399, "z" * 32), "row 399: uid 'zzzz"),
    "upper-case uid": (lambda t: _set_uid(t, 5, t["uid"][5].as_py().upper()), "is not 32 lowercase hex"),
    "short uid": (lambda t: _set_uid(t, 7, "abc"), "row 7: uid 'abc' is not 32 lowercase hex"),
    "null uid": (lambda t: _set_uid(t, 9, None), "row 9: uid is null"),  # type: ignore[arg-type]
    "duplicate in file": (lambda t: _set_uid(t, 300, t["uid"][2].as_py()), "twice in this file"),
}


@pytest.mark.fault("import", "metadata with a missing column, a wrong type, extra columns, or a null, non-hex, "
                   "upper-case or short uid", "one line naming the file (and row) and the problem; nothing written")
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_metadata_is_refused_before_anything_is_written(tmp_path: Path, case: str) -> None:
    change, message = BAD_INPUTS[case]
    _write_good(tmp_path / "meta")
    last = _spoil_last(tmp_path / "meta", change)
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(ConfigError) as err:
        _import(pool, [tmp_path / "meta"], batch_rows=128)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(last)) and message in text, text
    assert not (tmp_path / "pool").exists() or not any((tmp_path / "pool").rglob("*.parquet"))


@pytest.mark.fault("import", "the same uid in two metadata files, 100M-row-safe check",
                   "one line naming both files and the uid; nothing written")
def test_duplicate_uid_across_files_is_refused(tmp_path: Path) -> None:
    files = _write_good(tmp_path / "meta", files=3)
    repeated = pq.read_table(files[0])["uid"][17].as_py()
    _spoil_last(tmp_path / "meta", lambda t: _set_uid(t, 250, repeated))
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(ConfigError) as err:
        _import(pool, [tmp_path / "meta"], batch_rows=100)
    assert str(err.value) == (f"{files[2]}: duplicate uid {repeated} (also in {files[0]}); "
                              "uids must be unique across the pool")
    assert not (tmp_path / "pool").exists() or not any((tmp_path / "pool").rglob("*.parquet"))


@pytest.mark.fault("import", "an .npz whose arrays do not match its parquet (rows or dims)",
                   "one line naming the .npz and the array; nothing written")
def test_npz_that_does_not_match_is_refused(tmp_path: Path) -> None:
    files = _write_good(tmp_path / "meta")
    write_npz(files[1].with_suffix(".npz"), 399, 1, DIMS)
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(ConfigError, match=r"00000001\.npz: array b32_img has 399 rows, its parquet has 400"):
        _import(pool, [tmp_path / "meta"])
    write_npz(files[1].with_suffix(".npz"), 400, 1, (8, 32))
    with pytest.raises(ConfigError, match=r"00000001\.npz: embedding arrays .*l14_img\[32\].* where .*00000000\.npz"
                                          r" has .*l14_img\[16\]"):
        _import(pool, [tmp_path / "meta"])
    assert not (tmp_path / "pool").exists() or not any((tmp_path / "pool").rglob("*.parquet"))


@pytest.mark.fault("import", "a second import into a pool that has one, or into a downloaded pool",
                   "one-line refusal unless --replace; the earlier import stays whole")
def test_second_import_needs_replace(tmp_path: Path) -> None:
    _write_good(tmp_path / "meta")
    pool = Pool(str(tmp_path / "pool"))
    _import(pool, [tmp_path / "meta"])
    before = pool.read_parquet_dir("metadata")
    with pytest.raises(PoolError, match="already holds imported metadata"):
        _import(pool, [tmp_path / "meta"])
    other = write_metadata_dir(tmp_path / "other", 1, 100, seed=5, dims=DIMS)
    _import(pool, other, replace=True)
    assert pool.read_parquet_dir("metadata")["uid"].equals(pq.read_table(other[0])["uid"])
    assert population_ids(pool) == ["m00000000"]
    assert before.num_rows == 800


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    _write_good(tmp_path / "meta", files=1)
    last = _spoil_last(tmp_path / "meta", lambda t: _set_uid(t, 3, "g" * 32))
    proc = subprocess.run([sys.executable, "-m", "curate", "import", str(tmp_path / "meta"), "--pool",
                           str(tmp_path / "pool")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {last}: row 3: uid '{'g' * 32}' is not 32 lowercase hex "
                                                "characters (DataComp's and curate's uid format)"]
    assert not (tmp_path / "pool" / "metadata").exists()


def test_balance_on_a_metadata_pool_matches_the_downloaded_pool(tmp_path: Path, monkeypatch) -> None:
    """Balance ranks the same captions whether they are metadata rows or downloaded samples."""
    from curate.config import BalanceConfig
    from curate.stages import balance
    from curate.uid import make_uid
    from tests.test_balance_stage import ENTRIES, build_pool, zipf_captions

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    captions = zipf_captions(3000, [e for e in ENTRIES if " " not in e], seed=4)
    urls = [f"http://img/{i}.jpg" for i in range(len(captions))]
    pq.write_table(pa.table({"uid": [make_uid(u, c) for u, c in zip(urls, captions, strict=True)], "url": urls,
                             "text": captions}), tmp_path / "meta.parquet")
    meta_pool = Pool(str(tmp_path / "meta_pool"))
    _import(meta_pool, [tmp_path / "meta.parquet"], rows_per_part=700)
    shard_pool = build_pool(tmp_path / "shard_pool", captions, 3)
    (tmp_path / "entries.txt").write_text("\n".join(ENTRIES) + "\n")
    config = BalanceConfig(metadata=str(tmp_path / "entries.txt"), t=40, seed=9)
    got = balance.run(meta_pool, config, quiet=True)
    want = balance.run(shard_pool, config, quiet=True)
    assert got["actual_kept"] == want["actual_kept"] > 0 and got["samples_considered"] == 3000
    assert meta_pool.read_bytes("balanced/balanced/uids.npy") == shard_pool.read_bytes("balanced/balanced/uids.npy")


@pytest.mark.fault("balance", "per-language balance on a metadata pool imported without --language",
                   "one-line error naming the import manifest, before any shard runs")
def test_per_language_balance_reads_the_imported_lang_column(tmp_path: Path, monkeypatch) -> None:
    from curate.config import BalanceConfig
    from curate.stages import balance
    from curate.uid import make_uid
    from tests.test_balance_stage import ENTRIES, build_pool

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    table = metadata_table(2000, 21)
    captions = table["text"].to_pylist()
    urls = [f"http://img/{i}.jpg" for i in range(len(captions))]
    pq.write_table(pa.table({"uid": [make_uid(u, c) for u, c in zip(urls, captions, strict=True)], "url": urls,
                             "text": captions}), tmp_path / "meta.parquet")
    entries = tmp_path / "entries"
    entries.mkdir()
    words = ["photo", "house", "dog", "garden", "haus", "hund", "maison", "chat", "casa", *ENTRIES[:3]]
    for lang in ("en", "de", "fr", "es"):
        (entries / f"{lang}.txt").write_text("\n".join(words) + "\n")
    config = BalanceConfig(metadata=str(entries), t=30, seed=2)

    plain = Pool(str(tmp_path / "plain"))
    _import(plain, [tmp_path / "meta.parquet"])
    with pytest.raises(PoolError, match=r"_import\.json: per-language metadata .* `curate import --language`"):
        balance.run(plain, config, quiet=True)

    meta_pool = Pool(str(tmp_path / "meta_pool"))
    _import(meta_pool, [tmp_path / "meta.parquet"], rows_per_part=600, language=True)
    langs = meta_pool.read_parquet_dir("metadata")["lang"].to_pylist()
    assert {"en", "de"} <= set(langs)
    shard_pool = build_pool(tmp_path / "shard_pool", captions, 2, langs=langs)
    got = balance.run(meta_pool, config, quiet=True)
    want = balance.run(shard_pool, config, quiet=True)
    assert got["actual_kept"] == want["actual_kept"] > 0
    assert meta_pool.read_bytes("balanced/balanced/uids.npy") == shard_pool.read_bytes("balanced/balanced/uids.npy")


def test_subset_membership_by_sorted_keys_matches_a_set() -> None:
    from curate.stages.metaimport import _members, _sorted_keys
    from curate.uid import uids_to_npy_array

    rng = np.random.default_rng(3)
    pool_uids = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex() for _ in range(3000)]
    # Trailing and leading zero bytes, and uids equal in their first half, are the edge cases.
    pool_uids += ["00" * 16, "00" * 15 + "01", "ab" * 8 + "00" * 8, "ab" * 8 + "00" * 7 + "01", "ff" * 16]
    chosen = set(pool_uids[::3]) | {"00" * 16, "ab" * 8 + "00" * 8, "ff" * 16}
    got = _members(pa.array(pool_uids), _sorted_keys(uids_to_npy_array(sorted(chosen))), "x")
    assert got.tolist() == [u in chosen for u in pool_uids]


@pytest.mark.fault("import", "an .npz whose array data ends before the rows its header declares (found while "
                   "writing, after other files' parts were written)", "one line naming the .npz; every temporary "
                   "removed, nothing published")
def test_truncated_npz_found_while_writing_leaves_nothing(tmp_path: Path) -> None:
    import zipfile

    files = _write_good(tmp_path / "meta", files=3)
    arrays = dict(np.load(files[2].with_suffix(".npz")))
    with zipfile.ZipFile(files[2].with_suffix(".npz"), "w") as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(value))
            data = value.tobytes()
            buf.write(data[: len(data) // 2] if key == "l14_txt" else data)
            zf.writestr(f"{key}.npy", buf.getvalue())
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(ConfigError) as err:
        _import(pool, [tmp_path / "meta"], rows_per_part=150, batch_rows=100, workers=2)
    assert str(err.value) == (f"{str(files[2])[:-len('.parquet')]}.npz: array l14_txt ends before the rows its "
                              "header declares (truncated file); nothing was imported")
    left = [p for p in (tmp_path / "pool").rglob("*") if p.is_file()]
    assert left == []
    assert population_ids(pool) == []
