"""How well a filter model separates matched image-text pairs from corrupted ones.

Corruptions: `shuffled` pairs each image with another random sample's caption; `other_class`
pairs it with a caption of a sample whose label differs (needs a label per pair). The score is
the cosine of L2-normalised embeddings, as the clip scorer computes it; AUC is the probability
that a matched pair outscores a corrupted one (ties count half).
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.stats import rankdata

from curate.dfn.data import PairSet

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of positives above negatives via the rank-sum (Mann-Whitney U) statistic."""
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def distribution(scores: np.ndarray) -> dict[str, float]:
    qs = np.quantile(scores, QUANTILES)
    return {"n": len(scores), "mean": float(scores.mean()), "std": float(scores.std()),
            "min": float(scores.min()), "max": float(scores.max()),
            **{f"p{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}}


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (n ≥ 2)."""
    perm = rng.permutation(n)
    for i in np.flatnonzero(perm == np.arange(n)):
        j = (i + 1) % n
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def other_class_partners(labels: np.ndarray, rng: np.random.Generator, max_rounds: int = 64) -> np.ndarray:
    """For each pair, a random partner with a different label."""
    n = len(labels)
    partner = rng.integers(n, size=n)
    for _ in range(max_rounds):
        same = labels[partner] == labels
        if not same.any():
            return partner
        partner[same] = rng.integers(n, size=int(same.sum()))
    # rare labels drawn badly: fall back to an exhaustive choice for what is left
    for i in np.flatnonzero(labels[partner] == labels):
        partner[i] = rng.choice(np.flatnonzero(labels != labels[i]))
    return partner


def _embed(loaded: Any, pairs: PairSet, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Counter]:
    images_col, captions = pairs.table["image"], pairs.table["caption"].to_pylist()
    counts: Counter[str] = Counter()
    img_parts, txt_parts, keep = [], [], np.zeros(len(captions), dtype=bool)
    for start in range(0, len(captions), batch_size):
        tensors, idx = [], []
        for i in range(start, min(start + batch_size, len(captions))):
            try:
                with Image.open(io.BytesIO(images_col[i].as_py())) as img:
                    tensors.append(loaded.preprocess(img.convert("RGB")))
                idx.append(i)
            except Exception:
                counts["undecodable_image"] += 1
        if not tensors:
            continue
        keep[idx] = True
        img_parts.append(loaded.encode_images(torch.stack(tensors)).cpu().numpy())
        txt_parts.append(loaded.encode_texts([captions[i] for i in idx]).cpu().numpy())
    return np.concatenate(img_parts), np.concatenate(txt_parts), keep, counts


def evaluate_filter(model: str, pairs: PairSet, *, seed: int = 0, batch_size: int = 256,
                    device: str = "cpu", pretrained: str | None = None) -> dict[str, Any]:
    """Score matched and corrupted versions of `pairs` with `model`; AUC and distribution of each."""
    from curate.models.loading import load_clip

    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs to evaluate, got {len(pairs)}")
    loaded = load_clip(model, pretrained, device=device)
    img, txt, keep, counts = _embed(loaded, pairs, batch_size)
    labels_all = np.array(pairs.table["label"].to_pylist(), dtype=object)[keep]
    rng = np.random.default_rng(seed)
    matched = np.einsum("nd,nd->n", img, txt)
    corrupted: dict[str, np.ndarray] = {"shuffled": np.einsum("nd,nd->n", img, txt[derangement(len(img), rng)])}
    skipped: dict[str, str] = {}
    has_label = np.array([lab is not None for lab in labels_all])
    labelled = np.flatnonzero(has_label)
    if len(labelled) and len(set(labels_all[labelled])) > 1:
        partner = labelled[other_class_partners(labels_all[labelled].astype(str), rng)]
        corrupted["other_class"] = np.einsum("nd,nd->n", img[labelled], txt[partner])
        if len(labelled) < len(img):
            counts["unlabelled_pairs"] += len(img) - len(labelled)
    else:
        skipped["other_class"] = "pairs carry no labels (set label_field / --label-field)" if not len(labelled) \
            else "all pairs have the same label"
    report: dict[str, Any] = {
        "model": model, "pairs": len(img), "seed": seed, "counts": dict(counts),
        "distributions": {"matched": distribution(matched), **{k: distribution(v) for k, v in corrupted.items()}},
        "auc": {k: auc(matched[labelled] if k == "other_class" else matched, v) for k, v in corrupted.items()},
        "skipped": skipped,
    }
    if len(corrupted) > 1:
        report["auc"]["all_corrupted"] = auc(matched, np.concatenate(list(corrupted.values())))
    return report
