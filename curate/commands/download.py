"""`curate download`: fetch candidate images into shards (img2dataset webdataset layout), safely."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from curate.cli import app
from curate.commands.common import ConfigOpt, PoolOpt, RayAddressOpt, RerunOpt


@app.command("download")
def download_command(
    pool: PoolOpt,
    config: ConfigOpt = None,
    allow_address: Annotated[
        list[str] | None,
        typer.Option("--allow-address", help="Address or CIDR network that may be fetched even though it is "
                     "loopback/private/link-local (repeatable; e.g. 127.0.0.1 for a local test server). Added to "
                     "download.allow_addresses of --config."),
    ] = None,
    samples_per_shard: Annotated[
        int | None, typer.Option("--samples-per-shard", min=1, help="Candidates per shard (default 10000).")
    ] = None,
    thread_count: Annotated[
        int | None, typer.Option("--thread-count", min=1, help="Concurrent fetches per shard task (default 64).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=1, help="Target image side in pixels (default 512).")
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option("--output-format", help="webdataset (tar + parquet, default) or parquet (image bytes in "
                     "the parquet's jpg column)."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, max=86_400, help="Hard seconds per request (default 10).")
    ] = None,
    subset: Annotated[
        str | None,
        typer.Option("--subset", help="Metadata pools (curate import): download only the uids of "
                     "subsets/NAME/ (written by curate filter); candidates/ is cut from them."),
    ] = None,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
    overwrite_worse: Annotated[
        bool, typer.Option("--overwrite-worse", help="Let a rerun replace a finished shard even when the new "
                           "one holds fewer successful images (default: keep the earlier shard and say so).")
    ] = False,
) -> None:
    """Download the images of candidates/*.parquet into shards/.

    Candidates are cut into shards of --samples-per-shard rows (IDs 00000000, 00000001, …) that
    run as Ray tasks, each fetching with --thread-count threads. Every candidate gets one row in
    shards/ID.parquet with its status: success, failed_to_download, failed_to_resize,
    blocked_address (URL names or resolves to a loopback/private/link-local/reserved address, or is
    not http/https), opted_out (X-Robots-Tag noai/noimageai/noindex/noimageindex) or timeout (the
    shard's time ran out). Successful images are resized (DataComp defaults: 512 px,
    keep_ratio_largest, only if bigger, jpg) and stored in shards/ID.tar with their caption and
    metadata. Settings come from the `download:` section of --config; the flags override it.

    A rerun skips finished shards and completes only the missing ones. A shard done again (its
    marker deleted, or --rerun) that would hold fewer successful images than the one already
    written keeps the earlier shard and says so, unless --overwrite-worse. Exit status is non-zero
    when a shard failed. With --subset NAME on a pool made by `curate import`, candidates/ is first
    cut from the metadata rows of subsets/NAME/, so only that subset is fetched. See docs/download.md.
    """
    from curate.config import DownloadConfig, load_pipeline
    from curate.errors import ConfigError
    from curate.pool import Pool
    from curate.stages.download import run

    section = DownloadConfig()
    if config is not None:
        section = load_pipeline(config).download or section
    overrides: dict[str, Any] = {
        "samples_per_shard": samples_per_shard, "thread_count": thread_count, "image_size": image_size,
        "output_format": output_format, "timeout": timeout, "overwrite_worse": overwrite_worse or None,
    }
    updates = {k: v for k, v in overrides.items() if v is not None}
    if updates:
        try:
            section = DownloadConfig.model_validate({**section.model_dump(), **updates})
        except ValueError as exc:
            raise ConfigError(f"curate download: {exc}") from exc
    if subset is not None:
        from curate.stages.metaimport import subset_candidates

        subset_candidates(Pool(pool), subset, rerun=rerun)
    run(Pool(pool), section, ray_address=ray_address, rerun=rerun, allow_addresses=list(allow_address or []))
