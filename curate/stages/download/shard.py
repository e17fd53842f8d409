"""One download shard: a slice of candidates → fetched, vetted, resized images in one shard.

Runs inside a Ray task; the I/O fans out over a thread pool (thread_count). The shard has a hard
deadline (shard_timeout): samples not finished by then are written with status `timeout` and the
shard completes, so a stage never hangs on a few slow hosts.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curate import __version__
from curate.config import DownloadConfig
from curate.errors import PoolError
from curate.pool import Pool
from curate.shards import SHARD_DIR, SampleRow, ShardWriter
from curate.stages.download.addresses import DnsCache, parse_allow_list
from curate.stages.download.fetch import FetchFailure, FetchSettings, fetch_image
from curate.stages.download.images import ImageProcessor, ImageRejected
from curate.stages.download.politeness import HostLimiter
from curate.uid import check_uids

CANDIDATE_COLUMNS = ("uid", "url", "text")
OPTIONAL_COLUMNS = ("page_url",)
RETRY_BACKOFF_S = 0.2
# A sample that was a success before and now has one of these statuses was withdrawn (an owner's
# opt-out, an address now blocked): that wins over keeping the earlier shard.
_WITHDRAWN = frozenset({"opted_out", "blocked_address"})


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one candidates parquet file."""

    file: str
    start: int
    stop: int


def user_agent(token: str) -> str:
    return f"Mozilla/5.0 (compatible; {token}/{__version__}; image-text dataset downloader)"


class _Worker:
    """Per-shard state shared by the fetch threads: DNS cache, host limiter, resizer."""

    def __init__(self, config: DownloadConfig, deadline: float) -> None:
        self.config = config
        self.deadline = deadline
        self.dns = DnsCache(ttl=config.dns_cache_seconds)
        self.limiter = HostLimiter(config.per_host_concurrency, config.per_host_rate)
        self.images = ImageProcessor(config)
        self.settings = FetchSettings(
            user_agent=user_agent(config.user_agent_token),
            user_agent_token=config.user_agent_token,
            respect_optouts=config.respect_optouts,
            max_bytes=config.max_image_bytes,
            allow=parse_allow_list(config.allow_addresses),
        )

    def fetch(self, url: str) -> bytes:
        """Fetch with `retries` extra attempts for transient failures (timeouts, resets, 5xx, 429)."""
        attempt = 0
        while True:
            request_deadline = min(time.monotonic() + self.config.timeout, self.deadline)
            try:
                return fetch_image(url, self.settings, self.dns, self.limiter, request_deadline)
            except FetchFailure as exc:
                attempt += 1
                backoff = RETRY_BACKOFF_S * attempt
                if not exc.retryable or attempt > self.config.retries or time.monotonic() + backoff >= self.deadline:
                    raise
                time.sleep(backoff)

    def process(self, key: str, uid: str, url: str, caption: str, extra: dict[str, Any] | None) -> SampleRow:
        row = SampleRow(key=key, uid=uid, url=url, caption=caption, status="success",
                        extension=self.config.encode_format, extra=extra)
        if not url.strip():
            row.status, row.error_message = "failed_to_download", "empty url"
            return row
        try:
            stored = self.images(self.fetch(url))
        except FetchFailure as exc:
            if time.monotonic() >= self.deadline:
                # Cut short by the shard's deadline, not by the server: the same status whichever of
                # the request or the shard's wait noticed the deadline first.
                row.status, row.error_message = "timeout", f"shard_timeout of {self.config.shard_timeout}s reached"
            else:
                row.status, row.error_message = exc.status, exc.error
            return row
        except ImageRejected as exc:
            row.status, row.error_message = "failed_to_resize", str(exc)
            return row
        except Exception as exc:  # a bug or an unforeseen library error must not lose the shard
            row.status, row.error_message = "failed_to_download", f"unexpected {type(exc).__name__}"
            return row
        row.image = stored.data
        row.sha256 = hashlib.sha256(stored.data).hexdigest()
        row.width, row.height = stored.width, stored.height
        row.original_width, row.original_height = stored.original_width, stored.original_height
        return row


def read_segments(pool: Pool, segments: list[Segment]) -> pa.Table:
    """The shard's candidate rows, in order, with the columns download needs."""
    tables = []
    for seg in segments:
        names = set(pool.parquet_schema(seg.file).names)
        cols = [c for c in (*CANDIDATE_COLUMNS, *OPTIONAL_COLUMNS) if c in names]
        part = pool.read_parquet(seg.file, columns=cols).slice(seg.start, seg.stop - seg.start)
        # uids enter the pool here (ingest writes valid ones; candidates may come from elsewhere).
        check_uids(part["uid"], f"{pool.uri(seg.file)} rows {seg.start}-{seg.stop - 1}")
        tables.append(part)
    return pa.concat_tables(tables, promote_options="default")


def key_width(samples_per_shard: int) -> int:
    return max(4, len(str(max(0, samples_per_shard - 1))))


def download_shard(pool: Pool, shard_id: str, segments: list[Segment], config: DownloadConfig) -> dict[str, Any]:
    """The runner's shard function: writes shards/<id>.{tar,parquet,_stats.json}, returns stats."""
    start_wall = time.time()
    deadline = time.monotonic() + config.shard_timeout
    table = read_segments(pool, segments)
    uids = table.column("uid").to_pylist()
    urls = table.column("url").to_pylist()
    captions = [t if t is not None else "" for t in table.column("text").to_pylist()]
    page_urls = table.column("page_url").to_pylist() if "page_url" in table.column_names else [None] * len(uids)
    width = key_width(config.samples_per_shard)
    keys = [f"{shard_id}{i:0{width}d}" for i in range(len(uids))]

    worker = _Worker(config, deadline)
    rows: list[SampleRow | None] = [None] * len(uids)
    pool_size = max(1, min(config.thread_count, len(uids)))
    executor = cf.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix=f"download-{shard_id}")
    try:
        futures = {
            executor.submit(worker.process, keys[i], uids[i], urls[i] or "", captions[i],
                            {"page_url": page_urls[i]} if page_urls[i] else None): i
            for i in range(len(uids))
        }
        done, _ = cf.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for fut in done:
            rows[futures[fut]] = fut.result()
    finally:
        # Threads still running past the shard deadline are abandoned: their samples are written as
        # timeouts below, and each request's own deadline ends them shortly after.
        executor.shutdown(wait=False, cancel_futures=True)

    writer = ShardWriter(pool, shard_id, config.output_format)
    for i, row in enumerate(rows):
        if row is None:
            row = SampleRow(key=keys[i], uid=uids[i], url=urls[i] or "", caption=captions[i], status="timeout",
                            error_message=f"shard_timeout of {config.shard_timeout}s reached")
        writer.add(row)
    kept = earlier_shard_to_keep(pool, shard_id, writer.rows, config)
    if kept is not None:
        return kept
    stats = shard_stats(writer.rows)
    end_wall = time.time()
    # The _stats.json also carries img2dataset's field names, so tools reading those keep working.
    writer.close({
        **stats, "shard": shard_id, "count": stats["samples"], "status_dict": stats["counts"],
        "failed_to_download": stats["samples"] - stats["successes"] - stats["counts"].get("failed_to_resize", 0),
        "failed_to_resize": stats["counts"].get("failed_to_resize", 0),
        "start_time": start_wall, "end_time": end_wall, "duration": round(end_wall - start_wall, 3),
    })
    return stats


def earlier_shard_to_keep(pool: Pool, shard_id: str, rows: list[SampleRow],
                          config: DownloadConfig) -> dict[str, Any] | None:
    """The stats of the shard already written, when this run's `rows` must not replace it.

    A rerun over a finished shard (its marker deleted, or --rerun) while the image hosts are down
    would otherwise swap good images for failures without a word. The earlier shard is kept when it
    holds the same candidates, in the configured output format, with more successes, unless
    `overwrite_worse` is set or a sample it has was opted out or blocked since. None: write `rows`.
    """
    if config.overwrite_worse:
        return None
    parquet_rel, stats_rel = f"{SHARD_DIR}/{shard_id}.parquet", f"{SHARD_DIR}/{shard_id}_stats.json"
    if not (pool.exists(parquet_rel) and pool.exists(stats_rel)):
        return None
    if config.output_format == "webdataset" and not pool.exists(f"{SHARD_DIR}/{shard_id}.tar"):
        return None
    try:
        earlier = pool.read_json(stats_rel)
        has_images = "jpg" in pool.parquet_schema(parquet_rel).names
        table = pool.read_parquet(parquet_rel, columns=["uid", "status"])
    except (PoolError, OSError, ValueError, pa.ArrowException):
        return None  # unreadable: nothing worth keeping
    if has_images != (config.output_format == "parquet") or not isinstance(earlier, dict):
        return None
    statuses = table.column("status").to_pylist()
    before = statuses.count("success")
    now = sum(r.status == "success" for r in rows)
    if before <= now or table.column("uid").to_pylist() != [r.uid for r in rows]:
        return None
    if any(old == "success" and r.status in _WITHDRAWN for old, r in zip(statuses, rows, strict=True)):
        return None
    kept = {k: earlier[k] for k in ("samples", "counts", "errors", "successes", "bytes_stored") if k in earlier}
    return {**kept, "kept_earlier": {"shards": 1, "successes_kept": before, "successes_this_run": now}}


def shard_stats(rows: list[SampleRow]) -> dict[str, Any]:
    """Counts per status and per error (runner convention: numbers and dicts sum across shards)."""
    counts = Counter(r.status for r in rows)
    errors = Counter(f"{r.status}: {r.error_message}" for r in rows if r.status != "success")
    return {
        "samples": len(rows),
        "counts": dict(counts),
        "errors": dict(errors),
        "successes": counts.get("success", 0),
        "bytes_stored": sum(len(r.image) for r in rows if r.image is not None),
    }
