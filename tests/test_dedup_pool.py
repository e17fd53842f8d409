"""A generated pool with planted duplicates, shared by the dedup tests (plus checks of the generator).

Images are smooth random colour fields (upsampled 6x6 noise) with a shape drawn on top, so
unrelated images differ everywhere while copies stay close. Planted per duplicated original:
an exact copy (same bytes), a re-encoded copy (JPEG q=60), a resized copy (96 px) and a small
crop (5% off each border, scaled back). Tables are written as the Score stage writes them:
scores/image_stats (phash: our own DCT helper, as the image_stats scorer is built in parallel),
scores/clip (a score for keep=highest_score), and embeddings/proj: a fixed random projection of
32x32 pixels, L2-normalised, float16 - a deterministic stand-in for a CLIP image embedding.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image
from scipy.fft import dctn

from curate import layout
from curate.pool import Pool
from curate.shards import SampleRow, ShardWriter, shard_name
from curate.stages.dedup.embeddings import embedding_array
from curate.testing.synthetic import COLORS, SHAPES, draw_shape
from curate.uid import make_uid

SIZE = 128
COPY_KINDS = ("exact", "reencode", "resize", "crop")


def phash64(image: Image.Image) -> int:
    """64-bit DCT perceptual hash: 32x32 greyscale, low 8x8 frequencies against their median."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dctn(grey, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


_PROJECTION = np.random.default_rng(1234).standard_normal((32 * 32 * 3, 128)).astype(np.float32)


def project(image: Image.Image) -> np.ndarray:
    """Fixed random projection of centred 32x32 RGB pixels, L2-normalised."""
    pixels = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    vec = (pixels - pixels.mean()).ravel() @ _PROJECTION
    return vec / np.linalg.norm(vec)


def random_image(rng: np.random.Generator) -> Image.Image:
    field_ = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    base = Image.fromarray(field_, "RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    shape = draw_shape(list(COLORS)[int(rng.integers(len(COLORS)))], SHAPES[int(rng.integers(len(SHAPES)))],
                       SIZE, rng)
    mask = Image.fromarray((rng.random((SIZE, SIZE)) < 0.35).astype(np.uint8) * 255, "L")
    return Image.composite(shape, base, mask)


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_copy(kind: str, original: bytes) -> bytes:
    img = Image.open(io.BytesIO(original)).convert("RGB")
    if kind == "exact":
        return original
    if kind == "reencode":
        return jpeg(img, 60)
    if kind == "resize":
        return jpeg(img.resize((96, 96), Image.Resampling.BILINEAR))
    if kind == "crop":
        m = int(SIZE * 0.02)
        return jpeg(img.crop((m, m, SIZE - m, SIZE - m)).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    raise ValueError(kind)


@dataclass
class PlantedPool:
    pool: Pool
    uids: list[str]
    origin: dict[str, int]  # uid -> index of the original image it shows
    kind: dict[str, str]  # uid -> "original" or a copy kind
    images: dict[str, bytes] = field(default_factory=dict)
    clip_score: dict[str, float] = field(default_factory=dict)

    def truth_groups(self, kinds: tuple[str, ...]) -> dict[str, int]:
        """uid -> planted group id for copies of `kinds` (and their originals); others are singletons."""
        out: dict[str, int] = {}
        for i, uid in enumerate(self.uids):
            if self.kind[uid] == "original" or self.kind[uid] in kinds:
                out[uid] = self.origin[uid]
            else:
                out[uid] = 1_000_000 + i
        return out


def build_pool(root: str, n_originals: int = 120, n_duplicated: int = 40, n_shards: int = 3, seed: int = 0,
               order_seed: int = 0) -> PlantedPool:
    """Write a pool of originals plus planted copies of the first `n_duplicated`, over `n_shards` shards.

    The samples are the same for every n_shards/order_seed: only their split into shards and order change.
    """
    rng = np.random.default_rng(seed)
    originals = [jpeg(random_image(rng)) for _ in range(n_originals)]
    rows: list[tuple[str, bytes, int, str]] = []
    for i, data in enumerate(originals):
        rows.append((f"http://127.0.0.1/o/{i}.jpg", data, i, "original"))
        if i < n_duplicated:
            for kind in COPY_KINDS:
                rows.append((f"http://127.0.0.1/{kind}/{i}.jpg", make_copy(kind, data), i, kind))
    order = np.random.default_rng(order_seed).permutation(len(rows))
    rows = [rows[j] for j in order]
    pool = Pool(root)
    planted = PlantedPool(pool, [], {}, {})
    score_rng = np.random.default_rng(seed + 1)
    per_shard = -(-len(rows) // n_shards)
    for s in range(n_shards):
        sid = shard_name(s)
        chunk = rows[s * per_shard : (s + 1) * per_shard]
        writer = ShardWriter(pool, sid, output_format="parquet")
        stats_cols: dict[str, list] = {"uid": [], "phash": []}
        clip_cols: dict[str, list] = {"uid": [], "clip_test_similarity_score": []}
        emb_uids, emb = [], []
        for k, (url, data, origin, kind) in enumerate(chunk):
            caption = f"image {origin}"
            uid = make_uid(url, caption)
            img = Image.open(io.BytesIO(data))
            writer.add(SampleRow(f"{sid}{k:04d}", uid, url, caption, "success", width=img.width, height=img.height,
                                 original_width=img.width, original_height=img.height,
                                 sha256=hashlib.sha256(data).hexdigest(), image=data))
            planted.uids.append(uid)
            planted.origin[uid] = origin
            planted.kind[uid] = kind
            planted.images[uid] = data
            stats_cols["uid"].append(uid)
            stats_cols["phash"].append(phash64(img))
            score = float(score_rng.uniform(0.1, 0.4))
            planted.clip_score[uid] = score
            clip_cols["uid"].append(uid)
            clip_cols["clip_test_similarity_score"].append(score)
            emb_uids.append(uid)
            emb.append(project(img))
        # One failed download per shard: it must not appear in any dedup table.
        writer.add(SampleRow(f"{sid}9999", make_uid(f"http://127.0.0.1/missing/{s}", "x"),
                             f"http://127.0.0.1/missing/{s}", "x", "failed_to_download", error_message="HTTP 404"))
        writer.close({"successes": len(chunk), "failed_to_download": 1})
        pool.write_json(layout.download_marker(sid), {"samples": len(chunk) + 1})
        pool.write_parquet(f"scores/image_stats/{sid}.parquet",
                           pa.table({"uid": stats_cols["uid"], "phash": pa.array(stats_cols["phash"], pa.uint64())}))
        pool.write_parquet(f"scores/clip/{sid}.parquet", pa.table(clip_cols))
        pool.write_parquet(f"embeddings/proj/{sid}.parquet",
                           pa.table({"uid": emb_uids, "image_embedding": embedding_array(np.stack(emb))}))
    return planted


def pair_scores(pred: dict[str, int], truth: dict[str, int]) -> tuple[float, float]:
    """Pairwise precision and recall of predicted co-membership against planted groups."""
    from collections import Counter

    def pairs(counter: Counter) -> int:
        return sum(c * (c - 1) // 2 for c in counter.values())

    uids = list(truth)
    both = pairs(Counter((pred[u], truth[u]) for u in uids))
    predicted = pairs(Counter(pred[u] for u in uids))
    actual = pairs(Counter(truth[u] for u in uids))
    return (both / predicted if predicted else 1.0), (both / actual if actual else 1.0)


def test_planted_pool_is_what_it_claims(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=10, n_duplicated=3, n_shards=2)
    assert len(planted.uids) == 10 + 3 * len(COPY_KINDS)
    exact = [u for u in planted.uids if planted.kind[u] == "exact"]
    for u in exact:
        original = next(v for v in planted.uids if planted.kind[v] == "original" and planted.origin[v] ==
                        planted.origin[u])
        assert planted.images[u] == planted.images[original]
    others = [u for u in planted.uids if planted.kind[u] in ("reencode", "resize", "crop")]
    assert all(planted.images[u] != planted.images[v] for u in others for v in planted.uids if u != v)


def test_phash_helper_separates_copies_from_unrelated(tmp_path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=60, n_duplicated=20, n_shards=1)
    by_uid = {u: phash64(Image.open(io.BytesIO(planted.images[u]))) for u in planted.uids}
    originals = {planted.origin[u]: by_uid[u] for u in planted.uids if planted.kind[u] == "original"}
    copy_dist = [bin(by_uid[u] ^ originals[planted.origin[u]]).count("1") for u in planted.uids
                 if planted.kind[u] != "original"]
    values = list(originals.values())
    unrelated = [bin(a ^ b).count("1") for i, a in enumerate(values) for b in values[i + 1 :]]
    assert max(copy_dist) < min(unrelated)
