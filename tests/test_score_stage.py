"""The score stage end to end on Ray: real shards (ShardWriter) → scores/ and embeddings/ → resume."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate import layout
from curate.config import ScoreConfig
from curate.errors import PoolError, StageFailed
from curate.pool import Pool
from curate.stages.score import run
from curate.testing.synthetic import draw_shape, encode, make_samples, mismatched_caption
from tests.clip_fixtures import matched_vs_shuffled_auc, write_synthetic_shards


def _png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _bad_images() -> dict[str, bytes]:
    jpeg = encode(draw_shape("red", "circle", 128))
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], loop=0)
    return {
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "cmyk jpeg": encode(draw_shape("blue", "square", 64).convert("CMYK")),
        "sixteen bit": _png(Image.fromarray((np.arange(4096).reshape(64, 64) * 16).astype(np.uint16))),
        "palette transparency": _png(palette, transparency=0),
        "animated gif": gif.getvalue(),
        "one pixel": _png(Image.new("RGB", (1, 1))),
        "too many pixels": encode(Image.new("RGB", (300, 300))),
    }


def _config(model_dir: Path, **extra: object) -> ScoreConfig:
    return ScoreConfig.model_validate({
        "scorers": [
            {"type": "clip", "name": "tiny", "model": str(model_dir), "image_embeddings": True,
             "text_embeddings": True, "batch_size": 32},
            {"type": "nsfw", "clip": "tiny"},
            {"type": "language"}, {"type": "text_stats"}, {"type": "image_stats"},
        ],
        "max_image_pixels": 250 * 250, "decode_batch_size": 16, **extra,
    })


@pytest.mark.ray
def test_score_stage_end_to_end(tiny_clip_dir: Path, tmp_path: Path, ray_runtime: object) -> None:
    pool = Pool(str(tmp_path / "pool"))
    samples = write_synthetic_shards(pool.url, n_shards=2, per_shard=24, extra_images=_bad_images())
    report = run(pool, _config(tiny_clip_dir), quiet=True)
    assert report["shards_done"] == 2 and not report["shards_failed"]
    counts = report["totals"]["counts"]
    assert counts == {"scored": 48 + 5, "truncated_image": 1, "too_many_pixels": 1}
    notes = report["totals"]["notes"]
    for note in ("converted_cmyk", "converted_16bit", "flattened_transparency", "animated_first_frame", "tiny_image"):
        assert notes.get(note) == 1, (note, notes)

    scores = {name: pool.read_parquet_dir(f"scores/{name}") for name in
              ("tiny", "nsfw", "language", "text_stats", "image_stats")}
    uids = [s["uid"] for s in samples]
    for name, table in scores.items():
        assert table["uid"].to_pylist() == uids, name  # one row per successful sample, in shard order
    by_caption = {s["caption"]: i for i, s in enumerate(samples)}
    clip = scores["tiny"]["clip_tiny_similarity_score"]
    assert clip.null_count == 2  # the two images that could not be scored
    assert scores["image_stats"]["phash"].type == pa.uint64()
    assert scores["image_stats"]["phash"].null_count == 2
    assert scores["text_stats"]["caption_num_words"].to_pylist()[by_caption["truncated jpeg"]] == 2
    langs = scores["language"]["lang"].to_pylist()[:48]
    assert langs.count("en") >= 40, langs  # short English captions; fastText may call a few otherwise

    emb = pool.read_parquet("embeddings/tiny/00000000.parquet")
    assert emb.schema.field("image_embedding").type == pa.list_(pa.float16(), 64)
    vectors = np.stack(emb["image_embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    assert emb.num_rows == 24 and "text_embedding" in emb.column_names
    assert pool.exists(layout.score_marker("00000000")) and pool.read_report("score")["scorers"][0] == "tiny"

    # Resume: a second run does nothing; a lost marker re-scores only that shard.
    before = pool.read_bytes("scores/tiny/00000000.parquet")
    again = run(pool, _config(tiny_clip_dir), quiet=True)
    assert again["shards_run_now"] == 0 and again["shards_skipped_as_done"] == 2
    pool.remove(layout.score_marker("00000001"))
    third = run(pool, _config(tiny_clip_dir), quiet=True)
    assert third["shards_run_now"] == 1
    assert pool.read_bytes("scores/tiny/00000000.parquet") == before


@pytest.mark.ray
def test_tiny_clip_auc_through_the_scorer_on_real_shards(tiny_clip_dir: Path, tmp_path: Path,
                                                         ray_runtime: object) -> None:
    """Matched pairs outscore shuffled pairs (AUC >= 0.9), scored by the stage from tar shards."""
    from curate.shards import SampleRow, ShardWriter
    from curate.uid import make_uid

    pool = Pool(str(tmp_path / "pool"))
    rng = np.random.default_rng(7)
    writer = ShardWriter(pool, "00000000")
    matched: set[str] = set()
    for i, s in enumerate(make_samples(80, seed=99)):
        for kind, caption in (("m", s.caption), ("x", mismatched_caption(s, rng))):
            url = f"http://example.test/{i}{kind}.jpg"
            uid = make_uid(url, caption)
            matched.update({uid} if kind == "m" else set())
            writer.add(SampleRow(key=f"{i:04d}{kind}", uid=uid, url=url, caption=caption, status="success",
                                 width=64, height=64, image=encode(s.image)))
    writer.close({})
    pool.write_json(layout.download_marker("00000000"), {})
    run(pool, ScoreConfig.model_validate({"scorers": [{"type": "clip", "name": "tiny", "model": str(tiny_clip_dir)}]}),
        quiet=True)
    table = pool.read_parquet("scores/tiny/00000000.parquet").to_pydict()
    score = np.array(table["clip_tiny_similarity_score"])
    is_matched = np.array([u in matched for u in table["uid"]])
    assert matched_vs_shuffled_auc(score[is_matched], score[~is_matched]) >= 0.9


@pytest.mark.fault("score", "a model that is not available offline", "one clear error naming what to download and where, before any shard is read")  # noqa: E501 - one row of docs/reliability.md
def test_missing_model_fails_before_reading_shards(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    write_synthetic_shards(pool.url, n_shards=1, per_shard=2)
    from curate.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        run(pool, ScoreConfig.model_validate({"scorers": [{"type": "clip", "model": "/no/such/dir"}]}), quiet=True)
    assert not pool.exists(layout.score_marker("00000000"))


def test_empty_pool_and_empty_config_are_errors(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="no finished download shards"):
        run(Pool(str(tmp_path)), ScoreConfig.model_validate({"scorers": [{"type": "text_stats"}]}), quiet=True)
    with pytest.raises(PoolError, match="no scorers"):
        run(Pool(str(tmp_path)), ScoreConfig(), quiet=True)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unique"):
        ScoreConfig.model_validate({"scorers": [{"type": "text_stats"}, {"type": "text_stats"}]})
    with pytest.raises(ValueError, match="names no clip scorer"):
        ScoreConfig.model_validate({"scorers": [{"type": "nsfw", "clip": "b32"}]})
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        ScoreConfig.model_validate({"scorers": [{"type": "aesthetic"}]})
    with pytest.raises(ValueError, match="Extra inputs"):
        ScoreConfig.model_validate({"scorers": [{"type": "clip", "model": "x", "modle": "y"}]})


def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """CURATE_EXECUTOR=local, and proof that it is honoured: starting Ray fails the test."""
    import curate.runtime

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("CURATE_EXECUTOR=local, yet the stage started Ray")

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    monkeypatch.setattr(curate.runtime, "ensure_ray", refuse)


@pytest.mark.fault("score", "an unreadable download shard", "that shard is named as failed; the others finish")
@pytest.mark.parametrize("executor", [pytest.param("ray", marks=pytest.mark.ray), "local"])
def test_unreadable_shard_is_named_and_others_finish(executor: str, tmp_path: Path, request: pytest.FixtureRequest,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if executor == "ray":
        request.getfixturevalue("ray_runtime")
    else:
        _no_ray(monkeypatch)
    pool = Pool(str(tmp_path / "pool"))
    write_synthetic_shards(pool.url, n_shards=2, per_shard=3)
    pool.write_bytes("shards/00000001.tar", b"this is not a tar file" * 100)
    with pytest.raises(StageFailed, match="00000001"):
        run(pool, ScoreConfig.model_validate({"scorers": [{"type": "text_stats"}, {"type": "image_stats"}]}),
            quiet=True)
    assert pool.exists(layout.score_marker("00000000")) and not pool.exists(layout.score_marker("00000001"))
    report = pool.read_report("score")
    assert "00000001" in report["shards_failed"] and report["shards_done"] == 1
    # The error is the reader's, not a crash of the dataset.
    assert "tar" in report["passes"]["score"]["shards_failed"]["00000001"].lower()


def _tables(pool: Pool, names: tuple[str, ...]) -> dict[str, pa.Table]:
    out = {f"scores/{n}": pool.read_parquet_dir(layout.scores_dir(n)) for n in names}
    out["embeddings/tiny"] = pool.read_parquet_dir(layout.embeddings_dir("tiny"))
    return out


@pytest.mark.ray
def test_local_executor_gives_the_ray_outputs(tiny_clip_dir: Path, tmp_path: Path, ray_runtime: object,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """CURATE_EXECUTOR=local runs the same pass in this process (no Ray) with the same files and counts."""
    names = ("tiny", "nsfw", "language", "text_stats", "image_stats")
    results = {}
    for executor in ("ray", "local"):
        if executor == "local":
            _no_ray(monkeypatch)
        pool = Pool(str(tmp_path / executor))
        write_synthetic_shards(pool.url, n_shards=2, per_shard=12, extra_images=_bad_images())
        report = run(pool, _config(tiny_clip_dir), quiet=True)
        markers = {sid: pool.read_json(layout.score_marker(sid)) for sid in ("00000000", "00000001")}
        results[executor] = (report, _tables(pool, names), markers)
    ray_report, ray_tables, ray_markers = results["ray"]
    local_report, local_tables, local_markers = results["local"]
    assert local_report["totals"]["counts"] == ray_report["totals"]["counts"]
    assert local_report["totals"]["notes"] == ray_report["totals"]["notes"]
    assert local_report["shards_done"] == 2 and "ray_start_s" not in local_report["phase_seconds"]
    for sid, marker in local_markers.items():
        same = ("samples", "expected_samples", "counts", "notes", "scorers", "_fingerprint")
        assert {k: marker[k] for k in same} == {k: ray_markers[sid][k] for k in same}
    for rel, table in local_tables.items():
        theirs = ray_tables[rel]
        assert table.schema == theirs.schema and table.num_rows == theirs.num_rows, rel
        for column in table.column_names:
            mine, other = table[column].to_pylist(), theirs[column].to_pylist()
            if table.schema.field(column).type in (pa.float32(), pa.float64()):
                a = np.array([np.nan if v is None else v for v in mine], float)
                b = np.array([np.nan if v is None else v for v in other], float)
                assert np.allclose(a, b, atol=1e-4, equal_nan=True), (rel, column)
            elif pa.types.is_fixed_size_list(table.schema.field(column).type):
                assert np.allclose(np.array(mine, float), np.array(other, float), atol=2e-3), (rel, column)
            else:
                assert mine == other, (rel, column)


def test_changed_scorer_config_redoes_shards_and_unchanged_skips(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _no_ray(monkeypatch)
    pool = Pool(str(tmp_path / "pool"))
    write_synthetic_shards(pool.url, n_shards=2, per_shard=4)
    scorers: list[dict[str, object]] = [{"type": "text_stats"}, {"type": "image_stats"}]

    def score(**extra: object) -> dict:
        return run(pool, ScoreConfig.model_validate({"scorers": scorers, **extra}), quiet=True)

    assert score()["shards_run_now"] == 2
    assert pool.read_report("score")["totals"]["counts"] == {"scored": 8}
    unchanged = score()
    assert unchanged["shards_run_now"] == 0 and unchanged["shards_skipped_as_done"] == 2
    # How scorers run (batch sizes, CPUs, actors) does not change what they write: kept.
    scorers[1] = {"type": "image_stats", "batch_size": 3, "num_cpus": 2}
    assert score(decode_batch_size=3)["shards_run_now"] == 0
    # What they write does: a stricter pixel cap redoes every shard, and the outputs show it.
    stricter = score(max_image_pixels=100)
    assert stricter["shards_run_now"] == 2 and stricter["totals"]["counts"] == {"scored": 0, "too_many_pixels": 8}
    assert pool.read_parquet_dir(layout.scores_dir("image_stats"))["phash"].null_count == 8
    # A scorer added to the config: every shard is scored again, with the new scorer's table.
    scorers.append({"type": "text_stats", "name": "words"})
    grown = score(max_image_pixels=100)
    assert grown["shards_run_now"] == 2 and pool.read_parquet_dir(layout.scores_dir("words")).num_rows == 8
    # A shard downloaded again (its download marker rewritten): only that shard is scored again.
    pool.write_json(layout.download_marker("00000001"), {"samples": 4, "redone": True})
    again = score(max_image_pixels=100)
    assert again["shards_run_now"] == 1 and again["shards_skipped_as_done"] == 1


@pytest.mark.ray
def test_jpeg_decode_on_model_matches_decoding_in_tasks(tiny_clip_dir: Path, tmp_path: Path,
                                                        ray_runtime: object) -> None:
    """`jpeg_decode_on: model` (the actor decodes JPEGs on its device; on CPU here) gives the same
    rows, reasons and notes as decoding in the CPU tasks, and scores equal to the third decimal."""
    results = {}
    for where in ("tasks", "model"):
        pool = Pool(str(tmp_path / where))
        write_synthetic_shards(pool.url, n_shards=2, per_shard=24, extra_images=_bad_images())
        report = run(pool, _config(tiny_clip_dir, jpeg_decode_on=where), quiet=True)
        results[where] = (report["totals"], pool.read_parquet_dir("scores/tiny"), pool.read_parquet_dir("scores/nsfw"),
                          pool.read_parquet_dir("scores/image_stats"))
    (totals_t, clip_t, nsfw_t, stats_t), (totals_m, clip_m, nsfw_m, stats_m) = results["tasks"], results["model"]
    assert totals_m["counts"] == totals_t["counts"] and totals_m["notes"] == totals_t["notes"]
    assert clip_m["uid"].equals(clip_t["uid"])
    assert stats_m.drop_columns(["phash"]).equals(stats_t.drop_columns(["phash"]))
    # phash is made from the smallest decode the views allow (1/8-scale DCT when the model decodes
    # its own input), so it may move by a bit or two; a near-duplicate is tens of bits closer.
    from curate.scorers.image_stats import hamming

    pairs = [(x, y) for x, y in zip(stats_t["phash"].to_pylist(), stats_m["phash"].to_pylist(), strict=True)
             if x is not None]
    distances = hamming(np.array([x for x, _ in pairs], np.uint64), np.array([y for _, y in pairs], np.uint64))
    assert distances.max() <= 4, distances
    a = np.array(clip_t["clip_tiny_similarity_score"].to_pylist(), dtype=float)
    b = np.array(clip_m["clip_tiny_similarity_score"].to_pylist(), dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b)) < 0.02, np.nanmax(np.abs(a - b))
    assert np.corrcoef(a[~np.isnan(a)], b[~np.isnan(b)])[0, 1] > 0.999
    assert nsfw_m["nsfw_image_score"].null_count == nsfw_t["nsfw_image_score"].null_count
