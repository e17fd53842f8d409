"""The real-pixel emoji pool (curate.emoji): a seeded web of emoji artwork with planted noise, its eval
set in another vendor's style, and clean DFN pairs. Needs the vendors (scripts/emoji_assets.sh)."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from curate.demo.web import PLANTED_KINDS
from curate.emoji import EmojiNoise, build_emoji_web, choose_concepts, write_clean_pairs, write_emoji_evalset
from curate.emoji import captions as cap
from curate.emoji.compose import composite
from curate.emoji.phash import phash_of
from curate.emoji.vendors import ASSETS_ENV, NOTO_ENV, VENDORS, load_artwork
from curate.emoji.web import COPY_KINDS, MIN_DISTANCE, NEAR_DISTANCE
from curate.errors import ConfigError

CONCEPTS, PER_CONCEPT, SEED = 12, 25, 7  # 300 links
NOISE = EmojiNoise(mismatched_caption=0.08, wrong_page_caption=0.06, filename_caption=0.06, generic_caption=0.05,
                   boilerplate_caption=0.05, non_english=0.08, exact_duplicate=0.05, near_duplicate=0.05,
                   tiny_image=0.04, extreme_aspect=0.04)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    try:
        choose_concepts(CONCEPTS, SEED)
    except ConfigError as exc:
        pytest.skip(f"emoji vendors not installed ({exc})")
    return tmp_path_factory.mktemp("emoji-cache")


@pytest.fixture(scope="module")
def web(cache):
    return build_emoji_web(CONCEPTS, PER_CONCEPT, SEED, NOISE, cache_dir=cache)


def _tar_members(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                out[m.name] = tar.extractfile(m).read()
    return out


def _decode(body: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(body))
    img.load()
    return img


def test_same_seed_gives_same_bytes(web, cache, tmp_path) -> None:
    again = build_emoji_web(CONCEPTS, PER_CONCEPT, SEED, NOISE, cache_dir=cache)
    assert {p: r.body for p, r in again.resources.items()} == {p: r.body for p, r in web.resources.items()}
    assert again.pages == web.pages and again.truth == web.truth and again.planted == web.planted
    other = build_emoji_web(CONCEPTS, PER_CONCEPT, SEED + 1, NOISE, cache_dir=cache)
    assert {r.body for r in other.resources.values()}.isdisjoint(r.body for r in web.resources.values())
    for name, write in (("eval", lambda d: write_emoji_evalset(d, CONCEPTS, 2, SEED, cache_dir=cache)),
                        ("hq", lambda d: write_clean_pairs(d, 40, SEED, concepts=CONCEPTS, cache_dir=cache))):
        write(tmp_path / f"{name}1")
        write(tmp_path / f"{name}2")
        first = sorted((tmp_path / f"{name}1").iterdir())
        assert [p.read_bytes() for p in first] == [(tmp_path / f"{name}2" / p.name).read_bytes() for p in first]


def test_every_noise_rate_is_honoured(web) -> None:
    total = CONCEPTS * PER_CONCEPT
    assert len(web.resources) == len(web.truth) == total
    assert sorted(p for _, links in web.pages for p, _ in links) == sorted(web.resources)
    for kind, rate in NOISE.model_dump().items():
        assert abs(len(web.planted.get(kind, [])) / total - rate) <= 1 / total, kind
        assert sum(t.kind == kind for t in web.truth.values()) == len(web.planted.get(kind, []))
    assert len(web.clean) == total - sum(len(v) for v in web.planted.values())
    assert set(web.planted) & set(PLANTED_KINDS) == {"mismatched_caption", "exact_duplicate", "near_duplicate",
                                                     "tiny_image", "extreme_aspect", "non_english"}


def test_each_kind_looks_like_its_problem(web) -> None:
    names = {c.name: c for c in web.concepts}
    alt = {p: a for _, links in web.pages for p, a in links}
    page_of = {p: page for page, links in web.pages for p, _ in links}
    for path, caption in web.clean:
        assert web.truth[path].concept.lower() in caption.lower()
    for path, caption in web.planted["mismatched_caption"]:
        assert web.truth[path].concept.lower() not in caption.lower()
        assert any(c.name.lower() in caption.lower() for c in web.concepts)
    for path, caption in web.planted["wrong_page_caption"]:
        neighbours = [a for p, a in dict(web.pages)[page_of[path]] if p != path]
        assert caption in neighbours and web.truth[path].concept.lower() not in caption.lower()
    assert all(re.search(r"\.(jpg|png|svg|JPG)$", c) for _, c in web.planted["filename_caption"])
    assert {c for _, c in web.planted["generic_caption"]} <= set(cap.GENERIC)
    assert {c for _, c in web.planted["boilerplate_caption"]} <= set(cap.BOILERPLATE)
    for path, caption in web.planted["non_english"]:
        truth = web.truth[path]
        assert (truth.language, caption) in names[truth.concept].names and caption != truth.concept
    for path, _ in web.planted["tiny_image"]:
        assert max(_decode(web.resources[path].body).size) < 32
    for path, _ in web.planted["extreme_aspect"]:
        w, h = _decode(web.resources[path].body).size
        assert w / h >= 5
    for path, _ in web.planted["exact_duplicate"]:
        source = web.truth[path].source
        assert web.resources[path].body == web.resources[source].body and web.truth[source].kind == "clean"
        assert alt[path] == alt[source]
    for path, _ in web.planted["near_duplicate"]:
        source = web.truth[path].source
        assert web.resources[path].body != web.resources[source].body and web.truth[source].kind == "clean"
        distance = bin(phash_of(web.resources[path].body) ^ phash_of(web.resources[source].body)).count("1")
        assert distance <= NEAR_DISTANCE


def test_only_planted_copies_are_perceptual_duplicates(web) -> None:
    """The pool's perceptual dedup (max_distance 4, as pipelines/demo.yaml) groups a planted copy with
    its source and nothing else: every clean image is distinct."""
    from curate.stages.dedup.perceptual import components, hamming_pairs

    paths = sorted(web.resources)
    hashes = np.array([phash_of(web.resources[p].body) for p in paths], np.uint64)
    rows, cols, _ = hamming_pairs(hashes, 4)
    labels = components(len(paths), rows, cols)
    groups: dict[int, set[str]] = {}
    for path, label in zip(paths, labels, strict=True):
        groups.setdefault(int(label), set()).add(path)
    for members in groups.values():
        if len(members) == 1:
            continue
        originals = {p for p in members if web.truth[p].kind not in COPY_KINDS}
        assert len(originals) == 1, f"unplanted perceptual duplicates: {sorted(members)}"
        assert all(web.truth[p].source in originals for p in members - originals)
    planted = {p for p, t in web.truth.items() if t.kind in COPY_KINDS}
    assert all(len(groups[int(labels[paths.index(p)])]) > 1 for p in planted)
    # And with a margin, so a downloaded (resized, re-encoded) copy of the pool still tells them apart.
    originals = np.array([i for i, p in enumerate(paths) if p not in planted])
    assert len(hamming_pairs(hashes[originals], MIN_DISTANCE)[0]) == 0


def test_images_decode_and_show_the_artwork(web, cache) -> None:
    for resource in web.resources.values():
        img = _decode(resource.body)
        assert img.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[resource.content_type]
    emojis = [c.emoji for c in web.concepts]
    rasters = {v: load_artwork(v, emojis, 128, cache) for v in VENDORS}
    for e in emojis:
        arrays = [np.asarray(rasters[v][e]) for v in VENDORS]
        for a in arrays:
            assert (a[..., 3] > 128).mean() > 0.1  # a drawing, not an empty canvas
            assert len(np.unique(a[a[..., 3] > 128][:, :3] // 32, axis=0)) >= 2
        assert not np.array_equal(arrays[0], arrays[1]) and not np.array_equal(arrays[1], arrays[2])
    # A composite shows the artwork's main colours where the same draw with a transparent picture does not.
    shown = []
    for seed, emoji in enumerate(emojis):
        art = np.asarray(rasters["twemoji"][emoji]).astype(np.int32)
        colours = art[art[..., 3] == 255][:, :3]
        # Neither dark outlines (a drop shadow could match them) nor whites (a light background could).
        colours = colours[(colours.sum(axis=1) > 150) & (colours.sum(axis=1) < 690)] // 8
        codes, counts = np.unique(colours[:, 0] * 1024 + colours[:, 1] * 32 + colours[:, 2], return_counts=True)
        top = np.argsort(-counts)[:4]
        palette = codes[top]
        # The artwork is scaled to at least 0.35 of the side (1/8 of its area), a little may be off-frame.
        expected = 0.05 * counts[top].sum() / (art.shape[0] * art.shape[1])

        def share(img: Image.Image, palette=palette) -> float:
            q = np.asarray(img, np.int32) // 8
            return float(np.isin(q[..., 0] * 1024 + q[..., 1] * 32 + q[..., 2], palette).mean())

        drawn = composite(rasters["twemoji"][emoji], 128, 128, np.random.default_rng(seed))
        blank = composite(Image.new("RGBA", (128, 128)), 128, 128, np.random.default_rng(seed))
        shown.append(share(drawn) - share(blank) > expected)
    assert all(shown), shown


def test_evalset_format_and_disjoint_from_pool(web, cache, tmp_path) -> None:
    out = write_emoji_evalset(tmp_path / "eval", CONCEPTS, 4, SEED, cache_dir=cache)
    classes = (out / "classnames.txt").read_text(encoding="utf-8").splitlines()
    assert classes == [c.name for c in web.concepts]
    templates = (out / "templates.txt").read_text(encoding="utf-8").splitlines()
    assert templates and all("{c}" in t for t in templates)
    members = _tar_members(out)
    keys = sorted({name.split(".")[0] for name in members})
    assert len(keys) == CONCEPTS * 4
    pool_bodies = {r.body for r in web.resources.values()}
    pool_hashes = np.array([phash_of(b) for b in pool_bodies], np.uint64)
    for key in keys:
        assert {n for n in members if n.startswith(key + ".")} == {f"{key}.{e}" for e in ("png", "cls", "txt", "json")}
        label = int(members[f"{key}.cls"].decode("ascii"))
        meta = json.loads(members[f"{key}.json"])
        assert meta["concept"] == classes[label] and meta["vendor"] == "noto" and meta["codepoints"][0].startswith("U+")
        captions = members[f"{key}.txt"].decode("utf-8").splitlines()
        assert captions and all(classes[label].lower() in c.lower() for c in captions)
        body = members[f"{key}.png"]
        assert _decode(body).size == (128, 128) and body not in pool_bodies
        assert int(np.bitwise_count(pool_hashes ^ np.uint64(phash_of(body))).min()) > 4
    # The same draws with another vendor's artwork differ: the images show the eval vendor's drawings.
    twemoji = write_emoji_evalset(tmp_path / "tw", CONCEPTS, 4, SEED, vendor="twemoji", cache_dir=cache)
    pool_style = _tar_members(twemoji)
    assert all(pool_style[f"{k}.png"] != members[f"{k}.png"] for k in keys)


def test_clean_pairs_load_for_the_dfn_and_differ_from_the_pool(web, cache, tmp_path) -> None:
    from curate.dfn.data import read_webdataset

    write_clean_pairs(tmp_path / "hq", 60, SEED, concepts=CONCEPTS, cache_dir=cache, per_shard=25)
    pairs = read_webdataset([str(tmp_path / "hq")], label_field="concept")
    assert pairs.counts == {"loaded": 60} and len(list((tmp_path / "hq").glob("*.tar"))) == 3
    rows = pairs.table.to_pylist()
    names = {c.name for c in web.concepts}
    assert {r["label"] for r in rows} == names  # 60 pairs cover all 12 concepts
    assert all(r["label"].lower() in r["caption"].lower() for r in rows)
    assert {r["image"] for r in rows}.isdisjoint(r.body for r in web.resources.values())


def test_noise_rates_must_leave_room() -> None:
    with pytest.raises(ValidationError, match="add up to"):
        EmojiNoise(mismatched_caption=0.6, non_english=0.5)
    with pytest.raises(ValidationError):
        EmojiNoise(tiny_image=-0.1)


@pytest.mark.fault("emoji pool", "a vendor's artwork not installed",
                   "ConfigError naming the vendor and the command that installs it")
def test_missing_vendor_is_a_clear_config_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(ASSETS_ENV, str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match=r"openmoji.*scripts/emoji_assets\.sh"):
        build_emoji_web(2, 2, 0, cache_dir=tmp_path)
    monkeypatch.delenv(ASSETS_ENV)
    monkeypatch.setenv(NOTO_ENV, str(tmp_path / "NoFont.ttf"))
    with pytest.raises(ConfigError, match=r"noto.*scripts/emoji_assets\.sh"):
        write_emoji_evalset(tmp_path / "eval", 2, 1, 0, cache_dir=tmp_path)
