"""The whole pipeline through `curate run` on a small generated pool, and what crashes do to it.

One local web (curate.demo.web) is served for the whole module, so every run sees the same urls
and uids and the outputs of different runs can be compared byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from curate import layout
from curate.demo.web import build_demo_web
from curate.testing.http import Route, serve_routes
from curate.testing.watgen import write_wat

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_web(tmp_path_factory):
    web = build_demo_web(n_clean=160, seed=3, links_per_page=6)

    def route(path: str):
        res = web.resources.get(path)
        return None if res is None else Route(body=res.body, content_type=res.content_type)

    out = tmp_path_factory.mktemp("web")
    with serve_routes(route) as server:
        pages = [(server.url(p), [(server.url(s), a) for s, a in links]) for p, links in web.pages]
        half = len(pages) // 2
        write_wat(out / "a.warc.wat.gz", pages[:half])
        write_wat(out / "b.warc.wat.gz", pages[half:])
        yield out


def _pipeline(tmp: Path, wat_dir: Path, model_dir: Path) -> Path:
    cfg = {
        "name": "e2e",
        "pool": str(tmp / "pool"),
        "ingest": {"inputs": [str(wat_dir / "*.warc.wat.gz")]},
        "download": {"image_size": 128, "samples_per_shard": 40, "thread_count": 8, "timeout": 5, "retries": 0,
                     "allow_addresses": ["127.0.0.1"], "per_host_concurrency": 8, "per_host_rate": 1000},
        "score": {"scorers": [
            {"type": "clip", "name": "dfn", "model": str(model_dir), "image_embeddings": True, "batch_size": 64},
            {"type": "language"}, {"type": "text_stats"}, {"type": "image_stats"},
        ]},
        "dedup": {"methods": [{"method": "exact"}, {"method": "perceptual", "max_distance": 4}]},
        "filter": {"spec": str(tmp / "spec.yaml")},
        "balance": {"metadata": str(REPO / "curate" / "demo" / "metadata.txt"), "subset": "e2e", "name": "e2e",
                    "t": 15},
        "export": {"subset": "balanced/e2e", "name": "e2e", "samples_per_shard": 50},
        "stats": {},
    }
    (tmp / "spec.yaml").write_text(yaml.safe_dump({
        "name": "e2e", "description": "basic + dedup + DFN top 80% of survivors",
        "conditions": [
            {"include": str(REPO / "filters" / "datacomp_basic.yaml")},
            {"not_duplicate": "exact"}, {"not_duplicate": "perceptual"},
            {"column": "clip_dfn_similarity_score", "top_fraction": 0.8, "within": "survivors"},
        ],
    }))
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(pipeline: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", "run", str(pipeline), *extra], capture_output=True,
                          text=True, timeout=600, **kwargs)


def _outputs(pool: Path) -> dict[str, object]:
    """What a finished run produced, in a form two runs can be compared by."""
    subset = np.load(pool / "subsets" / "e2e" / "uids.npy")
    balanced = np.load(pool / "balanced" / "e2e" / "uids.npy")
    meta = pq.read_table(pool / "exports" / "e2e" / "metadata").to_pandas()
    shards = sorted(p.name for p in (pool / "shards").glob("*.parquet") if not p.name.startswith("_"))
    downloaded = pd.concat([pq.read_table(pool / "shards" / name, columns=["uid", "status"]).to_pandas()
                            for name in shards]) if shards else None
    return {"subset": subset.tobytes(), "balanced": balanced.tobytes(), "export_uids": sorted(meta["uid"]),
            "n_export_keys": meta["key"].nunique() if "key" in meta else len(meta), "shards": shards,
            "downloaded": sorted(downloaded["uid"]) if downloaded is not None else []}


@pytest.fixture(scope="module")
def reference(small_web, tiny_clip_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    pipeline = _pipeline(tmp, small_web, tiny_clip_dir)
    proc = _run(pipeline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, pipeline, proc


def test_whole_pipeline_produces_every_table(reference):
    tmp, _, _ = reference
    pool = tmp / "pool"
    for rel in ("pipeline.yaml", "candidates", "shards", "scores/dfn", "embeddings/dfn", "dedup/exact.parquet",
                "subsets/e2e/uids.npy", "subsets/e2e/funnel.json", "balanced/e2e/entry_counts.parquet",
                "exports/e2e/metadata", "reports/index.html", "reports/stats.json"):
        assert (pool / rel).exists(), rel
    out = _outputs(pool)
    assert len(out["export_uids"]) == len(set(out["export_uids"])) > 0
    assert out["n_export_keys"] == len(out["export_uids"])
    recorded = yaml.safe_load((pool / "pipeline.yaml").read_text())
    assert set(recorded["stage_hashes"]) == {"ingest", "download", "score", "dedup", "filter", "balance",
                                             "export", "stats"}
    # Every exported sample passed the filter and was kept by balancing.
    balanced = set(pq.read_table(pool / "balanced" / "e2e" / "uids.parquet")["uid"].to_pylist())
    subset = set(pq.read_table(pool / "subsets" / "e2e" / "uids.parquet")["uid"].to_pylist())
    assert set(out["export_uids"]) == balanced and balanced <= subset


def test_rerun_of_a_finished_pipeline_does_nothing_new(reference):
    tmp, pipeline, _ = reference
    before = _outputs(tmp / "pool")
    proc = _run(pipeline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already done" in proc.stderr
    assert _outputs(tmp / "pool") == before


def test_changed_config_of_a_finished_stage_is_refused(reference, tmp_path):
    _, pipeline, _ = reference
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["dedup"]["methods"][1]["max_distance"] = 6
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    proc = _run(changed)
    assert proc.returncode == 2 and "stage(s) dedup already finished" in proc.stderr and "--redo-changed" in proc.stderr


def _wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    """Wait for a state the run signals (a file); the bound only turns a hang into a failure."""
    end = time.monotonic() + 600
    while not predicate():
        assert proc.poll() is None, f"the run exited (status {proc.returncode}) before {what}"
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.1)


def _paused_run(pipeline: Path, gate: Path, after: int, **kwargs) -> subprocess.Popen:
    """`curate run` whose download stage pauses one shard after `after` others finished (runner._test_pause)."""
    gate.mkdir()
    env = {**os.environ, "CURATE_TEST_PAUSE": f"download:{after}:{gate}"}
    return subprocess.Popen([sys.executable, "-m", "curate", "run", str(pipeline)], env=env,
                            start_new_session=True, **kwargs)


@pytest.mark.fault("run", "the whole `curate run` is SIGKILLed during the download stage, then run again",
                   "the rerun finishes only what is missing; subset, balanced set and export equal an "
                   "uninterrupted run's, no shard lost or doubled")
def test_killed_run_resumes_to_the_uninterrupted_result(reference, small_web, tiny_clip_dir, tmp_path):
    pipeline = _pipeline(tmp_path, small_web, tiny_clip_dir)
    pool, gate = tmp_path / "pool", tmp_path / "gate"
    done = pool / layout.DOWNLOAD_MARKERS
    proc = _paused_run(pipeline, gate, after=2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # One shard holds before its marker: the stage cannot finish until the kill below.
        _wait_for(lambda: (gate / "paused").exists() and len(list(done.glob("*.json"))) >= 2, proc,
                  "two download shards finished and a third paused")
        paused_shard = (gate / "paused").read_text().split()[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (done / f"{paused_shard}.json").exists() and not (pool / "reports" / "download.json").exists()
    rerun = _run(pipeline)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads((pool / "reports" / "download.json").read_text())
    assert report["shards_skipped_as_done"] >= 2 and report["shards_run_now"] >= 1  # resumed, not redone
    assert report["shards_skipped_as_done"] + report["shards_run_now"] == report["shards_total"]
    assert _outputs(pool) == _outputs(reference[0] / "pool")


@pytest.mark.fault("run", "a Ray worker running a download task is SIGKILLed mid-stage",
                   "Ray retries the task; the run completes with the same result as an uninterrupted one")
def test_killed_ray_worker_is_retried(reference, small_web, tiny_clip_dir, tmp_path):
    pipeline = _pipeline(tmp_path, small_web, tiny_clip_dir)
    gate = tmp_path / "gate"
    proc = _paused_run(pipeline, gate, after=1, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (gate / "paused").exists(), proc, "a download shard paused in its worker")
        pid, shard = (gate / "paused").read_text().split()
        os.kill(int(pid), signal.SIGKILL)  # the worker process running that shard's task
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    attempts = (gate / f"arrived-{shard}").read_text().split()
    assert len(attempts) == 2 and attempts[0] == pid != attempts[1], "the killed task was not retried elsewhere"
    assert _outputs(tmp_path / "pool") == _outputs(reference[0] / "pool")


def test_demo_catches_every_planted_problem(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "curate.demo", "--out", str(tmp_path / "demo"), "--clean", "240",
                           "--dfn-steps", "150", "--wat-files", "2", "--emoji-concepts", "8", "--emoji-links", "60",
                           "--eval-seeds", "2", "--eval-samples-seen", "1024"], capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "demo" / "pool" / "reports" / "planted.json").read_text())
    kinds = {r["kind"]: r for r in report["kinds"]}
    for kind, row in kinds.items():
        if kind == "clean":
            continue
        if kind == "mismatched_caption":  # a learned filter: most, not all, with a 150-step tiny DFN
            assert row["flagged_by_signal"] >= 0.8 * row["planted"], row
            assert row["left_in_filtered_subset"] <= 0.2 * row["planted"], row
            continue
        assert row["flagged_by_signal"] == row["planted"], row
        assert row["left_in_filtered_subset"] == 0 and row["left_in_final_set"] == 0, row
    assert kinds["clean"]["left_in_filtered_subset"] >= 0.6 * kinds["clean"]["planted"]
    html = (tmp_path / "demo" / "pool" / "reports" / "index.html").read_text()
    assert "Planted problems" in html
    assert "HTML report:" in proc.stderr
    # The real-pixel half: the emoji pool curated, its noise accounted for, and the subset evaluated.
    emoji = tmp_path / "demo" / "emoji" / "pool"
    noise = json.loads((emoji / "reports" / "noise.json").read_text())
    rows = {r["kind"]: r for r in noise["kinds"]}
    assert rows["tiny_image"]["kept"] == rows["extreme_aspect"]["kept"] == 0  # the size and aspect rules
    assert noise["noise_share_kept"] < noise["noise_share_downloaded"]
    results = json.loads((emoji / "evals" / "emoji" / "results.json").read_text())
    assert set(results["arms"]) == {"emoji", "random-emoji", "pool"}
    assert {c["against"] for c in results["headline"]} == {"random-emoji", "pool"}
    assert "Evaluation" in (emoji / "reports" / "index.html").read_text()
    assert "emoji vs random-emoji" in proc.stderr
