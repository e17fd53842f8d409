"""MetaCLIP balancing: match captions to metadata entries, cap each entry at t samples.

The stage `Balance` (run target `balance/<name>`), entry point `run(pool, config)`: pass "match"
(over download shards) builds the inverted index and the global counts c_e; t is fixed per
language; pass "sample" draws each sample and writes balanced/<name>/samples/<shard>.parquet
(uid → entry ids, keep probability, kept) for online balancing; the driver writes
balanced/<name>/{uids.npy, uids.parquet, entry_counts.parquet, report.json}, the kept uids read
from the samples files. Both passes resume by the runner's rule; each pass's fingerprint holds its
inputs (metadata, rule, subset content; then the entry probabilities, t, seed), so a change
redoes the affected pass only.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout, runner
from curate.config import BalanceConfig
from curate.errors import ConfigError, PoolError
from curate.names import check_name
from curate.pool import Pool
from curate.population import MANIFEST_REL, is_metadata_part, manifest, population_ids
from curate.stage import Pass, PassResult, Stage, StageContext, fingerprint_of
from curate.stages.balance.matching import Rule, SharedMatcher, build_matcher
from curate.stages.balance.metadata import ALL_LANGUAGES, Metadata, load_metadata
from curate.stages.balance.passes import MatchSettings, SampleSettings, match_shard, sample_shard
from curate.stages.balance.sampling import entry_probabilities, p_to_t, t_to_p
from curate.uid import check_uids, uids_to_npy_array

DEFAULT_T = 20_000
HEAD_ENTRIES_IN_REPORT = 25

STAGE = "balance"

__all__ = ["DEFAULT_T", "STAGE", "Balance", "run"]


def _subset_uids(pool: Pool, subset: str | None) -> tuple[pa.Array | None, str]:
    if not subset:
        return None, ""
    name = check_name(subset.rstrip("/").removeprefix(f"{layout.SUBSETS}/"), "balance: subset")
    rel, path = layout.subset_dir(name), layout.subset_uids(name)
    if not pool.exists(path):
        raise PoolError(f"subset not found: {pool.uri(path)} (run `curate filter` first)")
    uids = pool.read_parquet(path, ["uid"])["uid"].combine_chunks()
    check_uids(uids, pool.uri(path))
    # The subset's content (not its file's bytes or time) decides whether pass 1 must run again.
    ordered = pc.take(uids, pc.sort_indices(uids))
    h = hashlib.blake2b(digest_size=16)
    for buf in ordered.buffers()[1:]:
        h.update(memoryview(buf))
    return uids, f"{rel}:{h.hexdigest()}"


def resolve_rule(rule: str, meta: Metadata) -> Rule:
    """"auto": MetaCLIP's rule for one metadata file, MetaCLIP 2's for a per-language folder."""
    if rule == "auto":
        return "metaclip2" if meta.per_language else "metaclip"
    return rule  # type: ignore[return-value]


def _thresholds(meta: Metadata, first_ids: dict[str, int], counts: np.ndarray, cfg: BalanceConfig) -> dict[str, dict]:
    """t (and its tail fraction) per metadata language."""
    spans = {lang: (first_ids[lang], first_ids[lang] + len(entries)) for lang, entries in meta.entries.items()}

    def lang_counts(lang: str) -> np.ndarray:
        lo, hi = spans[lang]
        return counts[lo:hi]

    out: dict[str, dict] = {}
    if not meta.per_language:
        c = lang_counts(ALL_LANGUAGES)
        if cfg.tail_fraction is not None:
            t, how = p_to_t(cfg.tail_fraction, c), "from tail_fraction"
        else:
            t, how = cfg.t or DEFAULT_T, "given" if cfg.t else "default"
        out[ALL_LANGUAGES] = {"t": int(t), "tail_fraction": t_to_p(t, c), "how": how}
        return out
    ref = cfg.reference_language
    if cfg.tail_fraction is not None:
        p = cfg.tail_fraction
    else:
        if ref not in meta.entries:
            raise ConfigError(f"t is set for the reference language {ref!r}, but {meta.source} has no "
                              f"{ref}.txt/{ref}.json; give a tail fraction or another reference_language")
        p = t_to_p(cfg.t or DEFAULT_T, lang_counts(ref))
    for lang in meta.entries:
        c = lang_counts(lang)
        if lang == ref and cfg.tail_fraction is None:
            t, how = cfg.t or DEFAULT_T, "given"
        else:
            t, how = p_to_t(p, c), f"same tail fraction as {ref}" if cfg.tail_fraction is None else "from tail_fraction"
        out[lang] = {"t": int(t), "tail_fraction": t_to_p(t, c), "target_tail_fraction": p, "how": how}
    return out


def _check_inputs(pool: Pool, meta: Metadata, cfg: BalanceConfig, shards: list[str]) -> None:
    """Fail before any work on what would otherwise fail in every shard or after pass 1."""
    if not meta.per_language:
        return
    ref = cfg.reference_language
    if cfg.tail_fraction is None and ref not in meta.entries:
        raise ConfigError(f"t is set for the reference language {ref!r}, but {meta.source} has no "
                          f"{ref}.txt/{ref}.json; give a tail fraction or another reference_language")
    imported = manifest(pool)
    if imported is not None and "lang" not in imported["columns"]:
        raise PoolError(f"{pool.uri(MANIFEST_REL)}: per-language metadata routes captions by a lang column, "
                        "and this metadata pool has none; import it with `curate import --language`")
    have = {n.removesuffix(".parquet") for n in pool.listdir(layout.scores_dir(cfg.language_scorer))}
    # An imported metadata pool carries `lang` in its own rows (curate import --language).
    missing = [s for s in shards if s not in have and not is_metadata_part(s)]
    if missing:
        raise PoolError(f"per-language metadata routes captions by scores/{cfg.language_scorer}/<shard>.parquet "
                        f"(lang column), missing for {len(missing)} shard(s), e.g. {missing[0]}; "
                        f"run the '{cfg.language_scorer}' scorer first")


def _sum_sparse(pool: Pool, rels: list[str], columns: list[str], size: int) -> dict[str, np.ndarray]:
    totals = {c: np.zeros(size, np.float64) for c in columns}
    for rel in rels:
        part = pool.read_parquet(rel)
        ids = part["entry_id"].to_numpy()
        for c in columns:
            np.add.at(totals[c], ids, part[c].to_numpy())
    return totals


class Balance(Stage):
    """Two passes over the pool's shards, `match` then `sample`; the driver fixes t between them and
    merges the kept uids and entry statistics after."""

    name = STAGE
    config_class = BalanceConfig
    # Captions come from shards/ or, on an imported pool, metadata/ (the population); per-language
    # metadata routes them by scores/<language_scorer>/ (checked before any work: _check_inputs).
    reads = ("population", "scores", "subsets")
    writes = ("balanced",)

    def key(self, config: BalanceConfig) -> str:
        return layout.stage_key(self.name, config.name)

    def requires(self, config: BalanceConfig) -> tuple[str, ...]:
        return ("population", "subsets") if config.subset else ("population",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config: BalanceConfig = ctx.config
        pool = ctx.pool
        if not config.metadata:
            raise ConfigError("balance needs metadata (--metadata FILE|DIR or balance.metadata in the config)")
        shards = population_ids(pool)
        if not shards:
            raise PoolError(f"{pool.url}: no finished download shards (run `curate download` first)")
        name = config.name

        meta = load_metadata(config.metadata)
        _check_inputs(pool, meta, config, shards)
        unspaced = tuple(config.unspaced_languages)
        rule = resolve_rule(config.rule, meta)
        build_start = time.time()
        matcher, first_ids = build_matcher(meta.entries, unspaced_languages=unspaced, lowercase=config.lowercase,
                                           rule=rule)
        build_seconds = time.time() - build_start
        ctx.say(f"{meta.total:,} entries in {len(meta.entries)} language(s) from {meta.source}; "
                f"automaton built in {build_seconds:.1f}s")
        subset_uids, subset_key = _subset_uids(pool, config.subset)
        routing = (config.language_scorer, config.language_map, config.other_language) if meta.per_language else None
        # What a shard's matches depend on besides the shard.
        match_fp = [meta.fingerprint(), rule, unspaced if rule == "normalized" else None, config.lowercase,
                    subset_key, routing]

        use_ray = os.environ.get("CURATE_EXECUTOR") != "local"
        if use_ray:  # the matcher is put in the object store once, before the tasks that read it
            from curate.runtime import ensure_ray

            ensure_ray(ctx.ray_address)
        match_settings = MatchSettings(SharedMatcher(matcher, fingerprint_of(match_fp), use_ray), name,
                                       meta.per_language, config.language_scorer, subset_uids,
                                       dict(config.language_map), config.other_language)
        matched = ctx.run_pass(Pass(
            "match", match_shard, {s: None for s in shards}, match_settings, fingerprint=match_fp,
            outputs=lambda sid, _p, _s: [layout.balanced_matches(name, sid), layout.balanced_counts(name, sid)],
        ))

        n_entries = meta.total
        counts = _sum_sparse(pool, [layout.balanced_counts(name, s) for s in shards], ["count"],
                             n_entries)["count"].astype(np.int64)
        thresholds = _thresholds(meta, first_ids, counts, config)
        t_per_entry = np.empty(n_entries, np.float64)
        entry_lang = np.empty(n_entries, object)
        for lang, entries in meta.entries.items():
            lo = first_ids[lang]
            t_per_entry[lo : lo + len(entries)] = thresholds[lang]["t"]
            entry_lang[lo : lo + len(entries)] = lang
        q = entry_probabilities(counts, t_per_entry)

        # A shard's draws depend on its matches and on q, which the global counts (every shard's
        # matches) and t set: a shard added to the pool changes q, so q itself is fingerprinted.
        q_digest = hashlib.blake2b(np.ascontiguousarray(q, np.float64).tobytes(), digest_size=16).hexdigest()
        sample_fp = [match_fp, {k: v["t"] for k, v in thresholds.items()}, q_digest, config.seed,
                     config.keep_unmatched]
        sample_settings = SampleSettings(q, config.seed, config.keep_unmatched, name)
        sampled = ctx.run_pass(Pass(
            "sample", sample_shard, {s: None for s in shards}, sample_settings, fingerprint=sample_fp,
            outputs=lambda sid, _p, _s: [layout.balanced_samples(name, sid), layout.balanced_entry_stats(name, sid)],
        ))

        # Only this run's shards: a pool whose shard list changed may hold stale samples files.
        current = {f"{s}.parquet" for s in shards}
        for file in pool.listdir(layout.balanced_samples_dir(name)):
            if file not in current:
                pool.remove(posixpath.join(layout.balanced_samples_dir(name), file))
        kept = _kept_uids(pool, name, shards)
        pool.write_parquet(layout.balanced_uids(name), pa.table({"uid": kept}))
        buf = io.BytesIO()
        np.save(buf, uids_to_npy_array(kept))
        pool.write_bytes(layout.balanced_npy(name), buf.getvalue())

        after = _sum_sparse(pool, [layout.balanced_entry_stats(name, s) for s in shards], ["expected", "actual"],
                            n_entries)
        all_entries = [e for entries in meta.entries.values() for e in entries]
        entry_table = pa.table({
            "entry_id": pa.array(np.arange(n_entries), pa.int32()),
            "language": pa.array(entry_lang.tolist(), pa.string()),
            "entry": pa.array(all_entries, pa.string()),
            "count": pa.array(counts, pa.int64()),
            "t": pa.array(t_per_entry.astype(np.int64), pa.int64()),
            "entry_probability": pa.array(q, pa.float64()),
            "expected_after": pa.array(after["expected"], pa.float64()),
            "actual_after": pa.array(after["actual"].astype(np.int64), pa.int64()),
        })
        pool.write_parquet(layout.balanced_entry_counts(name), entry_table)

        report = _report(config, meta, thresholds, counts, t_per_entry, after, all_entries, entry_lang,
                         matched, sampled, len(kept), build_seconds, time.time() - ctx.started, shards)
        pool.write_json(layout.balanced_report(name), report)
        ts = ", ".join(f"{k}: t={v['t']:,}" for k, v in thresholds.items())
        ctx.say(f"kept {len(kept):,} of {report['samples_considered']:,} captions (expected "
                f"{report['expected_kept']:,.1f}); {ts}; wrote {pool.uri(layout.balanced_dir(name))}")
        return report


def _kept_uids(pool: Pool, name: str, shards: list[str]) -> pa.Array:
    """The kept uids of every shard, sorted: the samples files' `kept` rows (nothing else keeps them)."""
    parts = []
    for sid in shards:
        table = pool.read_parquet(layout.balanced_samples(name, sid), ["uid", "kept"])
        parts.append(table.filter(pc.fill_null(table["kept"], False))["uid"].combine_chunks())
    kept = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
    return pc.take(kept, pc.sort_indices(kept))


def run(
    pool: Pool,
    config: BalanceConfig,
    *,
    ray_address: str | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Balance the pool's captions over the metadata; returns reports/balance/<name>.json's content
    (the runner's fields and balance's report, also written to balanced/<name>/report.json)."""
    return runner.run(Balance(), pool, config, ray_address=ray_address, rerun=rerun, quiet=quiet)


def _report(cfg: BalanceConfig, meta: Metadata, thresholds: dict, counts: np.ndarray, t_per_entry: np.ndarray,
            after: dict[str, np.ndarray], entries: list[str], entry_lang: np.ndarray, matched: PassResult,
            sampled: PassResult, kept: int, build_seconds: float, seconds: float, shards: list[str]) -> dict:
    head = counts >= t_per_entry
    order = np.argsort(-counts, kind="stable")[:HEAD_ENTRIES_IN_REPORT]
    tail_matched = np.flatnonzero((counts > 0) & ~head)
    tail_examples = tail_matched[np.argsort(-counts[tail_matched], kind="stable")][:HEAD_ENTRIES_IN_REPORT]

    def row(i: int) -> dict:
        return {"entry": entries[i], "language": entry_lang[i], "count": int(counts[i]),
                "expected_after": round(float(after["expected"][i]), 3), "actual_after": int(after["actual"][i])}

    match_totals = matched.totals
    sample_totals = sampled.totals
    return {
        "name": cfg.name,
        "metadata": meta.source,
        "rule": resolve_rule(cfg.rule, meta),
        "entries": {lang: len(e) for lang, e in meta.entries.items()},
        "blank_entries_skipped": meta.blank_lines_skipped,
        "per_language": meta.per_language,
        "thresholds": thresholds,
        "seed": cfg.seed,
        "subset": cfg.subset,
        "keep_unmatched": cfg.keep_unmatched,
        "shards": len(shards),
        "samples_in_shards": match_totals.get("samples", 0),
        "samples_considered": sample_totals.get("samples", 0),
        "match_counts": match_totals.get("counts", {}),
        "sample_counts": sample_totals.get("counts", {}),
        "expected_kept": round(float(sample_totals.get("expected_kept", 0.0)), 3),
        "actual_kept": kept,
        "head_entries": int(head.sum()),
        "tail_entries_matched": int(tail_matched.size),
        "entries_never_matched": int((counts == 0).sum()),
        "top_head_entries": [row(int(i)) for i in order if counts[i] > 0],
        "top_tail_entries": [row(int(i)) for i in tail_examples],
        "automaton_build_seconds": round(build_seconds, 3),
        "wall_seconds": round(seconds, 3),
    }
