"""A small but complete pool on disk for export/stats/notebook tests: real images, real tables.

Download shards are written with curate.shards.ShardWriter from curate.testing.synthetic images (so
exports carry decodable JPEGs), and score/dedup/subset/balance tables follow the DESIGN contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate import layout
from curate.pool import Pool
from curate.shards import SampleRow, ShardWriter, shard_name
from curate.testing.synthetic import encode, make_samples
from curate.uid import make_uid, uids_to_npy_array

LANGS = ("en", "de", "fr", "es")


@dataclass
class ImagePool:
    pool: Pool
    shards: list[str]
    success_uids: list[str] = field(default_factory=list)
    failed_uids: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # uid -> clip_b32_similarity_score


def make_image_pool(root: str | Path, n_shards: int = 3, per_shard: int = 20, fail_every: int = 7,
                    seed: int = 0, subset_threshold: float = 0.25) -> ImagePool:
    """Download shards + scores + dedup + a filter subset ("clip_b32_top") + a balanced set ("bal")."""
    pool = Pool(str(root))
    rng = np.random.default_rng(seed)
    samples = make_samples(n_shards * per_shard, seed=seed)
    out = ImagePool(pool, [shard_name(i) for i in range(n_shards)])
    candidates: dict[str, list] = {k: [] for k in ("uid", "url", "text", "page_url", "source", "crawl",
                                                    "page_lang", "alt_kind")}
    for s_idx, sid in enumerate(out.shards):
        writer = ShardWriter(pool, sid)
        score_rows: dict[str, list] = {k: [] for k in ("uid", "clip_b32_similarity_score")}
        lang_rows: dict[str, list] = {k: [] for k in ("uid", "lang", "lang_score")}
        text_rows: dict[str, list] = {k: [] for k in ("uid", "caption_num_words", "caption_num_chars")}
        img_rows: dict[str, list] = {k: [] for k in ("uid", "width", "height", "aspect_ratio", "phash")}
        status_counts: dict[str, int] = {}
        for i in range(per_shard):
            n = s_idx * per_shard + i
            sample = samples[n]
            url = f"http://127.0.0.1/img/{n}.jpg"
            uid = make_uid(url, sample.caption)
            for key, value in (("uid", uid), ("url", url), ("text", sample.caption),
                               ("page_url", f"http://127.0.0.1/page/{n}"), ("source", "test.wat"), ("crawl", ""),
                               ("page_lang", "en"), ("alt_kind", "alt")):
                candidates[key].append(value)
            key = f"{sid}{i:04d}"
            if fail_every and n % fail_every == fail_every - 1:
                status = "failed_to_download"
                writer.add(SampleRow(key, uid, url, sample.caption, status, error_message="HTTP 404"))
                out.failed_uids.append(uid)
                status_counts[status] = status_counts.get(status, 0) + 1
                continue
            jpg = encode(sample.image)
            writer.add(SampleRow(key, uid, url, sample.caption, "success", width=64, height=64,
                                 original_width=64 + n, original_height=64, sha256=f"{n:064x}", image=jpg))
            status_counts["success"] = status_counts.get("success", 0) + 1
            out.success_uids.append(uid)
            out.captions[uid] = sample.caption
            score = float(np.round(rng.uniform(0.05, 0.45), 4))
            out.scores[uid] = score
            score_rows["uid"].append(uid)
            score_rows["clip_b32_similarity_score"].append(score)
            lang_rows["uid"].append(uid)
            lang_rows["lang"].append(LANGS[n % len(LANGS)])
            lang_rows["lang_score"].append(float(rng.uniform(0.5, 1.0)))
            text_rows["uid"].append(uid)
            text_rows["caption_num_words"].append(len(sample.caption.split()))
            text_rows["caption_num_chars"].append(len(sample.caption))
            img_rows["uid"].append(uid)
            img_rows["width"].append(64)
            img_rows["height"].append(64)
            img_rows["aspect_ratio"].append(1.0)
            img_rows["phash"].append(int(rng.integers(0, 2**63)))
        stats = {"count": per_shard, "successes": status_counts.get("success", 0),
                 "failed_to_download": status_counts.get("failed_to_download", 0), "status_dict": status_counts}
        writer.close(stats)
        pool.write_json(layout.download_marker(sid), {"samples": per_shard, "counts": status_counts})
        pool.write_parquet(f"scores/clip_b32/{sid}.parquet", pa.table(score_rows))
        pool.write_parquet(f"scores/language/{sid}.parquet", pa.table(lang_rows))
        pool.write_parquet(f"scores/text_stats/{sid}.parquet", pa.table(text_rows))
        img_table = pa.table(img_rows).set_column(4, "phash", pa.array(img_rows["phash"], pa.uint64()))
        pool.write_parquet(f"scores/image_stats/{sid}.parquet", img_table)
    pool.write_parquet("candidates/part-00000.parquet", pa.table(candidates))
    total = n_shards * per_shard
    status_all = {"success": len(out.success_uids), "failed_to_download": len(out.failed_uids)}
    pool.write_json(layout.report("download"), {"stage": "download", "shards_total": n_shards, "shards_done": n_shards,
                                   "totals": {"samples": total, "counts": status_all,
                                              "error_messages": {"HTTP 404": len(out.failed_uids)}}})
    _write_dedup(pool, out.success_uids)
    _write_subset(pool, out, subset_threshold)
    _write_balanced(pool, out)
    return out


def _write_dedup(pool: Pool, uids: list[str]) -> None:
    groups = np.arange(len(uids)) // 3  # groups of three near-duplicates
    is_dup = np.arange(len(uids)) % 3 != 0
    pool.write_parquet("dedup/phash.parquet", pa.table({
        "uid": uids, "group": pa.array(groups, pa.int64()), "is_duplicate": pa.array(is_dup),
        "phash_distance": pa.array(np.where(is_dup, 2, 0), pa.int32())}))


def _write_subset(pool: Pool, data: ImagePool, threshold: float) -> None:
    # The failed uids are listed too: a subset built from candidates may name images that never arrived.
    kept = [u for u in data.success_uids if data.scores[u] >= threshold] + data.failed_uids[:2]
    name = "clip_b32_top"
    pool.write_parquet(f"subsets/{name}/uids.parquet", pa.table({"uid": pa.array(kept, pa.string())}))
    pool.write_bytes(f"subsets/{name}/uids.npy", _npy_bytes(uids_to_npy_array(kept)))
    n_in = len(data.success_uids)
    removed = sum(1 for u in data.success_uids if data.scores[u] < threshold)
    label = f"clip_b32_similarity_score >= {threshold!r}"
    # The layout curate.stages.filter writes: spec.json (the resolved spec) and funnel.json.
    pool.write_json(f"subsets/{name}/spec.json", {"fingerprint": "test", "spec_file": "test.yaml", "spec": {
        "name": name, "conditions": [{"column": "clip_b32_similarity_score", "ge": threshold},
                                     {"column": "lang", "in": list(LANGS)}]}})
    pool.write_json(f"subsets/{name}/funnel.json", {
        "spec": name, "population": n_in, "not_downloaded": len(data.failed_uids), "kept": n_in - removed,
        "conditions": [
            {"index": 0, "condition": label, "removed_alone": removed, "removed_in_order": removed,
             "removed_only_by_this": removed, "remaining": n_in - removed},
            {"index": 1, "condition": f"lang in {list(LANGS)!r}", "removed_alone": 0, "removed_in_order": 0,
             "removed_only_by_this": 0, "remaining": n_in - removed}],
        "cutoffs": [], "missing_values": {},
    })


def _write_balanced(pool: Pool, data: ImagePool) -> None:
    kept = data.success_uids[::2]
    pool.write_parquet("balanced/bal/uids.parquet", pa.table({"uid": pa.array(kept, pa.string())}))
    pool.write_bytes("balanced/bal/uids.npy", _npy_bytes(uids_to_npy_array(kept)))
    entries = ["red", "green", "blue", "circle", "square", "triangle", "cross"]
    before = np.array([40, 25, 12, 9, 5, 3, 1], dtype=np.int64)
    pool.write_parquet("balanced/bal/entry_counts.parquet", pa.table({
        "entry": entries, "count": before, "count_after": np.minimum(before, 10)}))
    pool.write_json("balanced/bal/report.json", {"input": len(data.success_uids), "kept": len(kept), "t": 10})


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
