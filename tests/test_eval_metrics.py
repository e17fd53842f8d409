"""Zero-shot and retrieval metrics (curate.evaluation.metrics): planted embeddings with known answers,
cross-checks against open_clip's classifier and clip_benchmark's recall algorithm, and real-format models."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curate.errors import ConfigError
from curate.evaluation.evalsets import EvalSample, EvalSet, load_evalset, write_evalset
from curate.evaluation.metrics import retrieval, zeroshot, zeroshot_classifier


def coded_png(i: int) -> bytes:
    """A tiny image whose red channel carries its index, so PlantedClip knows which image it sees."""
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (i, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


class PlantedClip:
    """A LoadedClip-like encoder returning planted embeddings: image i -> image_emb[i], text -> text_emb[text].
    Nothing is normalised here, so the metrics' own normalisation is exercised."""

    def __init__(self, image_emb: list[list[float]], text_emb: dict[str, list[float]]) -> None:
        self.image_emb = torch.tensor(image_emb, dtype=torch.float32)
        self.text_emb = {t: torch.tensor(v, dtype=torch.float32) for t, v in text_emb.items()}
        self.image_batches: list[int] = []

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.tensor([float(np.asarray(image)[0, 0, 0])])

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        self.image_batches.append(len(pixels))
        return self.image_emb[pixels[:, 0].long()]

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([self.text_emb[t] for t in texts])


def planted_set(labels: list[int] | None, classnames: list[str] | None, templates: list[str] | None,
                captions: list[list[str]] | None = None, images: list[bytes] | None = None) -> EvalSet:
    n = len(labels) if labels is not None else len(captions or [])
    return EvalSet(name="planted", path="/planted", keys=[f"k{i}" for i in range(n)],
                   images=images or [coded_png(i) for i in range(n)],
                   labels=np.asarray(labels, dtype=np.int64) if labels is not None else None,
                   captions=captions, classnames=classnames, templates=templates)


def one_hot(i: int, d: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(d)]


def test_zeroshot_top1_top5_on_planted_ranks() -> None:
    """Six classes along the axes; every image is [1..6]-weighted so its class ranking is known:
    class 5 first, class 0 last. Labels 5, 0, 1, 4 rank 1, 6, 5, 2."""
    classes = [f"c{i}" for i in range(6)]
    templates = ["a {c}", "the {c}"]
    texts = {t.replace("{c}", c): one_hot(i, 6) for i, c in enumerate(classes) for t in templates}
    clip = PlantedClip([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 4, texts)
    es = planted_set([5, 0, 1, 4], classes, templates)
    es.images = [coded_png(i) for i in range(4)]
    for batch_size in (256, 3):
        res = zeroshot(clip, es, batch_size=batch_size)
        assert res.k == 5 and res.n == 4 and res.undecodable == 0
        assert res.correct_top1.tolist() == [True, False, False, False]
        assert res.correct_top5.tolist() == [True, False, True, True]
        assert res.top1 == 0.25 and res.top5 == 0.75
    assert clip.image_batches[-2:] == [3, 1]


def test_top5_is_clipped_to_the_number_of_classes() -> None:
    classes = ["a", "b", "c"]
    texts = {c: one_hot(i, 3) for i, c in enumerate(classes)}
    # image 0 is closest to class 2, image 1 to class 0, image 2 to class 1
    clip = PlantedClip([[0.1, 0.2, 0.9], [0.9, 0.3, 0.1], [0.2, 0.8, 0.1]], texts)
    res = zeroshot(clip, planted_set([2, 1, 1], classes, ["{c}"]))
    assert res.k == 3
    assert res.correct_top1.tolist() == [True, False, True]
    assert res.correct_top5.tolist() == [True, True, True]


def test_classifier_averages_normalised_template_embeddings() -> None:
    """open_clip's rule: normalise each template embedding, average, normalise. Class A's templates are
    [10, 0, 0] and [0, 1, 0] (very different norms), class B's [0.8, 0, 0.6]. Averaging unnormalised
    embeddings would make A ~[0.995, 0.1, 0] and win image [1, 0, 0]; open_clip's A is [0.707, 0.707, 0]
    and B (0.8) wins."""
    texts = {"x A": [10.0, 0.0, 0.0], "y A": [0.0, 1.0, 0.0], "x B": [0.8, 0.0, 0.6], "y B": [0.8, 0.0, 0.6]}
    clip = PlantedClip([[1.0, 0.0, 0.0]], texts)
    weights = zeroshot_classifier(clip, ["A", "B"], ["x {c}", "y {c}"])
    s = 2 ** -0.5
    assert torch.allclose(weights, torch.tensor([[s, 0.8], [s, 0.0], [0.0, 0.6]]), atol=1e-6)
    res = zeroshot(clip, planted_set([1], ["A", "B"], ["x {c}", "y {c}"]))
    assert res.correct_top1.tolist() == [True]


def test_classifier_matches_open_clip_build_zero_shot_classifier() -> None:
    """The same weights as open_clip.build_zero_shot_classifier (run on a model whose encode_text looks
    the planted vectors up by token id), with batches of classes that do not divide evenly."""
    import open_clip

    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(13)]
    templates = ["a {c}", "photo of {c}", "{c}!"]
    prompts = [t.replace("{c}", c) for c in classes for t in templates]
    scale = rng.uniform(0.5, 3, (len(prompts), 1))  # unnormalised, of different norms
    table = torch.from_numpy((rng.normal(size=(len(prompts), 16)) * scale).astype(np.float32))
    ids = {p: i for i, p in enumerate(prompts)}

    class TokenModel:
        def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            out = table[tokens]
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return torch.tensor([ids[t] for t in texts])

    reference = open_clip.build_zero_shot_classifier(
        TokenModel(), tokenizer, classes, [lambda c, t=t: t.replace("{c}", c) for t in templates],
        num_classes_per_batch=5)
    clip = PlantedClip([[0.0] * 16], {p: table[i].tolist() for p, i in ids.items()})
    ours = zeroshot_classifier(clip, classes, templates, batch_size=7)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_retrieval_on_planted_embeddings() -> None:
    """Images e0, e1, e2; captions: img0 'a' (= e1) and 'b' (near e0), img1 'c' (near e2), img2 'd'
    (nearest e2). i2t@1: img0 finds b (hit), img1 finds a (img0's: miss), img2 finds d (hit).
    t2i@1: a -> img1 (miss), b -> img0 (hit), c -> img2 (miss), d -> img2 (hit)."""
    texts = {"a": [0.0, 1.0, 0.0], "b": [1.0, 0.0, 0.5], "c": [0.0, 0.2, 1.0], "d": [0.1, 0.0, 1.0]}
    clip = PlantedClip([one_hot(0, 3), one_hot(1, 3), one_hot(2, 3)], texts)
    es = planted_set(None, None, None, captions=[["a", "b"], ["c"], ["d"]])
    res = retrieval(clip, es, batch_size=2)
    assert res.caption_image.tolist() == [0, 0, 1, 2]
    assert res.i2t_hit1.tolist() == [True, False, True]
    assert res.t2i_hit1.tolist() == [False, True, False, True]
    assert res.i2t_r1 == pytest.approx(2 / 3) and res.t2i_r1 == 0.5
    # k is clipped to the gallery (4 captions, 3 images): every query's positive is in its top k
    assert res.i2t_hit5.all() and res.t2i_hit5.all() and res.i2t_r5 == 1.0 and res.t2i_r5 == 1.0
    assert (res.n_images, res.n_captions, res.undecodable) == (3, 4, 0)


def clip_benchmark_recall(texts_emb: torch.Tensor, images_emb: torch.Tensor, texts_image_index: list[int],
                          k: int) -> tuple[np.ndarray, np.ndarray]:
    """clip_benchmark's algorithm (metrics/zeroshot_retrieval.py: a positive-pair matrix, one-hot top-k,
    recall > 0), written out as an oracle: (per-caption t2i hits, per-image i2t hits)."""
    scores = texts_emb @ images_emb.t()
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(scores)), texts_image_index] = True

    def recall_at_k(s: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        top = torch.topk(s, k, dim=1)[1]
        onehot = torch.nn.functional.one_hot(top, num_classes=s.shape[1])
        return (onehot * pos.view(s.shape[0], 1, s.shape[1])).sum(dim=(1, 2)) / pos.sum(dim=1)

    return (recall_at_k(scores, positive_pairs) > 0).numpy(), (recall_at_k(scores.T, positive_pairs.T) > 0).numpy()


def test_retrieval_matches_clip_benchmark_algorithm() -> None:
    rng = np.random.default_rng(7)
    n_images, d = 40, 8
    captions = [[f"t{i}_{j}" for j in range(1 + i % 3)] for i in range(n_images)]
    texts = {c: rng.normal(size=d).tolist() for caps in captions for c in caps}
    clip = PlantedClip(rng.normal(size=(n_images, d)).tolist(), texts)
    res = retrieval(clip, planted_set(None, None, None, captions=captions), batch_size=16)
    img = torch.nn.functional.normalize(clip.image_emb, dim=-1)
    txt = torch.nn.functional.normalize(torch.stack([clip.text_emb[c] for caps in captions for c in caps]), dim=-1)
    owner = [i for i, caps in enumerate(captions) for _ in caps]
    for k, (t2i, i2t) in ((1, (res.t2i_hit1, res.i2t_hit1)), (5, (res.t2i_hit5, res.i2t_hit5))):
        ref_t2i, ref_i2t = clip_benchmark_recall(txt, img, owner, k)
        assert t2i.tolist() == ref_t2i.tolist() and i2t.tolist() == ref_i2t.tolist()
    assert 0 < res.t2i_r5 < 1 and res.t2i_r1 < res.t2i_r5


@pytest.mark.fault("eval", "an image that fails to decode at scoring time",
                   "counted as undecodable; a miss for its example and never retrieved")
def test_undecodable_images_are_misses_and_never_retrieved() -> None:
    classes = ["a", "b"]
    texts = {"a": [1.0, 0.0], "b": [0.0, 1.0], "cap0": [1.0, 0.0], "cap1": [1.0, 0.1], "cap2": [0.0, 1.0]}
    clip = PlantedClip([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]], texts)
    images = [coded_png(0), b"broken", coded_png(2)]
    zs = zeroshot(clip, planted_set([0, 0, 1], classes, ["{c}"], images=images))
    assert zs.undecodable == 1 and zs.correct_top1.tolist() == [True, False, True] and zs.n == 3
    es = planted_set(None, None, None, captions=[["cap0"], ["cap1"], ["cap2"]], images=images)
    ret = retrieval(clip, es)
    assert ret.undecodable == 1
    assert ret.i2t_hit1.tolist() == [True, False, True]
    # cap1 is closest to image 1, which is unreadable: it counts as a miss, and image 1 is never retrieved
    assert ret.t2i_hit1.tolist() == [True, False, True]
    with pytest.raises(ConfigError) as err:
        zeroshot(clip, planted_set([0], classes, ["{c}"], images=[b"broken"]))
    assert "/planted" in str(err.value) and "none of its 1 images" in str(err.value)


def test_undecodable_image_is_never_retrieved() -> None:
    """An unreadable image has no embedding; it must not take a place in anyone's top k. Caption 0 scores
    every readable image below zero, its own image 5th of 6: a hit at 5, but not if the unreadable image
    (score 0 for a zero embedding) were ranked first."""
    cosines = [0.5, 0.1, 0.2, 0.3, 0.4, 0.6]
    images = [[c, (1 - c * c) ** 0.5] for c in cosines] + [[1.0, 0.0]]
    texts = {"cap0": [-1.0, 0.0], **{f"cap{i}": images[i] for i in range(1, 7)}}
    clip = PlantedClip(images, texts)
    es = planted_set(None, None, None, captions=[[f"cap{i}"] for i in range(7)],
                     images=[coded_png(i) for i in range(6)] + [b"broken"])
    res = retrieval(clip, es)
    assert res.undecodable == 1
    assert res.t2i_hit5.tolist() == [True] * 6 + [False]
    assert res.t2i_hit1.tolist() == [False] + [True] * 5 + [False]


@pytest.mark.fault("eval", "a task the evaluation set does not have (zero-shot without class names, "
                   "retrieval without captions)", "one-line ConfigError naming the set")
def test_task_the_set_lacks() -> None:
    clip = PlantedClip([[1.0]], {"x": [1.0]})
    with pytest.raises(ConfigError, match=r"/planted.*zero-shot"):
        zeroshot(clip, planted_set(None, None, None, captions=[["x"]]))
    with pytest.raises(ConfigError, match=r"/planted.*retrieval"):
        retrieval(clip, planted_set([0], ["x"], ["{c}"]))


# --- real-format models ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """curate-tiny with seeded random weights, saved in the local-directory layout load_clip reads."""
    import open_clip

    from curate.models.save import save_clip_dir
    from curate.models.tiny import TINY_MODEL, register_tiny_configs

    register_tiny_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    return save_clip_dir(model, open_clip.get_model_config(TINY_MODEL), tmp_path_factory.mktemp("m") / "tiny")


def shapes_set(path: Path, n: int, seed: int) -> Path:
    """A zero-shot (colour) and retrieval set of generated shapes, in the on-disk format."""
    from curate.testing.synthetic import COLORS, encode, make_samples

    colors = list(COLORS)
    samples = [EvalSample(key=f"s{i:04d}", image=encode(s.image, "PNG"), label=colors.index(s.color),
                          captions=[s.caption])
               for i, s in enumerate(make_samples(n, seed=seed))]
    templates = ["a photo of a {c} circle", "a {c} square", "a {c} triangle", "{c} cross on a plain background"]
    return write_evalset(path, samples, colors, templates, per_shard=16)


def test_real_model_matches_open_clip_reference(random_tiny_dir: Path, tmp_path: Path) -> None:
    """A curate-tiny loaded with load_clip: zero-shot agrees with open_clip's build_zero_shot_classifier and
    its top-k accuracy rule run on the raw model; retrieval agrees with clip_benchmark's algorithm."""
    import open_clip

    from curate.models.loading import load_clip

    clip = load_clip(str(random_tiny_dir))
    es = load_evalset(str(shapes_set(tmp_path / "shapes", 40, seed=3)))
    res = zeroshot(clip, es, batch_size=16)

    assert es.classnames is not None and es.templates is not None and es.labels is not None and es.captions
    pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in es.images])
    with torch.no_grad():
        feats = clip.model.encode_image(pixels, normalize=True)
        classifier = open_clip.build_zero_shot_classifier(
            clip.model, clip.tokenizer, es.classnames,
            [lambda c, t=t: t.replace("{c}", c) for t in es.templates], num_classes_per_batch=10)
    logits = 100.0 * feats @ classifier
    pred = logits.topk(5, 1, True, True)[1].t()  # open_clip_train zero_shot.accuracy
    correct = pred.eq(torch.from_numpy(es.labels).view(1, -1).expand_as(pred))
    assert res.correct_top1.tolist() == correct[:1].any(dim=0).tolist()
    assert res.correct_top5.tolist() == correct[:5].any(dim=0).tolist()
    assert res.top1 == pytest.approx(correct[:1].reshape(-1).float().sum().item() / len(es))

    ret = retrieval(clip, es, batch_size=16)
    with torch.no_grad():
        txt = clip.model.encode_text(clip.tokenizer([c for caps in es.captions for c in caps]), normalize=True)
    t2i, i2t = clip_benchmark_recall(txt, feats, list(range(len(es))), 5)
    assert ret.t2i_hit5.tolist() == t2i.tolist() and ret.i2t_hit5.tolist() == i2t.tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_like_cpu(random_tiny_dir: Path, tmp_path: Path) -> None:
    """On a GPU the embeddings and the top-k stay on the device; the hits match the CPU's."""
    from curate.models.loading import load_clip

    es = load_evalset(str(shapes_set(tmp_path / "shapes", 40, seed=5)))
    cpu, gpu = load_clip(str(random_tiny_dir)), load_clip(str(random_tiny_dir), device="cuda")
    zc, zg = zeroshot(cpu, es, batch_size=16), zeroshot(gpu, es, batch_size=16)
    rc, rg = retrieval(cpu, es, batch_size=16), retrieval(gpu, es, batch_size=16)
    # TF32 or kernel differences may flip a near-tie; allow at most one example per array
    for a, b in ((zc.correct_top1, zg.correct_top1), (zc.correct_top5, zg.correct_top5),
                 (rc.i2t_hit5, rg.i2t_hit5), (rc.t2i_hit5, rg.t2i_hit5)):
        assert a.shape == b.shape and (a != b).sum() <= 1


def test_trained_model_beats_chance(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """The session's trained curate-tiny names colours far above chance (1/8) and retrieves captions
    far above chance (5/64): the metrics measure what the model learned."""
    from curate.models.loading import load_clip

    clip = load_clip(str(tiny_clip_dir))
    es = load_evalset(str(shapes_set(tmp_path / "shapes", 64, seed=11)))
    zs = zeroshot(clip, es)
    ret = retrieval(clip, es)
    assert zs.top1 >= 0.5, zs.top1
    assert ret.t2i_r5 >= 0.3 and ret.i2t_r5 >= 0.3, (ret.t2i_r5, ret.i2t_r5)
