"""Pool statistics: stats.json sections from the pool's tables, threshold grids, a self-contained HTML."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from curate.config import ExportConfig, StatsConfig
from curate.pool import Pool
from curate.stages import export
from curate.stats import run as stats_run
from curate.stats import write_report
from tests.pool_helpers import LANGS, ImagePool, make_image_pool

THRESHOLD = 0.25


@pytest.fixture(scope="module")
def full_pool(tmp_path_factory) -> ImagePool:
    import os

    data = make_image_pool(tmp_path_factory.mktemp("stats") / "pool", subset_threshold=THRESHOLD)
    os.environ["CURATE_EXECUTOR"] = "local"
    try:
        export.run(data.pool, ExportConfig(subset="clip_b32_top", samples_per_shard=10), quiet=True)
    finally:
        del os.environ["CURATE_EXECUTOR"]
    return data


@pytest.fixture(scope="module")
def full_stats(full_pool: ImagePool) -> dict:
    return write_report(full_pool.pool, StatsConfig(grid_samples=4, histogram_bins=10), quiet=True)


def test_funnel_counts_every_stage(full_pool: ImagePool, full_stats: dict) -> None:
    stages = {s["stage"]: s for s in full_stats["funnel"]["stages"]}
    n_ok, n_fail = len(full_pool.success_uids), len(full_pool.failed_uids)
    assert stages["candidates"]["rows"] == n_ok + n_fail
    assert stages["download"]["rows"] == n_ok and stages["download"]["attempted"] == n_ok + n_fail
    assert stages["score"]["per_scorer"] == {"clip_b32": n_ok, "image_stats": n_ok, "language": n_ok,
                                             "text_stats": n_ok}
    kept = sum(1 for s in full_pool.scores.values() if s >= THRESHOLD)
    assert stages["filter"]["per_subset"] == {"clip_b32_top": kept + 2}  # + two uids that failed to download
    assert stages["balance"]["per_set"] == {"bal": len(full_pool.success_uids[::2])}
    assert stages["export"]["per_export"] == {"clip_b32_top": kept}
    assert stages["dedup"]["per_method"]["phash"]["duplicates"] == sum(1 for i in range(n_ok) if i % 3)


def test_download_scores_language_captions_sizes(full_pool: ImagePool, full_stats: dict) -> None:
    n_ok, n_fail = len(full_pool.success_uids), len(full_pool.failed_uids)
    dl = full_stats["download"]
    assert dl["status"] == {"success": n_ok, "failed_to_download": n_fail}
    assert dl["top_errors"] == {"HTTP 404": n_fail}
    hists = full_stats["scores"]["histograms"]
    for col in ("clip_b32_similarity_score", "lang_score", "caption_num_words", "caption_num_chars"):
        assert sum(hists[col]["counts"]) == n_ok and len(hists[col]["counts"]) == 10, col
    assert "phash" not in hists  # a hash has no meaningful histogram
    scores = sorted(full_pool.scores.values())
    assert hists["clip_b32_similarity_score"]["min"] == pytest.approx(scores[0])
    assert hists["clip_b32_similarity_score"]["max"] == pytest.approx(scores[-1])
    lang = full_stats["language"]["counts"]
    assert set(lang) <= set(LANGS) and sum(lang.values()) == n_ok
    assert full_stats["captions"]["source"] == "text_stats scores"
    assert sum(full_stats["image_sizes"]["original_width"]["counts"]) == n_ok
    groups = full_stats["dedup"]["methods"]["phash"]["group_size_counts"]
    assert sum(int(size) * n for size, n in groups.items()) == n_ok
    curves = full_stats["balanced"]["bal"]["entry_counts"]["curves"]
    assert curves["count"][0] == 40 and curves["count_after"][0] == 10


def test_threshold_grids_show_samples_either_side_of_the_cut(full_pool: ImagePool, full_stats: dict) -> None:
    (grid,) = full_stats["threshold_grids"]
    assert (grid["column"], grid["op"], grid["threshold"]) == ("clip_b32_similarity_score", "ge", THRESHOLD)
    kept = [i["score"] for i in grid["kept"]]
    removed = [i["score"] for i in grid["removed"]]
    assert len(kept) == len(removed) == 4
    assert all(s >= THRESHOLD for s in kept) and all(s < THRESHOLD for s in removed)
    # closest to the cut: nothing omitted lies between the shown samples and the threshold
    above = sorted(s for s in full_pool.scores.values() if s >= THRESHOLD)[:4]
    below = sorted((s for s in full_pool.scores.values() if s < THRESHOLD), reverse=True)[:4]
    assert sorted(kept) == pytest.approx(above) and sorted(removed, reverse=True) == pytest.approx(below)
    for item in grid["kept"] + grid["removed"]:
        assert item["caption"] == full_pool.captions[item["uid"]]


def test_html_is_self_contained_with_every_section(full_pool: ImagePool, full_stats: dict) -> None:
    page = full_pool.pool.read_bytes("reports/index.html").decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(http" not in page and "@import" not in page
    for sid in ("funnel", "download", "scores", "language", "captions", "image-sizes", "dedup", "filter",
                "thresholds", "balance", "exports"):
        assert re.search(rf"<section id='{sid}'[^>]*data-present='true'", page), sid
    imgs = re.findall(r'<img src="([^"]*)"', page)
    assert len(imgs) == 8 and all(u.startswith("data:image/jpeg;base64,") for u in imgs)  # 4 per side of the cut
    plots = re.findall(r"<figure data-plot='([^']*)'><svg ", page)
    for name in ("funnel", "download status", "histogram of clip_b32_similarity_score", "languages",
                 "caption words", "original_width", "phash group sizes", "entry counts"):
        assert name in plots, name
    assert full_pool.pool.read_json("reports/stats.json")["download"]["present"]


def test_sections_say_when_their_tables_are_absent(tmp_path) -> None:
    pool = Pool(str(tmp_path / "bare"))
    pool.write_parquet("candidates/part-00000.parquet", pa.table({"uid": ["0" * 32], "url": ["u"], "text": ["t"]}))
    stats = stats_run(pool, StatsConfig(), quiet=True)  # the `curate run` entry point
    assert pool.read_report("stats")["html"].endswith("reports/index.html")
    assert stats["funnel"]["stages"][0]["rows"] == 1
    for sec in ("download", "scores", "language", "captions", "image_sizes", "dedup"):
        assert stats[sec]["present"] is False and stats[sec]["absent_reason"], sec
    page = pool.read_bytes("reports/index.html").decode()
    assert page.count("Absent:") == 11  # every section but the funnel
    assert "no evaluations (evals/<name>/results.json" in page.replace("&lt;", "<").replace("&gt;", ">")
    assert "no dedup tables" in page


def test_stats_command(full_pool: ImagePool) -> None:
    from typer.testing import CliRunner

    from curate.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["stats", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    assert "POOL" in help_text and "--grid-samples" in help_text
    full_pool.pool.remove("reports/index.html")
    result = runner.invoke(app, ["stats", full_pool.pool.url, "--grid-samples", "2"])
    assert result.exit_code == 0, result.output
    assert full_pool.pool.exists("reports/index.html")
    assert runner.invoke(app, ["stats", str(full_pool.pool.root) + "-missing"]).exit_code != 0


def test_real_filter_then_export_then_stats(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract end to end: curate's filter writes the subset, export and stats read it."""
    from curate.config import FilterConfig
    from curate.stages import filter as filter_stage

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    data = make_image_pool(tmp_path / "pool")
    spec = tmp_path / "top_half.yaml"
    spec.write_text("name: top_half\nconditions:\n  - {column: clip_b32_similarity_score, top_fraction: 0.5}\n"
                    "  - {column: caption_num_words, ge: 4}\n")
    funnel = filter_stage.run(data.pool, FilterConfig(spec=str(spec)), quiet=True)
    report = export.run(data.pool, ExportConfig(subset="top_half"), quiet=True)
    assert report["samples_written"] == funnel["kept"] and report["missing_uids"] == {}
    stats = write_report(data.pool, StatsConfig(grid_samples=3), quiet=True)
    grids = {(g["subset"], g["column"], g["op"]): g for g in stats["threshold_grids"]}
    top = grids[("top_half", "clip_b32_similarity_score", "top_fraction")]
    assert top["threshold"] == pytest.approx(funnel["cutoffs"][0]["threshold"])
    assert min(i["score"] for i in top["kept"]) >= top["threshold"] > max(i["score"] for i in top["removed"])
    words = grids[("top_half", "caption_num_words", "ge")]
    assert all(i["score"] >= 4 for i in words["kept"]) and all(i["score"] < 4 for i in words["removed"])
    stages = {s["stage"]: s for s in stats["funnel"]["stages"]}
    assert stages["export"]["per_export"]["top_half"] == funnel["kept"]
