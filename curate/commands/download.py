"""`curate download`: fetch candidate images into shards (img2dataset webdataset layout), safely."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt
from curate.commands.options import section_options
from curate.config import DownloadConfig


@app.command("download")
@section_options(DownloadConfig, "download", aliases={"allow_addresses": ("--allow-address",)})
def download_command(
    section: DownloadConfig,
    pool: PoolOpt,
    subset: Annotated[
        str | None,
        typer.Option("--subset", help="Metadata pools (curate import): download only the uids of "
                     "subsets/NAME/ (written by curate filter); candidates/ is cut from them."),
    ] = None,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
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
    from curate.pool import Pool
    from curate.stages.download import run

    if subset is not None:
        from curate.stages.metaimport import subset_candidates

        subset_candidates(Pool(pool), subset, rerun=rerun)
    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
