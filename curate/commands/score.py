"""`curate score`: run the configured scorers over every download shard."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt, from_options
from curate.commands.options import section_options
from curate.config import ScoreConfig
from curate.errors import ConfigError


@app.command("score")
@section_options(ScoreConfig, "score")
def score_command(
    section: ScoreConfig,
    pool: PoolOpt,
    scorer: Annotated[
        list[str] | None,
        typer.Option("--scorer", help="Add a scorer that needs no settings, by type: text_stats, image_stats or "
                     "language (repeatable). Used alone, or added to the scorers of --config."),
    ] = None,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Score every finished download shard with the scorers of the `score:` section of --config.

    Scorers (docs/score.md): clip (clip_NAME_similarity_score from an open_clip model, hf-hub: id or
    local directory, e.g. a DFN; optional float16 embeddings in embeddings/NAME/), nsfw
    (nsfw_image_score from a CLIP embedding, nsfw_text_score from a word list), language (lang,
    lang_score with fastText lid.176), text_stats (caption_num_words, caption_num_chars) and
    image_stats (width, height, original sizes, aspect_ratio, 64-bit phash).

    Images are decoded once per sample on CPU tasks for all scorers; models run in Ray Data actor
    pools (on GPUs where the cluster has them). Writes scores/SCORER/SHARD.parquet with one row
    per successful download sample, and the runner's marker _done/score/score/SHARD.json with
    counts of images that could not be scored, by reason. A rerun skips finished shards; a changed
    scorer set or scorer config re-scores them (docs/score.md). Models load offline from the
    Hugging Face cache or a path; a missing model is an error that says what to download. Exit
    status is non-zero when a shard failed.
    """
    from curate.pool import Pool
    from curate.stages.score import run

    if scorer:
        data = section.model_dump()
        data["scorers"] = [*data["scorers"], *({"type": t} for t in scorer)]
        section = from_options(ScoreConfig, data, "score options")
    if not section.scorers:
        raise ConfigError("curate score: no scorers: give --config with a `score: scorers:` list, or --scorer TYPE")
    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
