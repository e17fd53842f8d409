"""Clean emoji image-caption pairs for training a DFN: the pool's vendors and caption style, drawn
from their own seed stream, so no image is byte-identical to one in the pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curate.emoji.captions import clean_caption
from curate.emoji.compose import composite, encode
from curate.emoji.concepts import choose_concepts
from curate.emoji.vendors import POOL_VENDORS, load_artwork
from curate.emoji.wds import ShardWriter
from curate.uid import make_uid

HQ_STREAM = 3


def write_clean_pairs(out_dir: str | Path, n: int, seed: int, size: int = 128, concepts: int | None = None,
                      cache_dir: str | Path | None = None, per_shard: int = 1000) -> Path:
    """n pairs as webdataset tars (<key>.jpg or .png, .txt caption, .json {uid, caption, concept, vendor}).

    concepts=None draws from every eligible concept; an int with the pool's seed gives the pool's
    concepts (choose_concepts). Read with the DFN's webdataset loader, label_field "concept"."""
    out = Path(out_dir)
    chosen = choose_concepts(concepts, seed)
    art = {v: load_artwork(v, [c.emoji for c in chosen], size, cache_dir) for v in POOL_VENDORS}
    rng = np.random.default_rng([seed, HQ_STREAM])
    order = np.concatenate([rng.permutation(len(chosen)) for _ in range(-(-n // len(chosen)))])[:n]
    with ShardWriter(out, per_shard, prefix="hq") as shards:
        for i, k in enumerate(order):  # every concept once before any twice
            concept = chosen[int(k)]
            vendor = POOL_VENDORS[int(rng.integers(len(POOL_VENDORS)))]
            body, ext, _ = encode(composite(art[vendor][concept.emoji], size, size, rng), rng)
            caption = clean_caption(concept, rng)
            meta = {"uid": make_uid(f"emoji-hq://{seed}/{i}", caption), "caption": caption,
                    "concept": concept.name, "vendor": vendor}
            shards.write(f"{i:08d}", {ext: body, "txt": caption.encode("utf-8"),
                                      "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")})
    return out
