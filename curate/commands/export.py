"""`curate export`: write a subset's samples as webdataset shards + Parquet metadata for training."""

from __future__ import annotations

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt
from curate.commands.options import section_options
from curate.config import ExportConfig
from curate.pool import Pool


@app.command("export")
@section_options(ExportConfig, "export", aliases={"subset": ("-s",)},
                 off={"with_images_parquet": "--no-images-parquet"})
def export_command(
    section: ExportConfig,
    pool: PoolOpt,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Export a subset for trainers: webdataset shards exports/NAME/NNNNNNNN.tar ({key}.jpg, .txt, .json;
    key = {uid}-{j}, a uid listed k times is written k times) and exports/NAME/metadata/*.parquet with every
    score column. Uids missing from the download shards are counted by reason, not an error. Resumable:
    finished input shards are skipped; --rerun replaces the export.

    The shards load in OpenCLIP with --dataset-type webdataset --train-data 'exports/NAME/{00000000..N}.tar'.
    """
    from curate.stages.export import run

    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
