"""`curate ingest`: Common Crawl WAT/WARC files → candidates/*.parquet in a pool."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt, from_options
from curate.commands.options import section_options
from curate.config import IngestConfig
from curate.errors import ConfigError
from curate.pool import Pool
from curate.progress import console


@app.command("ingest")
@section_options(IngestConfig, "ingest", off={"keep_empty_captions": "--drop-empty-captions"},
                 skip={"inputs": "INPUT arguments of `curate ingest` are added to it"})
def ingest_command(
    section: IngestConfig,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="WAT/WARC files (.warc.wat.gz, .warc.gz; WET is accepted and counted as having no images), "
            "globs ('cc/*.wat.gz'), http(s):// or s3:// URLs, or a crawl id such as CC-MAIN-2024-22. "
            "Added to the inputs of the config's ingest section.",
            show_default=False,
        ),
    ] = None,
    pool: PoolOpt = ...,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Extract image-text candidates from Common Crawl files into POOL/candidates/.

    Each input file is one shard and becomes candidates/part-NNNNN.parquet (numbered by the
    sorted input list) with columns uid, url, text, page_url, source, crawl, page_lang, alt_kind.
    From WAT files it reads HTML-Metadata links with path IMG@/src (alt, else title); from WARC
    files it parses HTML responses and reads the src, alt and title of
    each img element, honouring the page's base href. URLs are
    resolved against the page, only http(s) is kept, data: URIs dropped, captions unescaped,
    whitespace-collapsed and capped, empty captions dropped, exact (url, text) repeats removed.
    Damaged records (truncated gzip, garbage, bad JSON, non-UTF-8) are skipped and counted; a
    file that cannot be opened is a failed shard and the command exits non-zero. Finished files
    are skipped when the command is run again. See docs/ingest.md.
    """
    if inputs:
        section = from_options(IngestConfig, {**section.model_dump(), "inputs": [*section.inputs, *inputs]},
                               "ingest options")
    if not section.inputs:
        raise ConfigError("ingest: give INPUT files/URLs/crawl ids, or inputs: in the config's ingest section")

    from curate.stages.ingest import run

    target = Pool(pool)
    report = run(target, section, ray_address=ray_address, rerun=rerun)
    totals = report.get("totals", {})
    console.print(
        f"ingest: {totals.get('candidates', 0)} candidates from {totals.get('samples', 0)} image links in "
        f"{report.get('shards_done', 0)} file(s); written to {target.uri('candidates')}"
    )
