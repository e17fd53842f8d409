"""One download shard: a slice of candidates → fetched, vetted, resized images in one shard.

Runs inside a Ray task; the I/O fans out over a thread pool (thread_count). The shard has a hard
deadline (shard_timeout): samples not finished by then are written with status `timeout` and the
shard completes, so a stage never hangs on a few slow hosts.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import queue
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curate import __version__, layout
from curate.config import DownloadConfig
from curate.counters import DEFAULT_CAP, CappedCounter, normalise_message, normalised
from curate.errors import PoolError
from curate.pool import Pool
from curate.shards import SampleRow, ShardWriter
from curate.stages.download.addresses import DnsCache, parse_allow_list
from curate.stages.download.fetch import FetchFailure, FetchSettings, fetch_image
from curate.stages.download.images import ImageProcessor, ImageRejected
from curate.stages.download.politeness import HostLimiter
from curate.uid import check_uids

CANDIDATE_COLUMNS = ("uid", "url", "text")
OPTIONAL_COLUMNS = ("page_url",)
RETRY_BACKOFF_S = 0.2
ERROR_MESSAGES_PER_SHARD = DEFAULT_CAP
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


# Finished samples wait in candidate order for the ones before them, holding at most this many
# image bytes (plus the small rows of failures): past it no new sample starts until the one at the
# head of the queue is written. Stored images are tens of KB, so a sample slow to time out stalls
# the fetch threads only after ~1,000 later ones are done.
REORDER_BUFFER_BYTES = 64 * 1024 * 1024
# Samples handed to the thread pool ahead of the threads, so no thread waits for the next one.
_QUEUED_PER_THREAD = 2


def _fetch_in_order(worker: _Worker, shard_id: str, rows: list[tuple[str, str, str, str, dict[str, Any] | None]],
                    thread_count: int, deadline: float) -> Iterator[SampleRow | None]:
    """Each candidate's fetched row, in candidate order, as soon as it and those before it are done;
    None for a sample not finished by the shard's deadline.

    Memory is bounded by the samples in flight and REORDER_BUFFER_BYTES of finished ones, not by
    the shard: the caller writes each row out before asking for the next."""
    total = len(rows)
    finished: queue.SimpleQueue[tuple[int, SampleRow]] = queue.SimpleQueue()

    def task(i: int) -> None:
        key, uid, url, caption, extra = rows[i]
        try:
            row = worker.process(key, uid, url, caption, extra)
        except BaseException as exc:  # never leave the head of the queue waiting on a lost sample
            row = SampleRow(key=key, uid=uid, url=url, caption=caption, status="failed_to_download",
                            error_message=f"unexpected {type(exc).__name__}")
            raise
        finally:
            finished.put((i, row))

    pool_size = max(1, min(thread_count, total))
    executor = cf.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix=f"download-{shard_id}")
    ready: dict[int, SampleRow] = {}
    held = 0  # image bytes in `ready`
    submitted = written = 0
    try:
        while written < total:
            while (submitted < total and submitted - written - len(ready) < pool_size * _QUEUED_PER_THREAD
                   and held < REORDER_BUFFER_BYTES):
                executor.submit(task, submitted)
                submitted += 1
            if written in ready:
                row = ready.pop(written)
                held -= len(row.image or b"")
                written += 1
                yield row
                continue
            left = deadline - time.monotonic()
            try:
                i, row = finished.get(timeout=left) if left > 0 else finished.get_nowait()
            except queue.Empty:
                break  # the shard's deadline
            ready[i] = row
            held += len(row.image or b"")
        # Past the deadline: what finished in time is written as it is, the rest as timeouts.
        while True:
            try:
                i, row = finished.get_nowait()
            except queue.Empty:
                break
            ready[i] = row
        for i in range(written, total):
            yield ready.pop(i, None)
    finally:
        # Threads still running past the shard deadline are abandoned: their samples are written as
        # timeouts, and each request's own deadline ends them shortly after.
        executor.shutdown(wait=False, cancel_futures=True)


class _Tally:
    """A shard's counts per status and per error, kept as rows stream past."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors = CappedCounter(ERROR_MESSAGES_PER_SHARD)

    def add(self, row: SampleRow) -> None:
        self.counts[row.status] += 1
        if row.status != "success":
            # The row keeps its full message (the parquet's error_message, next to its url); the
            # counted key names no host or address, and the number of keys is capped.
            self.errors.add(f"{row.status}: {normalise_message(row.error_message or '')}")


def download_shard(pool: Pool, shard_id: str, segments: list[Segment], config: DownloadConfig) -> dict[str, Any]:
    """The runner's shard function: writes shards/<id>.{tar,parquet,_stats.json}, returns stats.

    Samples are written to the shard's temporaries as they finish (in candidate order), so the
    task's memory is bounded by the samples in flight, not by samples_per_shard."""
    start_wall = time.time()
    deadline = time.monotonic() + config.shard_timeout
    table = read_segments(pool, segments)
    uids = table.column("uid").to_pylist()
    urls = table.column("url").to_pylist()
    captions = [t if t is not None else "" for t in table.column("text").to_pylist()]
    page_urls = table.column("page_url").to_pylist() if "page_url" in table.column_names else [None] * len(uids)
    del table
    width = key_width(config.samples_per_shard)
    candidates = [(f"{shard_id}{i:0{width}d}", uids[i], urls[i] or "", captions[i],
                   {"page_url": page_urls[i]} if page_urls[i] else None) for i in range(len(uids))]
    del uids, urls, captions, page_urls

    worker = _Worker(config, deadline)
    tally = _Tally()
    writer = ShardWriter(pool, shard_id, config.output_format)
    fetched = _fetch_in_order(worker, shard_id, candidates, config.thread_count, deadline)
    try:
        for i, row in enumerate(fetched):
            if row is None:
                key, uid, url, caption, _extra = candidates[i]
                row = SampleRow(key=key, uid=uid, url=url, caption=caption, status="timeout",
                                error_message=f"shard_timeout of {config.shard_timeout}s reached")
            tally.add(row)
            writer.add(row)
        writer.finish()
        kept = earlier_shard_to_keep(pool, shard_id, writer.uids, writer.statuses, config)
        if kept is not None:
            writer.discard()
            return kept
        stats = shard_stats(tally, writer)
        end_wall = time.time()
        # The _stats.json also carries img2dataset's field names, so tools reading those keep working.
        writer.close({
            **stats, "shard": shard_id, "count": stats["samples"], "status_dict": stats["counts"],
            "failed_to_download": stats["samples"] - stats["successes"] - stats["counts"].get("failed_to_resize", 0),
            "failed_to_resize": stats["counts"].get("failed_to_resize", 0),
            "start_time": start_wall, "end_time": end_wall, "duration": round(end_wall - start_wall, 3),
        })
    except BaseException:
        writer.discard()
        raise
    finally:
        fetched.close()  # stops submitting; abandons threads past the deadline
    return stats


def earlier_shard_to_keep(pool: Pool, shard_id: str, uids: list[str], statuses: list[str],
                          config: DownloadConfig) -> dict[str, Any] | None:
    """The stats of the shard already written, when this run's rows (their `uids` and `statuses`,
    in shard order) must not replace it.

    A rerun over a finished shard (its marker deleted, or --rerun) while the image hosts are down
    would otherwise swap good images for failures without a word. The earlier shard is kept when it
    holds the same candidates, in the configured output format, with more successes, unless
    `overwrite_worse` is set or a sample it has was opted out or blocked since. None: write this run's.
    """
    if config.overwrite_worse:
        return None
    parquet_rel, stats_rel = layout.shard_parquet(shard_id), layout.shard_stats(shard_id)
    if not (pool.exists(parquet_rel) and pool.exists(stats_rel)):
        return None
    if config.output_format == "webdataset" and not pool.exists(layout.shard_tar(shard_id)):
        return None
    try:
        earlier = pool.read_json(stats_rel)
        has_images = "jpg" in pool.parquet_schema(parquet_rel).names
        table = pool.read_parquet(parquet_rel, columns=["uid", "status"])
    except (PoolError, OSError, ValueError, pa.ArrowException):
        return None  # unreadable: nothing worth keeping
    if has_images != (config.output_format == "parquet") or not isinstance(earlier, dict):
        return None
    earlier_statuses = table.column("status").to_pylist()
    before = earlier_statuses.count("success")
    now = statuses.count("success")
    if before <= now or table.column("uid").to_pylist() != uids:
        return None
    if any(old == "success" and new in _WITHDRAWN for old, new in zip(earlier_statuses, statuses, strict=True)):
        return None
    kept = {k: earlier[k] for k in ("samples", "counts", "successes", "bytes_stored") if k in earlier}
    if isinstance(earlier.get("errors"), dict):  # possibly written before messages were normalised and capped
        kept["errors"] = normalised(earlier["errors"], ERROR_MESSAGES_PER_SHARD)
    return {**kept, "kept_earlier": {"shards": 1, "successes_kept": before, "successes_this_run": now}}


def shard_stats(tally: _Tally, writer: ShardWriter) -> dict[str, Any]:
    """Counts per status and per error (runner convention: numbers and dicts sum across shards;
    `errors` holds at most ERROR_MESSAGES_PER_SHARD keys and is merged with counters.merge_capped)."""
    return {
        "samples": len(writer.uids),
        "counts": dict(tally.counts),
        "errors": tally.errors.result(),
        "successes": tally.counts.get("success", 0),
        "bytes_stored": writer.bytes_stored,
    }
