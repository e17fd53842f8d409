"""The arms of an evaluation: what each one trains on, drawn from one pool's downloaded samples.

The pool's successful samples are read once into an Arrow table of encoded images (uid, caption,
image); an arm is a list of row indices into it. A curated arm is a subset, balanced set or
export of the pool; its random control is a uniformly random sample of the same pool of exactly
the arm's size, drawn anew for every training seed (so the interval covers the luck of the draw
as well as the luck of training); the pool arm is every row. Each arm is written as one Parquet
file that the training loop reads like any other train-dfn data source.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.errors import ConfigError
from curate.evaluation.config import POOL_ARM, RANDOM_PREFIX, ArmSpec
from curate.pool import Pool
from curate.shards import iter_shard_samples, list_shards

POOL_SCHEMA = pa.schema([("uid", pa.string()), ("caption", pa.string()), ("jpg", pa.binary())])


@dataclass
class PoolSamples:
    """Every downloaded sample of a pool (one row per uid, first copy kept), in shard order."""

    table: pa.Table
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.table.num_rows


@dataclass
class Arm:
    """One arm: rows of the pool table (repeats allowed: a balanced set may list a uid twice)."""

    name: str
    kind: str  # curated | random | pool
    source: str  # where its uids came from, for the report
    rows: np.ndarray
    seed: int | None = None  # random controls differ per training seed
    control_of: str | None = None
    missing: int = 0  # uids of the subset that are not among the pool's downloaded samples

    @property
    def size(self) -> int:
        return len(self.rows)

    def data_name(self) -> str:
        return self.name if self.seed is None else f"{self.name}-seed-{self.seed}"


def read_pool_samples(pool: Pool) -> PoolSamples:
    """One pass over the download shards; encoded image bytes stay encoded."""
    shards = list_shards(pool)
    if not shards:
        raise ConfigError(f"eval: {pool.url} has no finished download shards (run `curate download` first)")
    uids: list[str] = []
    captions: list[str] = []
    images: list[bytes] = []
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for shard_id in shards:
        for sample in iter_shard_samples(pool, shard_id):
            uid = sample.get("uid")
            if not uid or sample.get("image") is None:
                counts["no_image"] += 1
                continue
            if uid in seen:
                counts["repeated_uid"] += 1
                continue
            seen.add(uid)
            uids.append(uid)
            captions.append(sample.get("caption") or "")
            images.append(sample["image"])
    counts["samples"] = len(uids)
    table = pa.table({"uid": uids, "caption": captions, "jpg": images}, schema=POOL_SCHEMA)
    return PoolSamples(table, dict(counts))


def _subset_uids(pool: Pool, spec: ArmSpec) -> tuple[str, str, pa.ChunkedArray]:
    """(name, source, uids) of a subset, balanced set, export or uid file."""
    from curate.stages.export.subset import resolve_subset

    ref = spec.subset.strip().rstrip("/")
    if ref.startswith(f"{layout.EXPORTS}/") and ref.count("/") == 1:
        name = ref.split("/", 1)[1]
        meta = f"{layout.export_dir(name)}/metadata"
        if not pool.exists(meta):
            raise ConfigError(f"eval: {pool.uri(meta)} not found (run `curate export` for {name!r} first)")
        uids = pool.read_parquet_dir(meta, columns=["uid"])["uid"]
        return spec.name or name, pool.uri(meta), uids
    subset = resolve_subset(pool, ref, what="eval")
    return spec.name or subset.name, subset.source, subset.uids


def curated_arm(pool: Pool, samples: PoolSamples, spec: ArmSpec) -> Arm:
    name, source, uids = _subset_uids(pool, spec)
    index = pa.table({"uid": samples.table["uid"], "row": pa.array(np.arange(len(samples)), pa.int64())})
    wanted = pa.table({"uid": pc.cast(uids, pa.string())})
    joined = wanted.join(index, keys="uid", join_type="left outer")
    rows = joined["row"]
    missing = int(pc.sum(pc.is_null(rows)).as_py() or 0)
    found = np.sort(pc.drop_null(rows).to_numpy())
    return Arm(name=name, kind="curated", source=source, rows=found, missing=missing)


def random_control(arm: Arm, pool_size: int, seed: int, base_seed: int) -> Arm:
    """A uniform sample of the pool, without replacement, of exactly `arm.size` rows."""
    if arm.size > pool_size:
        raise ConfigError(f"eval: arm {arm.name!r} lists {arm.size} samples (with repeats), more than the pool's "
                          f"{pool_size}: a random subset of the same size cannot be drawn")
    rng = np.random.default_rng([base_seed, zlib.crc32(arm.name.encode()), seed])
    rows = np.sort(rng.choice(pool_size, size=arm.size, replace=False))
    return Arm(name=f"{RANDOM_PREFIX}{arm.name}", kind="random", source=f"uniform sample of the pool, seed {seed}",
               rows=rows, seed=seed, control_of=arm.name)


def pool_arm(samples: PoolSamples) -> Arm:
    return Arm(name=POOL_ARM, kind="pool", source="every downloaded sample", rows=np.arange(len(samples)))


def arm_table(samples: PoolSamples, arm: Arm) -> pa.Table:
    return samples.table.take(pa.array(arm.rows, pa.int64()))


def arm_digest(samples: PoolSamples, arm: Arm) -> str:
    """A hash of the arm's multiset of uids: the same samples give the same digest in any order."""
    uids = samples.table["uid"].take(pa.array(arm.rows, pa.int64()))
    ordered = pc.take(uids, pc.sort_indices(uids)).combine_chunks()
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(ordered)], pa.int32()), ordered), "\n")
    return hashlib.sha256(joined[0].as_buffer() or b"").hexdigest()[:16]
