"""The emoji eval set: the pool's concepts drawn by a vendor the pool never shows (Noto Color Emoji
by default), for zero-shot classification and image-text retrieval by `curate eval`.

On-disk format (docs/emoji-pool.md), read by `curate eval`'s loader:
  classnames.txt  line i = English name of class i
  templates.txt   one zero-shot prompt template per line, each with "{c}"
  *.tar           webdataset: <key>.png, <key>.cls (class index), <key>.txt (captions, one a line),
                  <key>.json ({"concept", "vendor", "codepoints"})
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curate.emoji.captions import clean_caption
from curate.emoji.compose import composite, encode
from curate.emoji.concepts import choose_concepts
from curate.emoji.vendors import EVAL_VENDOR, load_artwork
from curate.emoji.wds import ShardWriter

EVAL_STREAM = 2
TEMPLATES = ("a {c} emoji.", "an icon of {c}.", "a picture of {c}.", "a {c} sticker.", "clipart of {c}.",
             "a drawing of {c}.", "{c}.")


def write_emoji_evalset(out_dir: str | Path, concepts: int, per_concept: int, seed: int, vendor: str = EVAL_VENDOR,
                        size: int = 128, cache_dir: str | Path | None = None, per_shard: int = 1000) -> Path:
    """per_concept images of each of choose_concepts(concepts, seed) by `vendor`; returns out_dir.

    The same concepts and seed as build_emoji_web give the pool's classes, in the same order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = choose_concepts(concepts, seed)
    art = load_artwork(vendor, [c.emoji for c in chosen], size, cache_dir)
    rng = np.random.default_rng([seed, EVAL_STREAM])
    (out / "classnames.txt").write_text("".join(f"{c.name}\n" for c in chosen), encoding="utf-8")
    (out / "templates.txt").write_text("".join(f"{t}\n" for t in TEMPLATES), encoding="utf-8")
    with ShardWriter(out, per_shard, prefix="eval") as shards:
        for label, concept in enumerate(chosen):
            for j in range(per_concept):
                # Its own augmentation: larger artwork, less rotation, always PNG.
                img = composite(art[concept.emoji], size, size, rng, scale=(0.5, 0.9), max_rotation=10.0)
                body, _, _ = encode(img, rng, png_fraction=1.0)
                captions = [f"{concept.name} emoji"]
                captions += [c for c in (clean_caption(concept, rng) for _ in range(2)) if c not in captions]
                meta = {"concept": concept.name, "vendor": vendor, "codepoints": concept.codepoints()}
                shards.write(f"{label:05d}_{j:04d}", {
                    "png": body, "cls": str(label).encode(), "txt": "\n".join(captions).encode("utf-8"),
                    "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")})
    return out
