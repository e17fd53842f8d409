"""`curate export`: write a subset's samples as webdataset shards + Parquet metadata for training."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import ConfigOpt, PoolOpt, RayAddressOpt, RerunOpt, from_options
from curate.config import ExportConfig, load_pipeline
from curate.pool import Pool


@app.command("export")
def export_command(
    pool: PoolOpt,
    subset: Annotated[
        str | None,
        typer.Option(
            "--subset", "-s",
            help="What to export: a filter subset name (subsets/NAME), a balanced set (balanced/NAME), a pool-"
            "relative directory, or a path/URL of a uids.parquet (column uid) or DataComp uids.npy. "
            "Default: export.subset from --config.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Output directory exports/NAME/ (default: the subset's name).")
    ] = None,
    samples_per_shard: Annotated[
        int | None, typer.Option("--samples-per-shard", min=1, help="Samples per output tar (default 10000).")
    ] = None,
    shuffle_buffer: Annotated[
        int | None,
        typer.Option("--shuffle-buffer", min=0,
                     help="Shuffle within each task through a buffer of this many samples (0: keep order)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the shuffle buffer (default 0).")] = None,
    with_images_parquet: Annotated[
        bool | None,
        typer.Option("--with-images-parquet/--no-images-parquet",
                     help="Also write exports/NAME/images/*.parquet holding the image bytes."),
    ] = None,
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Export a subset for trainers: webdataset shards exports/NAME/NNNNNNNN.tar ({key}.jpg, .txt, .json;
    key = {uid}-{j}, a uid listed k times is written k times) and exports/NAME/metadata/*.parquet with every
    score column. Uids missing from the download shards are counted by reason, not an error. Resumable:
    finished input shards are skipped; --rerun replaces the export.

    The shards load in OpenCLIP with --dataset-type webdataset --train-data 'exports/NAME/{00000000..N}.tar'.
    """
    section = ExportConfig()
    if config is not None:
        section = load_pipeline(config).export or section
    overrides = {"subset": subset, "name": name, "samples_per_shard": samples_per_shard,
                 "shuffle_buffer": shuffle_buffer, "seed": seed, "with_images_parquet": with_images_parquet}
    given = {k: v for k, v in overrides.items() if v is not None}
    section = from_options(ExportConfig, {**section.model_dump(), **given}, "export options")
    from curate.stages.export import run

    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
