"""Zero-shot classification and image-text retrieval metrics of a CLIP model on an EvalSet.

The rules are the ones the published numbers are computed with (docs/eval.md "Metrics"):
- zero-shot: open_clip's `build_zero_shot_classifier` (open_clip/zero_shot_classifier.py) and the
  `accuracy` of open_clip_train/zero_shot.py, which clip_benchmark's zeroshot_classification.py copies;
- retrieval: clip_benchmark's metrics/zeroshot_retrieval.py (`evaluate`, `recall_at_k`).
Both return per-example hit arrays besides the means, for the paired bootstrap in compare.py.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from curate.errors import ConfigError
from curate.evaluation.evalsets import CLASS_PLACEHOLDER, EvalSet

TOP_K = 5


class ClipEncoder(Protocol):
    """What the metrics need of a model: curate.models.loading.LoadedClip has it."""

    preprocess: Callable[[Any], torch.Tensor]

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...


@dataclass
class ZeroShotResult:
    """Zero-shot accuracy (fractions in [0, 1]); per-example arrays are aligned with EvalSet.keys."""

    top1: float
    top5: float
    k: int  # the k of "top5": 5, or the number of classes when there are fewer
    correct_top1: np.ndarray  # bool, one per example
    correct_top5: np.ndarray
    n: int
    undecodable: int  # images that failed to decode here; they count as misses


@dataclass
class RetrievalResult:
    """Recall@1/@5 both ways (fractions in [0, 1]).

    i2t: per image, a hit when any of its captions is among the k captions closest to it
    (clip_benchmark's "text_retrieval_recall@k"); t2i: per caption, a hit when its own image is among
    the k closest images ("image_retrieval_recall@k"). `caption_image[c]` is caption c's image index.
    """

    i2t_r1: float
    i2t_r5: float
    t2i_r1: float
    t2i_r5: float
    i2t_hit1: np.ndarray  # bool, per image (aligned with EvalSet.keys)
    i2t_hit5: np.ndarray
    t2i_hit1: np.ndarray  # bool, per caption (images' captions in order)
    t2i_hit5: np.ndarray
    caption_image: np.ndarray  # int64, per caption
    n_images: int
    n_captions: int
    undecodable: int  # images that failed to decode here: their hits are misses and they are never retrieved


def _load_pixels(preprocess: Callable[[Any], torch.Tensor], data: bytes) -> torch.Tensor | None:
    # Untrusted bytes: any decoder error means "no usable image" (counted by the caller), never a crash.
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
    except Exception:
        return None
    return preprocess(rgb)


def encode_images(clip: ClipEncoder, images: list[bytes], batch_size: int = 256,
                  source: str = "evaluation set") -> tuple[torch.Tensor, np.ndarray]:
    """(N, D) L2-normalised fp32 image embeddings (zeros where undecodable) and the decodable mask.

    Each batch is decoded and preprocessed by a few threads (PIL and torchvision release the GIL),
    then embedded in one forward pass. ConfigError naming `source` when no image decodes.
    """
    ok = np.zeros(len(images), dtype=bool)
    out: torch.Tensor | None = None
    load = partial(_load_pixels, clip.preprocess)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(images), batch_size):
            pixels = list(pool.map(load, images[start:start + batch_size]))
            good = np.flatnonzero([p is not None for p in pixels])
            if not len(good):
                continue
            feats = _normalize(clip.encode_images(torch.stack([pixels[i] for i in good])))
            if out is None:
                out = torch.zeros((len(images), feats.shape[1]), dtype=torch.float32, device=feats.device)
            out[torch.as_tensor(start + good, device=out.device)] = feats
            ok[start + good] = True
    if out is None:
        raise ConfigError(f"{source}: none of its {len(images)} images can be decoded")
    return out, ok


def encode_texts(clip: ClipEncoder, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """(N, D) L2-normalised fp32 text embeddings, `batch_size` texts per forward pass."""
    return torch.cat([_normalize(clip.encode_texts(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)])


def _normalize(x: torch.Tensor) -> torch.Tensor:
    # LoadedClip already normalises; doing it again is a no-op for it and makes any encoder correct.
    return torch.nn.functional.normalize(x.float(), dim=-1)


def fill_template(template: str, classname: str) -> str:
    """The prompt for one class: the template with every {c} replaced by the class name."""
    return template.replace(CLASS_PLACEHOLDER, classname)


def zeroshot_classifier(clip: ClipEncoder, classnames: list[str], templates: list[str],
                        batch_size: int = 256) -> torch.Tensor:
    """(D, C) classifier weights, as open_clip's build_zero_shot_classifier: per class, the mean of the
    L2-normalised embeddings of its templates, L2-normalised again."""
    texts = [fill_template(t, c) for c in classnames for t in templates]  # class-major, as open_clip
    emb = encode_texts(clip, texts, batch_size).reshape(len(classnames), len(templates), -1).mean(dim=1)
    return (emb / emb.norm(dim=1, keepdim=True)).T


def _topk_hits(queries: torch.Tensor, gallery: torch.Tensor, k: int, hit: Callable[[torch.Tensor, slice], torch.Tensor],
               rows: int = 1024, mask_cols: torch.Tensor | None = None) -> torch.Tensor:
    """For each query row, the (k,) indices of the `k` highest-scoring gallery rows, scored in row blocks
    so an (n_queries, n_gallery) matrix never exists at once; `hit` turns a block's indices into hits."""
    out: list[torch.Tensor] = []
    for start in range(0, queries.shape[0], rows):
        block = slice(start, start + rows)
        scores = queries[block] @ gallery.T
        if mask_cols is not None:
            scores[:, mask_cols] = float("-inf")
        # torch.topk(largest, sorted) exactly as open_clip/clip_benchmark; exact ties follow its order.
        idx = torch.topk(scores, k, dim=1, largest=True, sorted=True).indices
        out.append(hit(idx, block))
    return torch.cat(out).cpu()


def zeroshot(clip: ClipEncoder, evalset: EvalSet, batch_size: int = 256) -> ZeroShotResult:
    """Zero-shot top-1/top-5 accuracy of `clip` on `evalset`.

    Follows open_clip: classifier from zeroshot_classifier; logits = 100 * image_features @ classifier;
    an example is correct at k when its label is among torch.topk(logits, k) (open_clip_train
    zero_shot.accuracy). k=5 is clipped to the number of classes (torch.topk would refuse k > C).
    Undecodable images count as misses.
    """
    if evalset.classnames is None or evalset.templates is None or evalset.labels is None:
        raise ConfigError(f"evaluation set {evalset.path}: no classnames.txt, so no zero-shot task")
    classifier = zeroshot_classifier(clip, evalset.classnames, evalset.templates, batch_size)
    feats, ok = encode_images(clip, evalset.images, batch_size, f"evaluation set {evalset.path}")
    k = min(TOP_K, len(evalset.classnames))
    target = torch.as_tensor(evalset.labels, device=feats.device)
    topk = _topk_hits(100.0 * feats, classifier.T, k, lambda idx, block: idx == target[block].view(-1, 1))
    ok_t = torch.from_numpy(ok)
    correct1 = (topk[:, 0] & ok_t).numpy()
    correct5 = (topk.any(dim=1) & ok_t).numpy()
    n = len(evalset.keys)
    return ZeroShotResult(top1=float(correct1.mean()), top5=float(correct5.mean()), k=k, correct_top1=correct1,
                          correct_top5=correct5, n=n, undecodable=int((~ok).sum()))


def retrieval(clip: ClipEncoder, evalset: EvalSet, batch_size: int = 256) -> RetrievalResult:
    """Image->text and text->image recall@1 and @5 of `clip` on `evalset`.

    Follows clip_benchmark metrics/zeroshot_retrieval.py: scores = text_emb @ image_emb.T over all
    captions of all images; recall@k per query is 1 when at least one positive is among the top k
    (clip_benchmark takes `recall_at_k(...) > 0`, the "CLIP-paper" recall it describes), then averaged
    over queries: images for i2t (an image's positives are all its captions), captions for t2i (a
    caption's one positive is its own image). k is clipped to the gallery size. An undecodable image
    is a miss for i2t and is never retrieved for t2i (its captions are misses).
    """
    if evalset.captions is None:
        raise ConfigError(f"evaluation set {evalset.path}: no .txt captions, so no retrieval task")
    caption_image = np.repeat(np.arange(len(evalset.captions), dtype=np.int64),
                              [len(c) for c in evalset.captions])
    texts = [c for caps in evalset.captions for c in caps]
    img, ok = encode_images(clip, evalset.images, batch_size, f"evaluation set {evalset.path}")
    txt = encode_texts(clip, texts, batch_size).to(img.device)
    owner = torch.as_tensor(caption_image, device=img.device)
    bad = torch.as_tensor(~ok, device=img.device)
    rows = torch.arange(img.shape[0], device=img.device)

    k_i2t = min(TOP_K, len(texts))
    i2t = _topk_hits(img, txt, k_i2t, lambda idx, block: owner[idx] == rows[block].view(-1, 1))
    k_t2i = min(TOP_K, img.shape[0])
    t2i = _topk_hits(txt, img, k_t2i, lambda idx, block: idx == owner[block].view(-1, 1),
                     mask_cols=bad if bool(bad.any()) else None)
    ok_t = torch.from_numpy(ok)
    cap_ok = ok_t[torch.from_numpy(caption_image)]
    i2t1, i2t5 = (i2t[:, 0] & ok_t).numpy(), (i2t.any(dim=1) & ok_t).numpy()
    t2i1, t2i5 = (t2i[:, 0] & cap_ok).numpy(), (t2i.any(dim=1) & cap_ok).numpy()
    return RetrievalResult(
        i2t_r1=float(i2t1.mean()), i2t_r5=float(i2t5.mean()), t2i_r1=float(t2i1.mean()), t2i_r5=float(t2i5.mean()),
        i2t_hit1=i2t1, i2t_hit5=i2t5, t2i_hit1=t2i1, t2i_hit5=t2i5, caption_image=caption_image,
        n_images=len(evalset.keys), n_captions=len(texts), undecodable=int((~ok).sum()),
    )
