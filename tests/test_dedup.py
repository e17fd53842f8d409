"""Dedup methods on a generated pool with planted copies: precision/recall, keep rules, invariance."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from curate import layout
from curate.config import DedupConfig
from curate.errors import ConfigError, PoolError, StageFailed
from curate.pool import Pool
from curate.stages.dedup import run
from tests.test_dedup_pool import COPY_KINDS, PlantedPool, build_pool, pair_scores

PERCEPTUAL_KINDS = COPY_KINDS
EXACT_KINDS = ("exact",)


@pytest.fixture(autouse=True)
def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shard functions run in-process here; test_dedup_ray covers the same code on Ray.
    monkeypatch.setenv("CURATE_EXECUTOR", "local")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> PlantedPool:
    return build_pool(str(tmp_path_factory.mktemp("dedup") / "pool"))


def config(*methods: dict) -> DedupConfig:
    return DedupConfig.model_validate({"methods": list(methods)})


def read_result(pool: Pool, name: str) -> dict[str, dict]:
    table = pool.read_parquet(f"dedup/{name}.parquet")
    return {row["uid"]: row for row in table.to_pylist()}


def assert_finds_planted(planted: PlantedPool, result: dict[str, dict], kinds: tuple[str, ...]) -> None:
    truth = planted.truth_groups(kinds)
    assert set(result) == set(planted.uids)
    precision, recall = pair_scores({u: r["group"] for u, r in result.items()}, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # Flags: exactly one kept per planted group, nothing flagged outside planted groups.
    flagged = {u for u, r in result.items() if r["is_duplicate"]}
    should = {u for u in planted.uids if truth[u] < 1_000_000} - {
        min(u for u in planted.uids if truth[u] == g) for g in {truth[u] for u in planted.uids if truth[u] < 1_000_000}}
    flag_precision = len(flagged & {u for u in planted.uids if truth[u] < 1_000_000}) / max(1, len(flagged))
    flag_recall = len(flagged) / len(should) if should else 1.0
    assert flag_precision >= 0.95 and 0.95 <= flag_recall <= 1.0 / 0.95, (flag_precision, flag_recall)


def test_exact_groups_same_sha256(planted: PlantedPool) -> None:
    report = run(planted.pool, config({"method": "exact"}), quiet=True)
    result = read_result(planted.pool, "exact")
    assert_finds_planted(planted, result, EXACT_KINDS)
    stats = report["methods"]["exact"]
    assert stats["samples_removed"] == sum(1 for u in planted.uids if planted.kind[u] == "exact")
    assert stats["samples"] == len(planted.uids)  # failed downloads are not samples
    # lowest_uid: the kept member of each group is its smallest uid.
    for uid, row in result.items():
        members = [u for u, r in result.items() if r["group"] == row["group"]]
        assert row["is_duplicate"] == (uid != min(members))
        assert row["group_size"] == len(members)


def test_perceptual_finds_reencoded_resized_and_cropped_copies(planted: PlantedPool) -> None:
    run(planted.pool, config({"method": "perceptual", "max_distance": 10}), quiet=True)
    result = read_result(planted.pool, "perceptual")
    assert_finds_planted(planted, result, PERCEPTUAL_KINDS)
    assert max(r["phash_distance"] for r in result.values() if not r["is_duplicate"]) == 0


def test_perceptual_index_matches_brute_force() -> None:
    from curate.stages.dedup.perceptual import hamming_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    flips = [np.bitwise_or.reduce(np.uint64(1) << rng.choice(64, i % 7, replace=False).astype(np.uint64))
             if i % 7 else np.uint64(0) for i in range(400)]
    codes = np.concatenate([base, base[:400] ^ np.array(flips, dtype=np.uint64)])
    dist = np.bitwise_count(codes[:, None] ^ codes[None, :])
    iu = np.triu_indices(len(codes), 1)
    for k in (0, 3, 6):
        rows, cols, d = hamming_pairs(codes, k)
        expected = {(int(a), int(b)) for a, b, x in zip(*iu, dist[iu], strict=True) if x <= k}
        assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected
        assert (d == dist[rows, cols]).all()


def test_semantic_finds_planted_copies(planted: PlantedPool) -> None:
    run(planted.pool, config({"method": "semantic", "embeddings": "proj", "eps": 0.1, "n_clusters": 8,
                              "cluster_tasks": 3}), quiet=True)
    result = read_result(planted.pool, "semantic")
    assert_finds_planted(planted, result, PERCEPTUAL_KINDS)
    # Shuffle parts are cleaned up; the run's centroids stay.
    runs = [layout.dedup_work("semantic", r) for r in planted.pool.listdir(layout.dedup_work("semantic"))]
    assert runs and all(planted.pool.exists(layout.dedup_centroids(w)) for w in runs)
    assert not any(planted.pool.exists(layout.dedup_parts(w)) for w in runs)


def test_semantic_keep_farthest_from_centroid(planted: PlantedPool) -> None:
    run(planted.pool, config({"method": "semantic", "name": "sem_far", "embeddings": "proj", "eps": 0.1,
                              "n_clusters": 8, "keep": "farthest_from_centroid"}), quiet=True)
    result = read_result(planted.pool, "sem_far")
    for group in {r["group"] for r in result.values()}:
        members = [r for r in result.values() if r["group"] == group]
        kept = [r for r in members if not r["is_duplicate"]]
        assert len(kept) == 1
        assert kept[0]["centroid_cos"] == min(r["centroid_cos"] for r in members if r["cluster"] == kept[0]["cluster"])


def test_keep_highest_score(planted: PlantedPool) -> None:
    run(planted.pool, config({"method": "perceptual", "name": "p_score", "max_distance": 10, "keep": "highest_score",
                              "score_column": "clip_test_similarity_score"}), quiet=True)
    result = read_result(planted.pool, "p_score")
    for group in {r["group"] for r in result.values()}:
        members = [u for u, r in result.items() if r["group"] == group]
        kept = [u for u in members if not result[u]["is_duplicate"]]
        assert kept == [max(members, key=lambda u: planted.clip_score[u])]


def test_kept_fraction_rises_as_eps_falls(planted: PlantedPool) -> None:
    kept = []
    for eps in (0.6, 0.5, 0.3, 0.1, 0.02, 0.005, 0.0001):
        report = run(planted.pool, config({"method": "semantic", "name": f"eps_{eps}", "embeddings": "proj",
                                           "eps": eps, "n_clusters": 4}), quiet=True)
        stats = report["methods"][f"eps_{eps}"]
        kept.append(1 - stats["removed_rate"])
    assert all(a <= b for a, b in itertools.pairwise(kept)), kept
    assert kept[0] < kept[-1]


@pytest.mark.parametrize("n_shards,order_seed", [(1, 1), (5, 2)])
def test_results_do_not_depend_on_sharding(tmp_path, planted: PlantedPool, n_shards: int, order_seed: int) -> None:
    other = build_pool(str(tmp_path / "pool"), n_shards=n_shards, order_seed=order_seed)
    methods = ({"method": "exact"}, {"method": "perceptual", "max_distance": 10},
               {"method": "semantic", "embeddings": "proj", "eps": 0.1, "n_clusters": 8, "cluster_tasks": 5})
    run(planted.pool, config(*methods), quiet=True)
    run(other.pool, config(*methods), quiet=True)
    for name in ("exact", "perceptual", "semantic"):
        a = planted.pool.read_parquet(f"dedup/{name}.parquet")
        b = other.pool.read_parquet(f"dedup/{name}.parquet")
        assert a.select(["uid", "group", "is_duplicate"]).equals(b.select(["uid", "group", "is_duplicate"])), name


def test_rerun_skips_finished_methods_and_redoes_changed_ones(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=20, n_duplicated=5, n_shards=2)
    run(planted.pool, config({"method": "exact"}), quiet=True)
    first = planted.pool.read_report("dedup")["methods"]["exact"]
    run(planted.pool, config({"method": "exact"}), quiet=True)
    assert planted.pool.read_report("dedup")["methods"]["exact"]["seconds"] == first["seconds"]
    run(planted.pool, config({"method": "exact", "keep": "highest_score",
                              "score_column": "clip_test_similarity_score"}), quiet=True)
    assert planted.pool.read_report("dedup")["methods"]["exact"]["keep"] == "highest_score"


def _ran(report: dict, pass_name: str) -> int | None:
    """How many shards of one pass ran in this run (None: the pass did not run at all)."""
    p = report["passes"].get(pass_name)
    return None if p is None else p["shards_run_now"]


def test_changed_method_config_or_input_redoes_only_that_method(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=20, n_duplicated=5, n_shards=2)
    pool = planted.pool
    exact, perceptual = {"method": "exact"}, {"method": "perceptual", "max_distance": 10}
    first = run(pool, config(exact, perceptual), quiet=True)
    assert _ran(first, "exact/groups") == 1 and _ran(first, "perceptual/groups") == 1
    tables = {n: pool.read_bytes(layout.dedup_table(n)) for n in ("exact", "perceptual")}
    # Unchanged: both skipped, their statistics kept from the first run, tables untouched.
    again = run(pool, config(exact, perceptual), quiet=True)
    assert _ran(again, "exact/groups") == 0 and _ran(again, "perceptual/groups") == 0
    assert again["methods"] == first["methods"]
    assert {n: pool.read_bytes(layout.dedup_table(n)) for n in tables} == tables
    # A changed setting of one method redoes that method only.
    changed = run(pool, config(exact, {**perceptual, "max_distance": 4}), quiet=True)
    assert _ran(changed, "exact/groups") == 0 and _ran(changed, "perceptual/groups") == 1
    assert changed["methods"]["perceptual"]["config"]["max_distance"] == 4
    # A changed input table (phashes re-scored for one shard) redoes the method that reads it.
    rel = layout.scores_file("image_stats", "00000001")
    table = pool.read_parquet(rel)
    pool.write_parquet(rel, table.set_column(1, "phash", pa.array([0] * table.num_rows, pa.uint64())))
    rescored = run(pool, config(exact, {**perceptual, "max_distance": 4}), quiet=True)
    assert _ran(rescored, "exact/groups") == 0 and _ran(rescored, "perceptual/groups") == 1
    assert rescored["methods"]["perceptual"]["samples_removed"] > changed["methods"]["perceptual"]["samples_removed"]


def test_semantic_unchanged_rerun_skips_every_pass_and_changed_eps_redoes(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=20, n_duplicated=5, n_shards=2)
    pool = planted.pool
    sem = {"method": "semantic", "embeddings": "proj", "eps": 0.1, "n_clusters": 4, "cluster_tasks": 2}
    first = run(pool, config(sem), quiet=True)
    assert _ran(first, "semantic/assign") == 2 and _ran(first, "semantic/clusters") == 2
    # Finished with this config and these inputs: no centroids, no assignment, nothing read.
    again = run(pool, config(sem), quiet=True)
    assert set(again["passes"]) == {"semantic/groups"} and _ran(again, "semantic/groups") == 0
    assert again["methods"]["semantic"] == first["methods"]["semantic"]
    changed = run(pool, config({**sem, "eps": 0.3}), quiet=True)
    assert _ran(changed, "semantic/assign") == 2 and _ran(changed, "semantic/clusters") == 2
    assert changed["methods"]["semantic"]["config"]["eps"] == 0.3
    # The intermediates of the earlier configuration are gone: one run directory remains.
    assert len(pool.listdir(layout.dedup_work("semantic"))) == 1


@pytest.mark.fault("dedup", "a semantic dedup killed part-way (one cluster bucket failed)",
                   "the rerun redoes only that bucket; the table equals a clean run's")
def test_semantic_resumes_only_the_failed_bucket(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curate.stages.dedup import semantic

    planted = build_pool(str(tmp_path / "pool"), n_originals=20, n_duplicated=5, n_shards=2)
    clean = build_pool(str(tmp_path / "clean"), n_originals=20, n_duplicated=5, n_shards=2)
    sem = {"method": "semantic", "embeddings": "proj", "eps": 0.1, "n_clusters": 4, "cluster_tasks": 3}
    real = semantic.dedup_bucket

    def dies_on_bucket_1(pool, bucket, payload, settings):  # type: ignore[no-untyped-def]
        if bucket == "00001":
            raise RuntimeError("worker killed")
        return real(pool, bucket, payload, settings)

    monkeypatch.setattr(semantic, "dedup_bucket", dies_on_bucket_1)
    with pytest.raises(StageFailed, match="00001"):
        run(planted.pool, config(sem), quiet=True)
    assert not planted.pool.exists(layout.dedup_table("semantic"))
    monkeypatch.setattr(semantic, "dedup_bucket", real)
    report = run(planted.pool, config(sem), quiet=True)
    assert _ran(report, "semantic/assign") == 0 and _ran(report, "semantic/clusters") == 1
    run(clean.pool, config(sem), quiet=True)
    assert planted.pool.read_parquet(layout.dedup_table("semantic")).equals(
        clean.pool.read_parquet(layout.dedup_table("semantic")))


def test_rerun_with_only_redoes_the_named_method_alone(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=10, n_duplicated=2, n_shards=2)
    methods = config({"method": "exact"}, {"method": "perceptual", "max_distance": 10})
    run(planted.pool, methods, quiet=True)
    redo = run(planted.pool, methods, rerun=True, only=["exact"], quiet=True)
    assert set(redo["passes"]) == {"exact/groups"} and _ran(redo, "exact/groups") == 1
    assert set(redo["methods"]) == {"exact", "perceptual"}  # the other method stays listed
    after = run(planted.pool, methods, quiet=True)
    assert _ran(after, "exact/groups") == 0 and _ran(after, "perceptual/groups") == 0


@pytest.mark.fault("dedup", "missing score or embedding tables", "a clear error naming the table")
def test_missing_inputs_are_clear_errors(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=6, n_duplicated=2, n_shards=2)
    planted.pool.remove("embeddings/proj/00000001.parquet")
    with pytest.raises(PoolError, match="00000001"):
        run(planted.pool, config({"method": "semantic", "embeddings": "proj"}), quiet=True)
    with pytest.raises(PoolError, match="no scorer writes column"):
        run(planted.pool, config({"method": "exact", "keep": "highest_score", "score_column": "nope"}), quiet=True)
    with pytest.raises(ConfigError, match="no configured method"):
        run(planted.pool, config({"method": "exact"}), only=["semantic"], quiet=True)
    with pytest.raises(PoolError, match="no finished download shards"):
        run(Pool(str(tmp_path / "empty")), config({"method": "exact"}), quiet=True)


@pytest.mark.fault("dedup", "samples without a phash", "counted by reason, not silently dropped")
def test_missing_phash_is_counted_not_dropped(tmp_path) -> None:

    planted = build_pool(str(tmp_path / "pool"), n_originals=10, n_duplicated=2, n_shards=1)
    table = planted.pool.read_parquet("scores/image_stats/00000000.parquet")
    phash = table["phash"].to_pylist()
    phash[0] = None
    planted.pool.write_parquet("scores/image_stats/00000000.parquet",
                               table.set_column(1, "phash", pa.array(phash, pa.uint64())))
    stats = run(planted.pool, config({"method": "perceptual"}), quiet=True)["methods"]["perceptual"]
    assert stats["counts"]["missing_phash"] == 1
    assert stats["samples"] == len(planted.uids) - 1


def test_config_rejects_bad_methods() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="score_column"):
        config({"method": "exact", "keep": "highest_score"})
    with pytest.raises(ValidationError, match="farthest_from_centroid"):
        config({"method": "perceptual", "keep": "farthest_from_centroid"})
    with pytest.raises(ValidationError, match="same output"):
        config({"method": "exact"}, {"method": "exact"})
    with pytest.raises(ValidationError):
        config({"method": "fuzzy"})
