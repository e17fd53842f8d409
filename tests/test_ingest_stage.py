"""Ingest as a stage: inputs, shards on Ray, failures named, resume, the CLI."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate import layout
from curate.cli import app
from curate.config import IngestConfig
from curate.errors import ConfigError, StageFailed
from curate.pool import Pool
from curate.stages.ingest import CANDIDATE_SCHEMA, plan_shards, run
from curate.testing.watgen import write_wat

runner = CliRunner()


def _wat(path: Path, site: str, n: int = 3) -> Path:
    write_wat(path, [(f"https://{site}/p{i}", [(f"/img/{i}.jpg", f"{site} picture {i}")]) for i in range(n)])
    return path


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_shards_are_numbered_by_the_sorted_inputs(tmp_path):
    _wat(tmp_path / "b.warc.wat.gz", "b.com")
    _wat(tmp_path / "a.warc.wat.gz", "a.com")
    shards = plan_shards(IngestConfig(inputs=[str(tmp_path / "*.wat.gz"), str(tmp_path / "a.warc.wat.gz")]))
    assert {k: Path(v.url).name for k, v in shards.items()} == {"00000": "a.warc.wat.gz", "00001": "b.warc.wat.gz"}
    with pytest.raises(ConfigError, match="matches no files"):
        plan_shards(IngestConfig(inputs=[str(tmp_path / "nothing-*.gz")]))


def test_cli_ingests_files_and_rerun_skips_done_shards(tmp_path, local_executor):
    _wat(tmp_path / "a.warc.wat.gz", "a.com")
    _wat(tmp_path / "b.warc.wat.gz", "b.com", n=2)
    pool = tmp_path / "pool"
    result = runner.invoke(app, ["ingest", str(tmp_path / "*.warc.wat.gz"), "--pool", str(pool)])
    assert result.exit_code == 0, result.output
    p = Pool(str(pool))
    assert p.listdir("candidates") == ["part-00000.parquet", "part-00001.parquet"]
    first = pq.read_table(pool / "candidates" / "part-00000.parquet")
    assert first.schema.equals(CANDIDATE_SCHEMA)
    assert first["text"].to_pylist() == [f"a.com picture {i}" for i in range(3)]
    assert first["source"].to_pylist() == [str(tmp_path / "a.warc.wat.gz")] * 3
    report = p.read_report("ingest")
    assert report["totals"]["candidates"] == 5 and report["totals"]["counts"]["link_kept"] == 5

    again = runner.invoke(app, ["ingest", str(tmp_path / "*.warc.wat.gz"), "--pool", str(pool)])
    assert again.exit_code == 0, again.output
    report = p.read_report("ingest")
    assert report["shards_skipped_as_done"] == 2 and report["shards_run_now"] == 0
    assert report["totals"]["candidates"] == 5


def test_crawl_id_reads_wat_paths_over_http(tmp_path, http_root, local_executor):
    root, base = http_root
    crawl_dir = root / "crawl-data" / "CC-MAIN-2024-22"
    seg = crawl_dir / "segments" / "1716000000.0" / "wat"
    seg.mkdir(parents=True)
    names = [f"CC-MAIN-20240517-{i:05d}.warc.wat.gz" for i in range(3)]
    for i, name in enumerate(names):
        _wat(seg / name, f"site{i}.org", n=2)
    listing = "".join(f"crawl-data/CC-MAIN-2024-22/segments/1716000000.0/wat/{n}\n" for n in names)
    (crawl_dir / "wat.paths.gz").write_bytes(gzip.compress(listing.encode()))

    pool = tmp_path / "pool"
    result = runner.invoke(app, ["ingest", "CC-MAIN-2024-22", "--crawl-files", "2", "--crawl-base-url", base,
                                 "--pool", str(pool)])
    assert result.exit_code == 0, result.output
    table = Pool(str(pool)).read_parquet_dir("candidates")
    assert set(table["crawl"].to_pylist()) == {"CC-MAIN-2024-22"}
    assert sorted(set(table["source"].to_pylist())) == [f"{base}/{line}" for line in listing.split()[:2]]
    assert table.num_rows == 4


def test_crawl_listing_missing_is_a_clear_error(tmp_path, http_root):
    _, base = http_root
    with pytest.raises(ConfigError, match=r"wat\.paths\.gz"):
        plan_shards(IngestConfig(inputs=["CC-MAIN-2030-01"], crawl_base_url=base))


@pytest.mark.ray
@pytest.mark.fault("ingest", "an input file that cannot be opened (missing path / 404)",
                   "that file's shard fails and is named with its error; the other files are ingested; exit non-zero")
def test_unopenable_input_is_a_failed_shard_on_ray(tmp_path, ray_runtime):
    good = _wat(tmp_path / "a.warc.wat.gz", "a.com")
    missing = tmp_path / "z-missing.warc.wat.gz"
    pool = Pool(str(tmp_path / "pool"))
    config = IngestConfig(inputs=[str(good), str(missing)], max_retries=0)
    with pytest.raises(StageFailed) as info:
        run(pool, config, quiet=True)
    assert list(info.value.failed) == ["00001"]
    assert "z-missing.warc.wat.gz" in info.value.failed["00001"]
    assert pool.listdir("candidates") == ["part-00000.parquet"]
    assert not pool.exists(layout.marker("ingest", "extract", "00001"))
    # Once the file exists, a rerun ingests only the missing shard.
    _wat(missing, "z.com")
    report = run(pool, config, quiet=True)
    assert report["shards_run_now"] == 1 and report["shards_skipped_as_done"] == 1


def test_cli_exit_status_names_the_failed_file(tmp_path):
    good = _wat(tmp_path / "a.warc.wat.gz", "a.com")
    env = {**os.environ, "CURATE_EXECUTOR": "local"}
    proc = subprocess.run(
        [sys.executable, "-m", "curate", "ingest", str(good), str(tmp_path / "nope.warc.wat.gz"),
         "--pool", str(tmp_path / "pool")],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 2
    assert "ingest: 1 shard(s) failed: 00001" in proc.stderr
    assert "nope.warc.wat.gz" in proc.stderr  # the summary names the file and its error


def test_cli_config_section_and_help(tmp_path, local_executor):
    _wat(tmp_path / "a.warc.wat.gz", "a.com")
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"pool: {tmp_path / 'unused'}\ningest:\n  inputs: ['{tmp_path / 'a.warc.wat.gz'}']\n"
                   "  max_caption_chars: 5\n")
    result = runner.invoke(app, ["ingest", "--config", str(cfg), "--pool", str(tmp_path / "pool")])
    assert result.exit_code == 0, result.output
    texts = Pool(str(tmp_path / "pool")).read_parquet_dir("candidates")["text"].to_pylist()
    assert texts == ["a.com"] * 3  # capped to 5 characters, then identical (url differs)
    help_text = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--pool", "--config", "--crawl-files", "--crawl-base-url", "--ray-address", "--rerun"):
        assert option in help_text
    no_inputs = runner.invoke(app, ["ingest", "--pool", str(tmp_path / "p2")])
    assert no_inputs.exit_code != 0


@pytest.mark.fault("ingest", "an http(s) input that answers 404", "its shard fails with the HTTP error named")
def test_http_404_input_is_a_failed_shard(tmp_path, http_root, local_executor):
    root, base = http_root
    _wat(root / "ok.warc.wat.gz", "ok.com")
    pool = Pool(str(tmp_path / "pool"))
    config = IngestConfig(inputs=[f"{base}/ok.warc.wat.gz", f"{base}/gone.warc.wat.gz"], max_retries=0)
    with pytest.raises(StageFailed) as info:
        run(pool, config, quiet=True)
    assert list(info.value.failed) == ["00000"]  # 'gone…' sorts before 'ok…'
    assert "404" in info.value.failed["00000"]
    assert pool.read_parquet("candidates/part-00001.parquet").num_rows == 3
