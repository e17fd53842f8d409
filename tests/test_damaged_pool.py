"""Damaged pools through the CLI: each damaged file is one line naming it, and a bad shard fails only that shard.

Stages run in-process (CURATE_EXECUTOR=local), so these need no Ray.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from curate import layout
from curate.cli import app
from curate.config import ScoreConfig
from curate.errors import CurateError, PoolError, StageFailed
from curate.pool import Pool
from curate.testing.pool import make_score_pool
from curate.uid import make_uid
from tests.clip_fixtures import write_synthetic_shards

SPEC = Path(__file__).resolve().parent.parent / "filters" / "clip_b32_threshold.yaml"


@pytest.fixture(autouse=True)
def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")


def _truncate(pool: Pool, rel: str) -> None:
    data = pool.read_bytes(rel)
    pool.write_bytes(rel, data[: len(data) // 2])


def _garbage(pool: Pool, rel: str) -> None:
    pool.write_bytes(rel, b"\x00garbage, not what was written here\xff" * 20)


def _non_hex_uids(pool: Pool, rel: str) -> None:
    table = pool.read_parquet(rel)
    uids = pc.binary_join_element_wise("uid-", pc.utf8_slice_codeunits(table["uid"], 0, 8), "")
    pool.write_parquet(rel, table.set_column(table.column_names.index("uid"), "uid", uids))


def _one_line(exc: BaseException | None) -> str:
    assert isinstance(exc, CurateError), repr(exc)
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------------------------- filter


def _score_pool(root: Path) -> Pool:
    pool = Pool(str(root / "pool"))
    make_score_pool(pool, n_shards=3, rows_per_shard=60, seed=3)
    return pool


def _non_hex_shard_and_scores(pool: Pool, sid: str) -> None:
    for rel in [f"shards/{sid}.parquet", *(f"scores/{s}/{sid}.parquet" for s in pool.listdir("scores"))]:
        _non_hex_uids(pool, rel)


FILTER_CASES: dict[str, tuple[Callable[[Pool], None], str]] = {
    "truncated shard parquet": (lambda p: _truncate(p, "shards/00000000.parquet"), "shards/00000000.parquet"),
    "garbage shard parquet": (lambda p: _garbage(p, "shards/00000000.parquet"), "shards/00000000.parquet"),
    "truncated scores parquet": (lambda p: _truncate(p, "scores/b32/00000000.parquet"),
                                 "scores/b32/00000000.parquet"),
    "phantom download marker (shard parquet gone)": (lambda p: p.remove("shards/00000000.parquet"),
                                                     "shards/00000000.parquet is missing"),
    "non-hex uids in a shard": (lambda p: _non_hex_shard_and_scores(p, "00000000"), "not 32 lowercase hex"),
}


@pytest.mark.fault("filter", "a damaged shard: truncated or garbage shard parquet, truncated scores parquet, "
                   "a phantom download marker (outputs gone), non-hex uids",
                   "that shard fails with one line naming the file; the other shards finish; exit non-zero")
@pytest.mark.parametrize("case", sorted(FILTER_CASES))
def test_filter_fails_only_the_damaged_shard(case: str, tmp_path: Path) -> None:
    pool = _score_pool(tmp_path)
    damage, named = FILTER_CASES[case]
    damage(pool)
    result = CliRunner().invoke(app, ["filter", "--pool", pool.url, "--spec", str(SPEC)])
    assert isinstance(result.exception, StageFailed), (result.exception, result.output)
    assert result.exception.failed.keys() == {"00000000"}
    assert named in result.exception.failed["00000000"]
    assert "\n" not in result.exception.failed["00000000"]
    parts = pool.listdir("subsets/clip_b32_threshold/parts")
    assert parts == ["00000001.parquet", "00000002.parquet"]


@pytest.mark.fault("filter", "a garbage download completion marker", "the shard's intact outputs are read; "
                   "`curate download` redoes that shard")
def test_garbage_download_marker_does_not_stop_filter(tmp_path: Path) -> None:
    pool = _score_pool(tmp_path)
    _garbage(pool, layout.download_marker("00000001"))
    result = CliRunner().invoke(app, ["filter", "--pool", pool.url, "--spec", str(SPEC)])
    assert result.exit_code == 0, (result.exception, result.output)
    assert pool.read_json("subsets/clip_b32_threshold/funnel.json")["shards"] == 3


# ------------------------------------------------------------------------------------- download


def _candidates(pool: Pool, n_files: int = 2, rows: int = 4) -> None:
    # Loopback URLs: every sample is blocked before any request (no --allow-address), so nothing is sent.
    for f in range(n_files):
        urls = [f"http://127.0.0.1:9/{f}/{i}.jpg" for i in range(rows)]
        texts = [f"picture {f} {i}" for i in range(rows)]
        uids = [make_uid(u, t) for u, t in zip(urls, texts, strict=True)]
        pool.write_parquet(f"candidates/part-{f:05d}.parquet", pa.table({"uid": uids, "url": urls, "text": texts}))


DOWNLOAD_ARGS = ["--samples-per-shard", "4"]


@pytest.mark.fault("download", "a truncated or garbage candidates parquet",
                   "one line naming the file before any shard runs, exit 2")
@pytest.mark.parametrize("damage", [_truncate, _garbage], ids=["truncated", "garbage"])
def test_damaged_candidates_are_one_line(damage: Callable[[Pool, str], None], tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    damage(pool, "candidates/part-00001.parquet")
    result = CliRunner().invoke(app, ["download", "--pool", pool.url, *DOWNLOAD_ARGS])
    assert isinstance(result.exception, PoolError)
    assert "candidates/part-00001.parquet" in _one_line(result.exception)
    assert not pool.exists("shards/00000000.parquet")


@pytest.mark.fault("download", "candidates whose uids are not 32 lowercase hex characters",
                   "their shard fails with one line naming the candidates file; other shards finish")
def test_non_hex_candidate_uids_fail_their_shard(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    _non_hex_uids(pool, "candidates/part-00001.parquet")
    result = CliRunner().invoke(app, ["download", "--pool", pool.url, *DOWNLOAD_ARGS])
    assert isinstance(result.exception, StageFailed), (result.exception, result.output)
    assert result.exception.failed.keys() == {"00000001"}
    reason = result.exception.failed["00000001"]
    assert "candidates/part-00001.parquet" in reason and "not 32 lowercase hex" in reason
    assert pool.exists(layout.download_marker("00000000")) and not pool.exists("shards/00000001.parquet")


@pytest.mark.fault("download", "its own completion marker garbage, or present for a shard whose tar is gone "
                   "(phantom)", "that shard is redone, with one line naming the marker; exit 0")
@pytest.mark.parametrize("case", ["garbage marker", "phantom marker"])
def test_damaged_own_marker_redoes_the_shard(case: str, tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    args = ["download", "--pool", pool.url, *DOWNLOAD_ARGS]
    assert CliRunner().invoke(app, args).exit_code == 0
    if case == "garbage marker":
        _garbage(pool, layout.download_marker("00000001"))
    else:
        pool.remove("shards/00000001.tar")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.exception, result.output)
    assert layout.download_marker("00000001") in result.output and "redoing the shard" in result.output
    report = pool.read_report("download")
    assert report["shards_run_now"] == 1 and report["shards_done"] == 2
    assert pool.exists("shards/00000001.tar") and pool.read_json(layout.download_marker("00000001"))["samples"] == 4


# ------------------------------------------------------------------------------------- pipeline.yaml


@pytest.mark.fault("run", "the pool's pipeline.yaml is a YAML list (or not YAML)",
                   "one line naming that file, exit 2, before any stage runs")
@pytest.mark.parametrize("content", [b"- a\n- b\n", b"stage_hashes: [1, 2]\n", b"\x00\xff: : ["],
                         ids=["list", "hashes-list", "garbage"])
def test_pool_pipeline_yaml_damaged_is_one_line(content: bytes, tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    pool.write_bytes("pipeline.yaml", content)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"pool: {pool.url}\ndownload:\n  samples_per_shard: 4\n")
    proc = subprocess.run([sys.executable, "-m", "curate", "run", str(cfg)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{pool.url}/pipeline.yaml" in lines[0], proc.stderr
    assert not pool.exists("shards")


# ------------------------------------------------------------------------------------- score


@pytest.mark.fault("score", "a truncated download shard parquet, or a marker whose shard parquet is gone",
                   "that shard fails with one line naming the file; the others are scored")
@pytest.mark.parametrize("case", ["truncated", "phantom"])
def test_score_fails_only_the_damaged_shard(case: str, tmp_path: Path) -> None:
    from curate.stages.score import run

    pool = Pool(str(tmp_path / "pool"))
    write_synthetic_shards(pool.url, n_shards=2, per_shard=3)
    if case == "truncated":
        _truncate(pool, "shards/00000001.parquet")
    else:
        pool.remove("shards/00000001.parquet")
    with pytest.raises(StageFailed) as info:
        run(pool, ScoreConfig.model_validate({"scorers": [{"type": "text_stats"}]}), quiet=True)
    assert info.value.failed.keys() == {"00000001"}
    assert "shards/00000001.parquet" in info.value.failed["00000001"]
    assert pool.exists(layout.score_marker("00000000")) and not pool.exists(layout.score_marker("00000001"))


# ------------------------------------------------------------------------------------- balance


@pytest.mark.fault("balance", "a download shard, or a --subset uid list, with uids that are not 32 lowercase hex",
                   "that shard fails with one line naming the file (a bad subset: one line, nothing runs)")
@pytest.mark.parametrize("where", ["shard", "subset"])
def test_balance_rejects_non_hex_uids(where: str, tmp_path: Path) -> None:
    from curate.config import BalanceConfig
    from curate.stages import balance

    pool = _score_pool(tmp_path)
    metadata = tmp_path / "metadata.txt"
    metadata.write_text("cat\ndog\nphoto\nhouse\n")
    config = BalanceConfig(metadata=str(metadata), t=5)
    if where == "shard":
        _non_hex_uids(pool, "shards/00000001.parquet")
        with pytest.raises(StageFailed) as info:
            balance.run(pool, config, quiet=True)
        assert set(info.value.failed) == {"00000001"}
        assert "shards/00000001.parquet" in info.value.failed["00000001"]
        assert "not 32 lowercase hex" in info.value.failed["00000001"]
    else:
        pool.write_parquet("subsets/mine/uids.parquet", pa.table({"uid": ["0" * 32, "NOT-A-UID"]}))
        with pytest.raises(PoolError, match=r"subsets/mine/uids\.parquet: 1 uid"):
            balance.run(pool, config.model_copy(update={"subset": "mine"}), quiet=True)
