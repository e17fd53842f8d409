"""Every location inside a pool, in one place: the on-disk contract between stages.

Stages, readers and tests name pool files only through these functions, so the layout in
docs/architecture.md is this module and nothing else. Paths are pool-relative (`Pool.path` and
`Pool.uri` make them absolute); names that come from configs are checked where they enter
(curate/names.py) and again by `Pool.path`.

    pipeline.yaml                               the resolved config of `curate run`
    candidates/part-<input>.parquet             ingest
    metadata/<part>.parquet, metadata/_import.json   import (DataComp/LAION metadata rows)
    shards/<shard>.tar|.parquet|_stats.json     download (img2dataset's webdataset layout)
    scores/<scorer>/<shard>.parquet             score: uid + the scorer's columns
    embeddings/<scorer>/<shard>.parquet         score: uid + float16 vectors
    dedup/<method>.parquet, dedup/_work/        dedup
    subsets/<name>/...                          filter
    balanced/<name>/...                         balance
    exports/<name>/...                          export
    evals/<name>/results.json, runs/, data/     eval (proxy training per arm and seed)
    train_dfn/                                  train_dfn (its model directory is configured)
    _done/<stage>[/<name>]/<pass>/<shard>.json  completion markers (the runner's)
    _locks/<stage>.json                         one writer per stage
    reports/<stage>.json, reports/index.html    reports
"""

from __future__ import annotations

import posixpath

PIPELINE_FILE = "pipeline.yaml"

CANDIDATES = "candidates"
METADATA = "metadata"
SHARDS = "shards"
SCORES = "scores"
EMBEDDINGS = "embeddings"
DEDUP = "dedup"
SUBSETS = "subsets"
BALANCED = "balanced"
EXPORTS = "exports"
EVALS = "evals"
DONE = "_done"
LOCKS = "_locks"
REPORTS = "reports"

# Pool tables a stage declares it reads or writes (curate.stage.Stage.reads/writes); `curate run`
# checks the chain with them before any work. Each names one family of paths above.
TABLES: dict[str, str] = {
    "candidates": f"{CANDIDATES}/part-*.parquet",
    "metadata": f"{METADATA}/*.parquet",
    "shards": f"{SHARDS}/<shard>.tar|.parquet",
    # The rows filter and balance read: download shards, or imported metadata rows.
    "population": f"{SHARDS}/<shard>.parquet or {METADATA}/*.parquet",
    "scores": f"{SCORES}/<scorer>/<shard>.parquet",
    "embeddings": f"{EMBEDDINGS}/<scorer>/<shard>.parquet",
    "dedup": f"{DEDUP}/<method>.parquet",
    "subsets": f"{SUBSETS}/<name>/uids.parquet",
    "balanced": f"{BALANCED}/<name>/uids.parquet",
    "exports": f"{EXPORTS}/<name>/",
    "dfn_model": "<train_dfn output_dir>/model",
    "report": f"{REPORTS}/index.html",
    "evals": f"{EVALS}/<name>/results.json",
}


# ---------------------------------------------------------------- ingest and import
def candidates_file(shard_id: str) -> str:
    return f"{CANDIDATES}/part-{shard_id}.parquet"


def metadata_part(part_id: str) -> str:
    return f"{METADATA}/{part_id}.parquet"


IMPORT_MANIFEST = f"{METADATA}/_import.json"


# ---------------------------------------------------------------- download shards
def shard_tar(shard_id: str) -> str:
    return f"{SHARDS}/{shard_id}.tar"


def shard_parquet(shard_id: str) -> str:
    return f"{SHARDS}/{shard_id}.parquet"


def shard_stats(shard_id: str) -> str:
    return f"{SHARDS}/{shard_id}_stats.json"


DOWNLOAD_PLAN = f"{SHARDS}/_plan.json"


# ---------------------------------------------------------------- scores and embeddings
def scores_dir(scorer: str) -> str:
    return f"{SCORES}/{scorer}"


def scores_file(scorer: str, shard_id: str) -> str:
    return f"{SCORES}/{scorer}/{shard_id}.parquet"


def embeddings_dir(scorer: str) -> str:
    return f"{EMBEDDINGS}/{scorer}"


def embeddings_file(scorer: str, shard_id: str) -> str:
    return f"{EMBEDDINGS}/{scorer}/{shard_id}.parquet"


def shard_table(table_dir: str, shard_id: str) -> str:
    """One shard's table in a per-shard directory (scores_dir or embeddings_dir)."""
    return f"{table_dir}/{shard_id}.parquet"


# ---------------------------------------------------------------- dedup
DEDUP_WORK = f"{DEDUP}/_work"


def dedup_table(method: str) -> str:
    return f"{DEDUP}/{method}.parquet"


def dedup_work(method: str, run: str | None = None) -> str:
    """A method's intermediates; `run` (the fingerprint of its config and inputs) keeps those made
    from two configurations apart, so a resume never mixes them."""
    return f"{DEDUP_WORK}/{method}/{run}" if run else f"{DEDUP_WORK}/{method}"


def dedup_centroids(work: str) -> str:
    return f"{work}/centroids.npy"


def dedup_parts(work: str) -> str:
    return f"{work}/parts"


def dedup_part(work: str, bucket: str, shard_id: str) -> str:
    return f"{work}/parts/{bucket}/{shard_id}.parquet"


def dedup_result(work: str, part: str) -> str:
    return f"{work}/result/{part}.parquet"


# ---------------------------------------------------------------- filter subsets
def subset_dir(name: str) -> str:
    return f"{SUBSETS}/{name}"


def subset_uids(name: str) -> str:
    return f"{SUBSETS}/{name}/uids.parquet"


def subset_npy(name: str) -> str:
    return f"{SUBSETS}/{name}/uids.npy"


def subset_funnel(name: str) -> str:
    return f"{SUBSETS}/{name}/funnel.json"


def subset_spec(name: str) -> str:
    return f"{SUBSETS}/{name}/spec.json"


def subset_parts(name: str) -> str:
    return f"{SUBSETS}/{name}/parts"


def subset_part(name: str, shard_id: str) -> str:
    return f"{SUBSETS}/{name}/parts/{shard_id}.parquet"


def subset_file(name: str, rel: str) -> str:
    """A resource a subset's spec trained or read (centroids, reference embeddings)."""
    return f"{SUBSETS}/{name}/{rel}"


# ---------------------------------------------------------------- balance
def balanced_dir(name: str) -> str:
    return f"{BALANCED}/{name}"


def balanced_uids(name: str) -> str:
    return f"{BALANCED}/{name}/uids.parquet"


def balanced_npy(name: str) -> str:
    return f"{BALANCED}/{name}/uids.npy"


def balanced_entry_counts(name: str) -> str:
    return f"{BALANCED}/{name}/entry_counts.parquet"


def balanced_report(name: str) -> str:
    return f"{BALANCED}/{name}/report.json"


def balanced_samples_dir(name: str) -> str:
    return f"{BALANCED}/{name}/samples"


def balanced_samples(name: str, shard_id: str) -> str:
    return f"{BALANCED}/{name}/samples/{shard_id}.parquet"


def balanced_work(name: str) -> str:
    return f"{BALANCED}/{name}/_work"


def balanced_matches(name: str, shard_id: str) -> str:
    """Pass match's per-shard inverted index (uid → entry ids), read by pass sample."""
    return f"{BALANCED}/{name}/_work/matches/{shard_id}.parquet"


def balanced_counts(name: str, shard_id: str) -> str:
    """Pass match's sparse per-shard entry counts, summed into c_e by the driver."""
    return f"{BALANCED}/{name}/_work/counts/{shard_id}.parquet"


def balanced_entry_stats(name: str, shard_id: str) -> str:
    """Pass sample's sparse per-shard expected and actual counts per entry."""
    return f"{BALANCED}/{name}/_work/entry_stats/{shard_id}.parquet"


# ---------------------------------------------------------------- export
def export_dir(name: str) -> str:
    return f"{EXPORTS}/{name}"


def export_report(name: str) -> str:
    return f"{EXPORTS}/{name}/report.json"


def export_tar(name: str, shard: str) -> str:
    return f"{EXPORTS}/{name}/{shard}.tar"


def export_metadata(name: str, shard: str) -> str:
    return f"{EXPORTS}/{name}/metadata/{shard}.parquet"


def export_images(name: str, shard: str) -> str:
    return f"{EXPORTS}/{name}/images/{shard}.parquet"


# ---------------------------------------------------------------- eval
def eval_dir(name: str) -> str:
    return f"{EVALS}/{name}"


def eval_results(name: str) -> str:
    return f"{EVALS}/{name}/results.json"


def eval_arm_data(name: str, arm: str) -> str:
    """The samples one arm trains on (uid, caption, image bytes), as one Parquet file."""
    return f"{EVALS}/{name}/data/{arm}.parquet"


def eval_run_dir(name: str, arm: str, seed: int) -> str:
    """One training run: checkpoints/, model/, train_summary.json, metrics.json."""
    return f"{EVALS}/{name}/runs/{arm}/seed-{seed}"


def eval_run_metrics(name: str, arm: str, seed: int) -> str:
    return f"{eval_run_dir(name, arm, seed)}/metrics.json"


def eval_run_hits(name: str, arm: str, seed: int) -> str:
    """Per-example hits of one run (the paired bootstrap resamples them), as .npz."""
    return f"{eval_run_dir(name, arm, seed)}/hits.npz"


# ---------------------------------------------------------------- runner bookkeeping
def stage_key(stage: str, name: str | None = None) -> str:
    """The id of one run target of a stage: `filter/<subset>`, `balance/<name>`, or just `download`."""
    return f"{stage}/{name}" if name else stage


def markers_dir(key: str, pass_name: str) -> str:
    return f"{DONE}/{key}/{pass_name}"


def marker(key: str, pass_name: str, shard_id: str) -> str:
    return f"{DONE}/{key}/{pass_name}/{shard_id}.json"


def stage_markers(key: str) -> str:
    return f"{DONE}/{key}"


def lock(stage: str) -> str:
    return f"{LOCKS}/{stage}.json"


def report(key: str) -> str:
    return f"{REPORTS}/{key}.json"


STATS_JSON = f"{REPORTS}/stats.json"
STATS_HTML = f"{REPORTS}/index.html"
PLANTED_JSON = f"{REPORTS}/planted.json"


def parent(rel: str) -> str:
    return posixpath.dirname(rel)


# Later stages list finished download shards by these markers (the download stage's one pass).
DOWNLOAD_STAGE = "download"
DOWNLOAD_PASS = "fetch"
DOWNLOAD_MARKERS = markers_dir(DOWNLOAD_STAGE, DOWNLOAD_PASS)


def download_marker(shard_id: str) -> str:
    return marker(DOWNLOAD_STAGE, DOWNLOAD_PASS, shard_id)


# The score stage's one pass; benchmarks and tests read its markers (finished_at, samples).
SCORE_STAGE = "score"
SCORE_PASS = "score"
SCORE_MARKERS = markers_dir(SCORE_STAGE, SCORE_PASS)


def score_marker(shard_id: str) -> str:
    return marker(SCORE_STAGE, SCORE_PASS, shard_id)
