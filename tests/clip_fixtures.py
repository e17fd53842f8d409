"""Session fixture `tiny_clip_dir`: a "curate-tiny" CLIP trained on generated shapes, saved as a model dir.

No weights can be downloaded in tests, so a tiny CLIP learns coloured shapes for a few seconds
with open_clip's ClipLoss until matched pairs outscore shuffled pairs (AUC >= 0.9 on held-out
samples). It is saved with save_clip_dir, so every test loads it through the same load_clip path
that real checkpoints take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curate import layout
from curate.testing.synthetic import make_samples, mismatched_caption

TARGET_AUC = 0.9
MAX_STEPS = 600  # a step budget, not seconds: the result must not depend on how loaded the machine is


def matched_vs_shuffled_auc(matched: np.ndarray, shuffled: np.ndarray) -> float:
    """Probability that a matched pair's score exceeds a shuffled pair's (Mann-Whitney AUC)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([matched, shuffled]))
    n_pos, n_neg = len(matched), len(shuffled)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_tiny_clip(out_dir: Path, seed: int = 0, max_steps: int = MAX_STEPS) -> tuple[Path, float]:
    """Train curate-tiny until held-out AUC >= TARGET_AUC; returns (model dir, AUC reached)."""

    from curate.models.tiny import register_tiny_configs

    register_tiny_configs()
    threads = torch.get_num_threads()
    # A model this small gains nothing from a second thread, and on a busy machine OpenMP's spinning
    # threads cost ten times the work.
    torch.set_num_threads(1)
    try:
        return _train(out_dir, seed, max_steps)
    finally:
        torch.set_num_threads(threads)


def _train(out_dir: Path, seed: int, max_steps: int) -> tuple[Path, float]:
    import open_clip

    from curate.models.save import save_clip_dir
    from curate.models.tiny import TINY_MODEL

    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL)
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    train = make_samples(768, seed=seed)
    held = make_samples(128, seed=seed + 1)
    rng = np.random.default_rng(seed)
    images = torch.stack([preprocess(s.image) for s in train])
    tokens = tokenizer([s.caption for s in train])
    held_images = torch.stack([preprocess(s.image) for s in held])
    held_pos = tokenizer([s.caption for s in held])
    held_neg = tokenizer([mismatched_caption(s, rng) for s in held])

    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    batch, auc, step = 64, 0.0, 0
    while step < max_steps:
        model.train()
        idx = torch.from_numpy(rng.choice(len(train), batch, replace=False))
        img_f, txt_f, scale = model(images[idx], tokens[idx])
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                img_e = model.encode_image(held_images, normalize=True)
                pos = (img_e * model.encode_text(held_pos, normalize=True)).sum(-1).numpy()
                neg = (img_e * model.encode_text(held_neg, normalize=True)).sum(-1).numpy()
            auc = matched_vs_shuffled_auc(pos, neg)
            if auc >= TARGET_AUC + 0.05:  # margin: JPEG round-trips in shards shift scores a little
                break
    model.eval()
    save_clip_dir(model, open_clip.get_model_config(TINY_MODEL), out_dir)
    return out_dir, auc


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory (hf-hub layout) of a trained curate-tiny CLIP; trained once per session."""
    out, auc = train_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "curate-tiny")
    assert auc >= TARGET_AUC, f"tiny CLIP reached only AUC {auc:.3f} in {MAX_STEPS} steps"
    return out


def write_synthetic_shards(pool_root: str | Path, n_shards: int = 2, per_shard: int = 32, seed: int = 0,
                           size: int = 64, extra_images: dict[str, bytes] | None = None,
                           output_format: str = "webdataset") -> list[dict[str, str]]:
    """Download-format shards of shape images (as the download stage writes them), marked done.

    Returns one dict per sample (uid, caption, shape, color). `extra_images` (caption -> encoded bytes)
    are appended to the last shard, e.g. the bad-image cases.
    """
    import hashlib

    from curate.pool import Pool
    from curate.shards import SampleRow, ShardWriter, shard_name
    from curate.testing.synthetic import encode
    from curate.uid import make_uid

    pool = Pool(str(pool_root))
    samples = make_samples(n_shards * per_shard, seed=seed, size=size)
    out: list[dict[str, str]] = []
    for s in range(n_shards):
        sid = shard_name(s)
        writer = ShardWriter(pool, sid, output_format=output_format)
        items: list[tuple[str, bytes, str, str]] = [
            (x.caption, encode(x.image), x.color, x.shape) for x in samples[s * per_shard:(s + 1) * per_shard]
        ]
        if extra_images and s == n_shards - 1:
            items += [(caption, data, "", "") for caption, data in extra_images.items()]
        for i, (caption, data, color, shape) in enumerate(items):
            url = f"http://example.test/{sid}/{i}.jpg"
            uid = make_uid(url, caption)
            writer.add(SampleRow(key=f"{sid}{i:04d}", uid=uid, url=url, caption=caption, status="success",
                                 width=size, height=size, original_width=size * 2, original_height=size * 2,
                                 sha256=hashlib.sha256(data).hexdigest(), image=data))
            out.append({"uid": uid, "caption": caption, "color": color, "shape": shape, "shard": sid})
        writer.add(SampleRow(key=f"{sid}9999", uid=make_uid(f"http://example.test/{sid}/x", "gone"),
                             url=f"http://example.test/{sid}/x", caption="gone", status="failed_to_download",
                             error_message="404"))
        stats = {"successes": len(items), "failed_to_download": 1}
        writer.close(stats)
        pool.write_json(layout.download_marker(sid), stats)
    return out
