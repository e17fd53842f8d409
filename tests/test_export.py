"""Export: webdataset shards a trainer reads, metadata with scores, repeats, missing uids, resume."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from curate import layout
from curate.config import ExportConfig
from curate.errors import ConfigError, StageFailed
from curate.pool import Pool
from curate.shards import iter_shard_samples
from curate.stages import export
from curate.uid import uids_to_npy_array
from tests.pool_helpers import ImagePool, make_image_pool


@pytest.fixture
def local_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")


@pytest.fixture
def image_pool(tmp_path) -> ImagePool:
    return make_image_pool(tmp_path / "pool")


def _source_images(data: ImagePool) -> dict[str, bytes]:
    out = {}
    for sid in data.shards:
        for s in iter_shard_samples(data.pool, sid):
            out[s["uid"]] = s["image"]
    return out


def _filter_no_caption_or_no_image(sample: dict) -> bool:
    has_caption = "txt" in sample
    has_image = "png" in sample or "jpg" in sample or "jpeg" in sample or "webp" in sample
    return has_caption and has_image


def _openclip_pipeline(urls: list[str]) -> list[tuple]:
    """The essentials of open_clip training/data.py get_wds_dataset (--dataset-type webdataset)."""
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=wds.reraise_exception),
        wds.select(_filter_no_caption_or_no_image),
        wds.decode("pilrgb", handler=wds.reraise_exception),
        wds.rename(image="jpg;png;jpeg;webp", text="txt", key="__key__", meta="json"),
        wds.to_tuple("image", "text", "key", "meta"),
    )
    return list(pipeline)


def _tars(pool: Pool, name: str) -> list[str]:
    return [pool.uri(f"exports/{name}/{n}") for n in pool.listdir(f"exports/{name}") if n.endswith(".tar")]


def test_export_reads_back_in_openclip_webdataset_pipeline(image_pool: ImagePool, ray_runtime) -> None:
    pool = image_pool.pool
    report = export.run(pool, ExportConfig(subset="clip_b32_top", samples_per_shard=7))
    listed = set(pq.read_table(pool.path("subsets/clip_b32_top/uids.parquet"))["uid"].to_pylist())
    expected = listed & set(image_pool.success_uids)
    samples = _openclip_pipeline(_tars(pool, "clip_b32_top"))
    assert len(samples) == len(expected) == report["samples_written"]
    source = _source_images(image_pool)
    for image, text, key, meta in samples:
        uid, _, j = key.rpartition("-")
        assert j == "0" and uid in expected
        assert text == image_pool.captions[uid]
        want = Image.open(io.BytesIO(source[uid])).convert("RGB")
        assert image.size == want.size and np.array_equal(np.asarray(image), np.asarray(want))
        assert meta["uid"] == uid and meta["clip_b32_similarity_score"] == pytest.approx(image_pool.scores[uid])
    # Every output shard holds at most samples_per_shard samples, each in exactly one shard.
    per_tar = [len(_openclip_pipeline([u])) for u in _tars(pool, "clip_b32_top")]
    assert max(per_tar) <= 7 and sum(per_tar) == len(expected)
    # Two listed uids failed to download: counted by reason, not an error.
    assert report["missing_uids"] == {"failed_to_download": 2}
    assert report["missing_rows"] == 2


def test_metadata_parquet_has_every_score_column(image_pool: ImagePool, local_executor) -> None:
    pool = image_pool.pool
    export.run(pool, ExportConfig(subset="subsets/clip_b32_top", samples_per_shard=5), quiet=True)
    meta = pool.read_parquet_dir("exports/clip_b32_top/metadata")
    for col in ("key", "uid", "caption", "url", "width", "height", "clip_b32_similarity_score", "lang",
                "lang_score", "caption_num_words", "caption_num_chars", "aspect_ratio", "phash", "shard"):
        assert col in meta.column_names, col
    assert meta.schema.field("phash").type == pa.uint64()
    rows = meta.to_pylist()
    assert all(r["clip_b32_similarity_score"] == pytest.approx(image_pool.scores[r["uid"]]) for r in rows)
    # metadata row order = tar order, shard by shard
    tar_keys = [k for u in _tars(pool, "clip_b32_top") for _, _, k, _ in _openclip_pipeline([u])]
    assert [r["key"] for r in rows] == tar_keys


def test_repeated_uids_from_datacomp_npy_are_upsampled(image_pool: ImagePool, tmp_path, local_executor) -> None:
    pool = image_pool.pool
    a, b, c = image_pool.success_uids[:3]
    unknown = "f" * 32
    npy = tmp_path / "mine" / "uids.npy"
    npy.parent.mkdir()
    np.save(npy, uids_to_npy_array([a, a, a, b, c, c, unknown]))
    report = export.run(pool, ExportConfig(subset=str(npy), samples_per_shard=100), quiet=True)
    assert report["name"] == "mine"
    keys = sorted(k for _, _, k, _ in _openclip_pipeline(_tars(pool, "mine")))
    assert keys == sorted([f"{a}-0", f"{a}-1", f"{a}-2", f"{b}-0", f"{c}-0", f"{c}-1"])
    assert report["samples_written"] == 6 and report["repeats_written"] == 3
    assert report["missing_uids"] == {"not_in_pool": 1}


def test_shuffle_buffer_is_seeded_and_keeps_every_sample(image_pool: ImagePool, local_executor) -> None:
    pool = image_pool.pool

    def keys(name: str, buffer: int, seed: int) -> list[str]:
        export.run(pool, ExportConfig(subset="bal", name=name, samples_per_shard=4, shuffle_buffer=buffer,
                                      seed=seed), quiet=True)
        return [k for u in _tars(pool, name) for _, _, k, _ in _openclip_pipeline([u])]

    plain, s1, s1_again, s2 = keys("plain", 0, 0), keys("s1", 8, 1), keys("s1b", 8, 1), keys("s2", 8, 2)
    assert s1 == s1_again
    assert sorted(plain) == sorted(s1) == sorted(s2)
    assert s1 != plain and s1 != s2


@pytest.mark.fault("export", "an export killed part-way", "the rerun rewrites only the missing shard; tars byte-identical to a clean run")  # noqa: E501 - one row of docs/reliability.md
def test_resume_after_crash_rewrites_only_missing_shard(image_pool: ImagePool, local_executor) -> None:
    pool = image_pool.pool
    cfg = ExportConfig(subset="clip_b32_top", samples_per_shard=4, with_images_parquet=True)
    export.run(pool, cfg, quiet=True)
    out = "exports/clip_b32_top"
    digests = {n: hashlib.sha256(pool.read_bytes(f"{out}/{n}")).hexdigest() for n in pool.listdir(out)
               if n.endswith(".tar")}
    # Simulate a worker killed mid-shard: its marker never landed, its outputs are gone.
    markers = layout.markers_dir("export/clip_b32_top", "write")
    victim = pool.marker_ids(markers)[-1]
    pool.remove(layout.marker("export/clip_b32_top", "write", victim))
    pool.remove(f"{out}/{sorted(digests)[-1]}")  # the last input shard writes the last output shard
    report = export.run(pool, cfg, quiet=True)
    assert pool.read_report("export/clip_b32_top")["shards_run_now"] == 1
    again = {n: hashlib.sha256(pool.read_bytes(f"{out}/{n}")).hexdigest() for n in pool.listdir(out)
             if n.endswith(".tar")}
    assert again == digests
    images = pool.read_parquet_dir(f"{out}/images")
    assert images.num_rows == report["samples_written"]
    assert all(Image.open(io.BytesIO(b)).size == (64, 64) for b in images["image"].to_pylist())


def _export_files(pool: Pool, name: str) -> dict[str, str]:
    """Every file under exports/<name>/ (but its report), by pool-relative path, with its sha256."""
    out = layout.export_dir(name)
    files = [p for p in pool.fs.find(pool.path(out)) if not p.endswith("report.json")]
    root = pool.path(out)
    return {p[len(root) + 1 :]: hashlib.sha256(pool.fs.cat_file(p)).hexdigest() for p in files}


def _assert_one_plan(pool: Pool, name: str, report: dict, listed: set[str]) -> None:
    """exports/<name>/ holds exactly the shards of `report`'s plan: tars, metadata and nothing else."""
    files = _export_files(pool, name)
    tars = sorted(f for f in files if f.endswith(".tar"))
    assert tars == report["output_shards"]
    assert sorted(f for f in files if f.startswith("metadata/")) == [f"metadata/{t[:-4]}.parquet" for t in tars]
    assert set(files) == set(tars) | {f"metadata/{t[:-4]}.parquet" for t in tars}
    keys = [k for u in _tars(pool, name) for _, _, k, _ in _openclip_pipeline([u])]
    assert len(keys) == len(set(keys)) == report["samples_written"]
    assert {k.rpartition("-")[0] for k in keys} <= listed
    meta = pool.read_parquet_dir(f"{layout.export_dir(name)}/metadata")
    assert sorted(meta["key"].to_pylist()) == sorted(keys)


@pytest.mark.fault("export", "a changed plan (subset or layout) into an existing export",
                   "the old export's shards are removed and every shard is redone; an unchanged rerun skips all")
def test_changed_plan_redoes_shards_and_leaves_no_mix(image_pool: ImagePool, local_executor) -> None:
    pool = image_pool.pool
    top = set(pool.read_parquet("subsets/clip_b32_top/uids.parquet")["uid"].to_pylist())
    bal = set(pool.read_parquet("balanced/bal/uids.parquet")["uid"].to_pylist())
    first = export.run(pool, ExportConfig(subset="clip_b32_top", name="x", samples_per_shard=2), quiet=True)
    _assert_one_plan(pool, "x", first, top)
    before = _export_files(pool, "x")
    # Unchanged: every shard skipped, nothing rewritten.
    again = export.run(pool, ExportConfig(subset="clip_b32_top", name="x", samples_per_shard=2), quiet=True)
    assert again["shards_run_now"] == 0 and again["shards_skipped_as_done"] == first["input_shards"]
    assert _export_files(pool, "x") == before
    # Another layout (fewer, larger output shards): every shard redone, none of the old numbering left.
    wider = export.run(pool, ExportConfig(subset="clip_b32_top", name="x", samples_per_shard=50), quiet=True)
    assert wider["shards_run_now"] == wider["input_shards"]
    assert len(wider["output_shards"]) < len(first["output_shards"])
    _assert_one_plan(pool, "x", wider, top)
    # Another subset into the same name: replaced, not mixed.
    other = export.run(pool, ExportConfig(subset="bal", name="x", samples_per_shard=3), quiet=True)
    assert other["subset"].endswith("balanced/bal/uids.parquet")
    assert other["shards_run_now"] == other["input_shards"]
    _assert_one_plan(pool, "x", other, bal)


@pytest.mark.fault("export", "a new plan's export killed part-way (after replacing an older export)",
                   "the rerun finishes only the missing shard of the new plan; no shard of the old one comes back")
def test_new_plan_interrupted_then_resumed_has_only_its_shards(image_pool: ImagePool, local_executor,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pool = image_pool.pool
    bal = set(pool.read_parquet("balanced/bal/uids.parquet")["uid"].to_pylist())
    export.run(pool, ExportConfig(subset="clip_b32_top", name="x", samples_per_shard=2), quiet=True)
    victim = image_pool.shards[-1]
    real = export.export_shard

    def dies_on_victim(pool_, shard_id, payload, settings):  # type: ignore[no-untyped-def]
        if shard_id == victim:
            raise RuntimeError("worker killed")
        return real(pool_, shard_id, payload, settings)

    monkeypatch.setattr(export, "export_shard", dies_on_victim)
    cfg = ExportConfig(subset="bal", name="x", samples_per_shard=3)
    with pytest.raises(StageFailed, match=victim):
        export.run(pool, cfg, quiet=True)
    monkeypatch.setattr(export, "export_shard", real)
    report = export.run(pool, cfg, quiet=True)
    assert report["shards_run_now"] == 1 and report["shards_skipped_as_done"] == report["input_shards"] - 1
    _assert_one_plan(pool, "x", report, bal)
    # The same as one clean run of this plan.
    export.run(pool, cfg.model_copy(update={"name": "clean"}), quiet=True)
    assert sorted(_export_files(pool, "x").values()) == sorted(_export_files(pool, "clean").values())


def test_rerun_redoes_every_shard(image_pool: ImagePool, local_executor) -> None:
    pool = image_pool.pool
    cfg = ExportConfig(subset="bal", name="x")
    export.run(pool, cfg, quiet=True)
    report = export.run(pool, cfg, quiet=True, rerun=True)
    assert report["shards_run_now"] == report["input_shards"] > 0


@pytest.mark.fault("export", "a missing or malformed subset (uids.npy/parquet)", "a clear error naming it")
def test_bad_subsets_are_clear_errors(image_pool: ImagePool, tmp_path) -> None:
    pool = image_pool.pool
    with pytest.raises(ConfigError, match=r"not found.*subsets/clip_b32_top.*balanced/bal"):
        export.resolve_subset(pool, "nope")
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"uid": ["xyz"]}), bad)
    with pytest.raises(ConfigError, match="not 32 lowercase hex"):
        export.resolve_subset(pool, str(bad))
    nouid = tmp_path / "nouid.parquet"
    pq.write_table(pa.table({"id": ["a"]}), nouid)
    with pytest.raises(ConfigError, match="no 'uid' column"):
        export.resolve_subset(pool, str(nouid))
    with pytest.raises(ConfigError, match="no subset"):
        export.run(pool, ExportConfig())


def test_export_command(image_pool: ImagePool, local_executor) -> None:
    from typer.testing import CliRunner

    from curate.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    for opt in ("--subset", "--name", "--samples-per-shard", "--shuffle-buffer", "--seed", "--with-images-parquet"):
        assert opt in help_text
    pool = image_pool.pool
    result = runner.invoke(app, ["export", "--pool", pool.url, "--subset", "balanced/bal", "--name", "cli",
                                 "--samples-per-shard", "10", "--with-images-parquet"])
    assert result.exit_code == 0, result.output
    assert pool.read_json("exports/cli/report.json")["samples_written"] == len(image_pool.success_uids[::2])
    assert pool.listdir("exports/cli/images")
    bad = runner.invoke(app, ["export", "--pool", pool.url, "--subset", "nope"])
    assert bad.exit_code != 0


def test_cleared_stage_markers_let_a_changed_export_start_over(image_pool: ImagePool, local_executor) -> None:
    """`curate run --redo-changed` clears _done/export and reports/export.json; the export then redoes."""
    pool = image_pool.pool
    export.run(pool, ExportConfig(subset="bal", name="x"), quiet=True)
    assert pool.read_report("export")["last_export"] == "x"
    pool.clear_stage("export")
    assert not pool.exists(layout.stage_markers("export"))
    report = export.run(pool, ExportConfig(subset="clip_b32_top", name="x"), quiet=True)
    assert report["subset"].endswith("subsets/clip_b32_top/uids.parquet")
    meta = pool.read_parquet_dir("exports/x/metadata")
    assert meta.num_rows == report["samples_written"]
