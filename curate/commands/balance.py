"""`curate balance`: MetaCLIP balancing of a pool's captions over metadata entries."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import ConfigOpt, PoolOpt, RayAddressOpt, RerunOpt


@app.command("balance")
def balance_command(
    pool: PoolOpt,
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", "-m", help="Metadata entries: a .txt file (one entry a line), a JSON list "
                     "(MetaCLIP's metadata.json), or a folder of LANG.txt / LANG.json files (MetaCLIP 2; "
                     "captions are routed by the lang column of scores/language/). Default: balance.metadata "
                     "of --config."),
    ] = None,
    t: Annotated[
        int | None,
        typer.Option("--t", min=1, help="At most about t samples per entry (MetaCLIP: 20000 for a 400M pool). "
                     "With per-language metadata, t of the reference language. Default 20000."),
    ] = None,
    tail_fraction: Annotated[
        float | None,
        typer.Option("--tail-fraction", help="Instead of --t: choose t so that this share of all matches "
                     "falls on tail entries (c_e < t), per language (MetaCLIP 2's p)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the per-sample draw hash(uid, seed). Default 0.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Output name: balanced/NAME/. Default 'balanced'.")
    ] = None,
    subset: Annotated[
        str | None,
        typer.Option("--subset", help="Balance only this filter subset's uids: subsets/SPEC (or SPEC)."),
    ] = None,
    keep_unmatched: Annotated[
        bool | None,
        typer.Option("--keep-unmatched/--drop-unmatched",
                     help="Keep samples that match no entry (MetaCLIP drops them; default: drop)."),
    ] = None,
    reference_language: Annotated[
        str | None,
        typer.Option("--reference-language", help="Per-language metadata: the language --t applies to "
                     "(default en); other languages get the t with the same tail fraction."),
    ] = None,
    lowercase: Annotated[
        bool | None,
        typer.Option("--lowercase/--case-sensitive", help="Match case-insensitively (MetaCLIP: case-sensitive)."),
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option("--rule", help="Matching rule: metaclip (MetaCLIP's substr_matching), metaclip2 (MetaCLIP "
                     "2's), normalized (curate's: whitespace runs collapsed, entries spaced, full-width "
                     "punctuation spaced), or auto (default: metaclip for one file, metaclip2 for a folder)."),
    ] = None,
    language_map: Annotated[
        list[str] | None,
        typer.Option("--language-map", help="Per-language metadata: CODE=FILE routes language-id code CODE to "
                     "metadata FILE (CODE=N/A: to --other-language); repeatable."),
    ] = None,
    other_language: Annotated[
        str | None,
        typer.Option("--other-language", help="Per-language metadata: the file that captions of languages "
                     "without their own file are matched against (default 'other', if the folder has it)."),
    ] = None,
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Balance a pool's captions over metadata entries, the MetaCLIP way, on Ray.

    Pass 1 matches every successful caption of the download shards (optionally only a subset's)
    against the metadata with MetaCLIP's substring rule (by default exactly MetaCLIP's, or MetaCLIP
    2's for a per-language folder; see --rule), using one Aho-Corasick automaton shared by all
    workers, and counts c_e per entry. Pass 2 keeps a sample with probability 1 − ∏(1 − min(1, t/c_e))
    over its entries, drawing hash(uid, seed), so the result does not depend on sharding or workers.
    Writes balanced/NAME/uids.npy (DataComp format), uids.parquet, entry_counts.parquet,
    samples/<shard>.parquet (uid → entry ids, keep probability) and report.json.
    Finished shards are skipped on a re-run unless metadata, subset, t or seed changed.
    """
    from pydantic import ValidationError

    from curate.config import BalanceConfig, load_pipeline
    from curate.errors import ConfigError
    from curate.pool import Pool
    from curate.stages.balance import run

    section = BalanceConfig()
    if config is not None:
        section = load_pipeline(config).balance or BalanceConfig()
    updates = {
        key: value for key, value in {
            "metadata": metadata, "seed": seed, "name": name, "subset": subset,
            "keep_unmatched": keep_unmatched, "reference_language": reference_language, "lowercase": lowercase,
            "rule": rule, "other_language": other_language,
        }.items() if value is not None
    }
    if language_map:
        pairs = [item.split("=", 1) for item in language_map]
        bad = [item for item, pair in zip(language_map, pairs, strict=True) if len(pair) != 2 or not pair[0]]
        if bad:
            raise ConfigError(f"--language-map {bad[0]!r}: expected CODE=FILE")
        updates["language_map"] = {code: target for code, target in pairs}
    base = section.model_dump()
    if t is not None or tail_fraction is not None:
        # A flag replaces the config's threshold of either kind.
        base.update(t=t, tail_fraction=tail_fraction)
    try:
        section = BalanceConfig.model_validate({**base, **updates})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'balance'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"balance options: {problems}") from exc
    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
