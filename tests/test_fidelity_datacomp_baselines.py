"""Parity with DataComp's text-based, image-based and image-based ∩ CLIP score baselines.

The `datacomp_*` / `nltk_*` functions transcribe the peers' code (mlfoundations/datacomp
baselines/apply_filter.py and image_based_clustering.py; nltk's WordNetCorpusReader, 3.8.1 and
3.9+; fastText's Dictionary::readWord behind `fasttext.tokenize`), and curate's filter stage runs the
shipped specs on generated pools with the edges planted. uids.npy must be byte-identical to what
DataComp's apply_filter saves.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from curate.config import FilterConfig
from curate.errors import ConfigError
from curate.pool import Pool
from curate.scorers.base import CAPTION
from curate.scorers.language import LanguageConfig, LanguageScorer, bundled_model_path
from curate.shards import SHARD_DIR
from curate.stages.dedup.embeddings import embedding_array
from curate.stages.filter import run
from curate.stages.filter.columns import derive
from curate.stages.filter.wordnet import WordNet
from curate.testing.pool import make_score_pool
from tests.test_fidelity_datacomp import datacomp_fasttext_language, datacomp_saved_bytes, datacomp_uid_array

FILTERS = Path(__file__).resolve().parent.parent / "filters"
KEY = "clip_l14_similarity_score"


# ----------------------------------------------------------------- nltk's WordNet reader, transcribed

NLTK_SUBS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


class NltkWordNet:
    """WordNetCorpusReader's _load_lemma_pos_offset_map, _load_exception_map, _morphy and synsets()
    (returning offsets, which is all DataComp reads)."""

    def __init__(self, root: Path, version: str) -> None:
        self.version = version
        self._lemma_pos_offset_map: dict[str, dict[str, list[int]]] = defaultdict(dict)
        self._exception_map: dict[str, dict[str, list[str]]] = {}
        for pos, suffix in {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}.items():
            for line in (root / f"index.{suffix}").read_text().splitlines(keepends=True):
                if line.startswith(" "):
                    continue
                _iter = iter(line.split())
                lemma = next(_iter)
                line_pos = next(_iter)
                n_synsets = int(next(_iter))
                assert n_synsets > 0
                n_pointers = int(next(_iter))
                [next(_iter) for _ in range(n_pointers)]
                n_senses = int(next(_iter))
                assert n_synsets == n_senses
                next(_iter)
                self._lemma_pos_offset_map[lemma][line_pos] = [int(next(_iter)) for _ in range(n_synsets)]
            self._exception_map[pos] = {}
            for line in (root / f"{suffix}.exc").read_text().splitlines():
                terms = line.split()
                self._exception_map[pos][terms[0]] = terms[1:]

    def _morphy(self, form: str, pos: str) -> list[str]:
        exceptions = self._exception_map[pos]
        substitutions = NLTK_SUBS[pos]

        def apply_rules(forms: list[str]) -> list[str]:
            return [form[: -len(old)] + new for form in forms for old, new in substitutions if form.endswith(old)]

        def filter_forms(forms: list[str]) -> list[str]:
            result, seen = [], set()
            for form in forms:
                if form in self._lemma_pos_offset_map and pos in self._lemma_pos_offset_map[form] \
                        and form not in seen:
                    result.append(form)
                    seen.add(form)
            return result

        if self.version == "nltk-3.9":
            forms = exceptions[form] if form in exceptions else apply_rules([form])
            return filter_forms([form] + forms)  # noqa: RUF005 (nltk as written)
        # nltk 3.8.1
        if form in exceptions:
            return filter_forms([form] + exceptions[form])
        forms = apply_rules([form])
        results = filter_forms([form] + forms)  # noqa: RUF005
        if results:
            return results
        while forms:
            forms = apply_rules(forms)
            results = filter_forms(forms)
            if results:
                return results
        return []

    def synsets(self, lemma: str) -> list[int]:
        lemma = lemma.lower()
        index = self._lemma_pos_offset_map
        return [offset for p in ["n", "v", "a", "r"] for form in self._morphy(lemma, p)
                for offset in index[form].get(p, [])]


def datacomp_does_contain_text_entity(text: str, entity_set: list[int], wordnet: NltkWordNet) -> bool:
    """apply_filter.does_contain_text_entity (synset.offset() is the offset synsets() yields here)."""
    word_list = text.split()
    for word in word_list:
        synsets = wordnet.synsets(word)
        if len(synsets) == 0:
            continue
        synset_key = synsets[0]
        if synset_key in entity_set:
            return True
    return False


def fasttext_tokenize(text: str) -> list[str]:
    """fasttext.tokenize: Dictionary::readWord over the UTF-8 bytes until EOF."""
    data = text.encode("utf-8")
    tokens, word, i = [], b"", 0
    while i < len(data):
        c = data[i:i + 1]
        i += 1
        if c in (b" ", b"\n", b"\r", b"\t", b"\v", b"\f", b"\0"):
            if not word:
                if c == b"\n":
                    tokens.append("</s>")
                continue
            tokens.append(word.decode("utf-8"))
            word = b""
            if c == b"\n":
                i -= 1  # sb.sungetc()
            continue
        word += c
    if word:
        tokens.append(word.decode("utf-8"))
    return tokens


def datacomp_caption_filter(df: pd.DataFrame, model: Any) -> np.ndarray:
    """apply_filter.caption_filter."""
    caption_num_words = df.text.apply(lambda x: len(fasttext_tokenize(x)))
    caption_num_chars = df.text.apply(len)
    # DataComp predicts the list at once; this fasttext build's list path is broken, and per caption
    # is the same computation (both append "\n" to each caption and take the top label).
    lang_preds = [model.predict(x.replace("\n", " "), k=1)[0] for x in df.text.values]
    fasttext_en = [x[0].replace("__label__", "") == "en" for x in lang_preds]
    mask = np.array(fasttext_en) & (caption_num_words > 1) & (caption_num_chars > 5)
    return mask.to_numpy()


# ----------------------------------------------------------------- a generated WordNet with the edges

def _index_line(lemma: str, pos: str, offsets: list[int]) -> str:
    return f"{lemma} {pos} {len(offsets)} 1 @ {len(offsets)} 0 " + " ".join(f"{o:08d}" for o in offsets) + "  \n"


def write_wordnet(root: Path, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """index.* and *.exc files; returns the vocabulary and the ImageNet-style wnid list."""
    root.mkdir(parents=True)
    header = "  1 This software and database is being provided to you, the LICENSEE, by\n"
    entries: dict[str, dict[str, list[int]]] = {p: {} for p in "nvar"}
    listed: set[int] = set()
    # Planted: sense 1 listed / only sense 2 listed; a verb whose offset equals a listed noun's; a
    # noun (unlisted) that shadows a listed verb; exception-list plurals; a multiword lemma.
    entries["n"].update({"dog": [2084071, 10114209], "cat": [2121620], "church": [3028079, 8080386],
                         "box": [2883344], "goose": [1855672], "ice_cream": [7614500], "man": [10287213],
                         "glass": [14881303, 3438257], "fly": [2190166], "ox": [2403003]})
    entries["v"].update({"run": [1926311], "dog": [2001858], "fly": [1940403], "hop": [2084071]})
    entries["a"].update({"red": [381097], "big": [1382086], "large": [1382086]})
    entries["r"].update({"fast": [82176]})
    listed.update({2084071, 2121620, 8080386, 2883344, 1855672, 7614500, 1940403, 10287213})
    vocab = [w for p in entries.values() for w in p]
    for _ in range(3000):  # random nouns, half of them listed, with random senses
        lemma = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(3, 8))))
        pos = str(rng.choice(list("nvar"), p=[0.6, 0.2, 0.15, 0.05]))
        offsets = [int(o) for o in rng.integers(1_000_000, 15_000_000, size=int(rng.integers(1, 4)))]
        entries[pos].setdefault(lemma, offsets)
        if rng.random() < 0.5:
            listed.add(offsets[int(rng.integers(0, len(offsets)))])
        vocab.append(lemma)
    for pos, suffix in {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}.items():
        lines = [header] + [_index_line(lemma, pos, offs) for lemma, offs in sorted(entries[pos].items())]
        (root / f"index.{suffix}").write_text("".join(lines))
    (root / "noun.exc").write_text("geese goose\nmen man\noxen ox\n")
    (root / "verb.exc").write_text("ran run\nflew fly\n")
    (root / "adj.exc").write_text("bigger big\n")
    (root / "adv.exc").write_text("faster fast\n")
    wnids = [f"n{o:08d}" for o in sorted(listed)]
    return vocab, wnids


SUFFIXES = ["", "", "", "s", "es", "ies", "ing", "ed", "er", "est", "men", "eses", "ses", "xes", "s."]
SPACES = [" ", " ", " ", "\n", "\t", "\u00a0", "\u3000", "\x1c", "  "]
PLANTED = ["Dogs", "DOG", "geese", "GEESE", "men", "boxeses", "ran", "flew", "flies", "ice_cream", "Ice_Cream",
           "bigger", "faster", "glasses", "hopping", "hops", "dog.", "İce_cream", "oxen", "dogs\u00a0cat", ""]


def make_caption(rng: np.random.Generator, vocab: list[str]) -> str:
    words = []
    for _ in range(int(rng.integers(0, 7))):
        if rng.random() < 0.15:
            words.append(str(rng.choice(PLANTED)))
        elif rng.random() < 0.5:
            words.append(str(rng.choice(vocab)) + str(rng.choice(SUFFIXES)))
        else:
            words.append(str(rng.choice(["a", "photo", "of", "the", "on", "with", "in", "beautiful", "view"])))
    out = ""
    for w in words:
        out += w + str(rng.choice(SPACES))
    return out if rng.random() < 0.9 else str(rng.choice(SPACES)) + out.upper()


def _spec_with(shipped: str, tmp: Path, **paths: str) -> Path:
    """The shipped spec with its resource paths pointed at the test's files; nothing else changed."""
    data = yaml.safe_load((FILTERS / shipped).read_text())
    for cond in data["conditions"]:
        for key in ("caption_synsets", "image_clusters"):
            if key in cond:
                cond[key].update({k: v for k, v in paths.items() if k in cond[key] or k == "centroids"})
                if "centroids" in paths:
                    cond[key].pop("clusters", None)
        if "include" in cond:
            included = _spec_with(cond["include"], tmp, **paths)
            cond["include"] = included.name
    out = tmp / shipped
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# ----------------------------------------------------------------- text-based


@pytest.fixture(scope="module")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("textbased")
    rng = np.random.default_rng(21)
    vocab, wnids = write_wordnet(tmp / "wordnet", rng)
    (tmp / "wnids.txt").write_text("\n".join(wnids) + "\n")
    pool = Pool(str(tmp / "pool"))
    shards = make_score_pool(pool, n_shards=3, rows_per_shard=3000, seed=4, scorers=(), dedup=False)
    language = LanguageScorer(LanguageConfig())
    for sid in shards:
        shard = pool.read_parquet(f"{SHARD_DIR}/{sid}.parquet")
        captions = pa.array([make_caption(rng, vocab) for _ in range(shard.num_rows)], pa.string())
        shard = shard.set_column(shard.schema.get_field_index("caption"), "caption", captions)
        pool.write_parquet(f"{SHARD_DIR}/{sid}.parquet", shard)
        ok = shard.filter(pc.equal(shard["status"], "success"))
        lang = language({CAPTION: np.array(ok["caption"].to_pylist(), dtype=object)})
        pool.write_parquet(f"scores/language/{sid}.parquet", pa.table({"uid": ok["uid"], **lang}))
    return {"tmp": tmp, "pool": pool, "wnids": wnids}


def test_planted_words_follow_nltk(text_world: dict[str, Any]) -> None:
    """The planted edges, one by one, against the transcribed nltk, both morphy versions."""
    root = text_world["tmp"] / "wordnet"
    ours = WordNet.load(root)
    for version in ("nltk-3.8", "nltk-3.9"):
        ref = NltkWordNet(root, version)
        for word in [*PLANTED, "dog", "hop", "runs", "running", "boxes", "boxeses", "xyz", "s", "ses"]:
            expected = ref.synsets(word)
            assert ours.first_synset_offset(word, version) == (expected[0] if expected else None), (version, word)
    # Edges the two versions disagree on, and DataComp's offset-only match.
    assert ours.first_synset_offset("boxeses", "nltk-3.8") == 2883344  # boxeses -> boxes -> box
    assert ours.first_synset_offset("boxeses", "nltk-3.9") is None
    assert ours.first_synset_offset("hops", "nltk-3.8") == 2084071  # verb "hop": the offset of noun "dog"
    assert ours.first_synset_offset("hopping", "nltk-3.8") is None  # doubled consonants need verb.exc
    assert ours.first_synset_offset("GEESE", "nltk-3.8") == 1855672


@pytest.mark.parametrize("morphy", ["nltk-3.8", "nltk-3.9"])
def test_text_based_equals_datacomp(text_world: dict[str, Any], morphy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import fasttext

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    tmp, pool = text_world["tmp"], text_world["pool"]
    spec_dir = tmp / f"spec-{morphy}"
    spec_dir.mkdir(exist_ok=True)
    spec = _spec_with("datacomp_text_based.yaml", spec_dir, synsets=str(tmp / "wnids.txt"),
                      wordnet=str(tmp / "wordnet"), morphy=morphy)
    name = f"text_{morphy.replace('.', '')}"
    run(pool, FilterConfig(spec=str(spec), name=name), quiet=True)

    shards = pool.read_parquet_dir(SHARD_DIR).to_pandas()
    df = shards[shards.status == "success"].rename(columns={"caption": "text"})
    model = fasttext.load_model(str(bundled_model_path()))
    entity_ids = [int(x.strip()[1:]) for x in text_world["wnids"]]
    wordnet = NltkWordNet(tmp / "wordnet", morphy)
    # load_uids_with_text_entity_helper
    fasttext_lang_pred = df.text.apply(lambda x: datacomp_fasttext_language(x, model))
    contains = df.text.apply(lambda x: datacomp_does_contain_text_entity(x, entity_ids, wordnet))
    english_mask = fasttext_lang_pred == "en"
    expected = datacomp_uid_array(df.uid.values[(english_mask & (contains == True)).to_numpy()])  # noqa: E712
    assert 300 < len(expected) < english_mask.sum()
    assert pool.read_bytes(f"subsets/{name}/uids.npy") == datacomp_saved_bytes(expected)


def test_text_based_missing_files_are_one_line_errors(text_world: dict[str, Any], tmp_path: Path) -> None:
    pool = text_world["pool"]
    spec = _spec_with("datacomp_text_based.yaml", tmp_path, synsets=str(tmp_path / "none.txt"),
                      wordnet=str(text_world["tmp"] / "wordnet"))
    with pytest.raises(ConfigError, match=r"none\.txt: synset list not found"):
        run(pool, FilterConfig(spec=str(spec)), quiet=True)
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764\n\n")
    spec = _spec_with("datacomp_text_based.yaml", tmp_path, synsets=str(bad), wordnet=str(tmp_path))
    with pytest.raises(ConfigError, match=r"index\.noun: WordNet file not found"):
        run(pool, FilterConfig(spec=str(spec)), quiet=True)
    spec = _spec_with("datacomp_text_based.yaml", tmp_path, synsets=str(bad),
                      wordnet=str(text_world["tmp"] / "wordnet"))
    with pytest.raises(ConfigError, match=r"bad\.txt:2: expected a WordNet id"):
        run(pool, FilterConfig(spec=str(spec)), quiet=True)


def test_fasttext_token_count_is_readword() -> None:
    captions = ["a b", "a\nb", "\n", "a\x00b\x0bc\x1cd", " a\u00a0b ", "", "a\n\nb\n", "\r\n x \f", "ab",
                "城市 夜景\n", "\t\t", "x\n"]
    rng = np.random.default_rng(3)
    alphabet = ["a", "b", " ", "\n", "\r", "\t", "\v", "\f", "\0", "\u00a0", "\x1c", "é", "城"]
    captions += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 12)))) for _ in range(3000)]
    got = derive("caption_fasttext_tokens", pa.table({"caption": pa.array(captions)})).to_pylist()
    assert got == [len(fasttext_tokenize(c)) for c in captions]


# ----------------------------------------------------------------- image-based


def datacomp_train_kmeans(embeddings: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """image_based_clustering.train_kmeans with one GPU's GpuIndexFlatL2 replaced by the CPU IndexFlatL2."""
    import faiss

    d = embeddings.shape[1]
    cluster = faiss.Clustering(d, num_clusters)
    cluster.verbose = False
    cluster.niter = 20
    cluster.seed = seed
    cluster.max_points_per_centroid = 10000000
    index = faiss.IndexFlatL2(d)
    cluster.train(embeddings, index)
    centroids = faiss.vector_float_to_array(cluster.centroids)
    return centroids.reshape(num_clusters, d)


def datacomp_get_centroid_ids(features: Any, centroids: Any, batch_size: int) -> Any:
    """apply_filter.get_centroid_ids_gpu on the CPU."""
    import torch

    labels = torch.zeros(features.shape[0], dtype=torch.long)
    for i in range(0, features.shape[0], batch_size):
        similarity = torch.einsum("ik, jk -> ij", features[i: i + batch_size, :].float(), centroids)
        matches = torch.argmax(similarity, dim=1).cpu()
        labels[i: i + batch_size] = matches.long()
    return labels


def datacomp_image_filter(frames: list[tuple[pd.DataFrame, np.ndarray]], pool_centroids: np.ndarray,
                          target_embedding: np.ndarray, model: Any, threshold: float | None) -> np.ndarray:
    """load_uids_with_image_filter + image_filter_helper, one (parquet, npz) pair per shard."""
    import torch

    pool_centroids_t = torch.from_numpy(pool_centroids)
    target_centroid_ids = torch.unique(datacomp_get_centroid_ids(torch.from_numpy(target_embedding),
                                                                 pool_centroids_t, 1024))
    out = []
    for df, npz in frames:
        df_index = None
        if threshold is not None:
            df_index = df[KEY] >= threshold
            df = df[df_index]
        candidate_embedding = torch.from_numpy(npz)
        if df_index is not None:
            candidate_embedding = candidate_embedding[df_index.to_numpy()]
        mask = datacomp_caption_filter(df, model)
        uids = df.uid[mask]
        candidate_centroid_ids = datacomp_get_centroid_ids(candidate_embedding[mask], pool_centroids_t, 1024)
        centroid_id_to_uids: dict[int, list[str]] = {}
        for uid, label in zip(uids, candidate_centroid_ids, strict=True):
            centroid_id_to_uids.setdefault(label.item(), []).append(uid)
        uids_to_keep = []
        for i in target_centroid_ids:
            if i.item() in centroid_id_to_uids:
                uids_to_keep.extend(centroid_id_to_uids[i.item()])
        out.append(datacomp_uid_array(uids_to_keep))
    return np.concatenate(out)


DIM = 32
CAPTIONS = ["a photo of a dog on the beach", "red car", "x", "the white church\nin the snow", "ab",
            "une maison blanche", "sunset over the mountain lake", "dog\ncat", "photo", "城市夜景 at night",
            "a\u00a0photo\u00a0of\u00a0a\u00a0white\u00a0church", "big   mountain   view"]


@pytest.fixture(scope="module")
def image_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Captions with the caption-filter edges, L/14 scores with NaN, embeddings from a Gaussian
    mixture stored as float16 (not renormalised), two identical centroids for exact argmax ties."""
    tmp = tmp_path_factory.mktemp("imagebased")
    rng = np.random.default_rng(8)
    pool = Pool(str(tmp / "pool"))
    shards = make_score_pool(pool, n_shards=3, rows_per_shard=2500, seed=6, scorers=("l14",), dedup=False)
    language = LanguageScorer(LanguageConfig())
    means = rng.normal(size=(24, DIM)).astype(np.float32)
    frames = []
    for sid in shards:
        shard = pool.read_parquet(f"{SHARD_DIR}/{sid}.parquet")
        captions = pa.array([str(rng.choice(CAPTIONS)) for _ in range(shard.num_rows)], pa.string())
        shard = shard.set_column(shard.schema.get_field_index("caption"), "caption", captions)
        pool.write_parquet(f"{SHARD_DIR}/{sid}.parquet", shard)
        ok = shard.filter(pc.equal(shard["status"], "success"))
        lang = language({CAPTION: np.array(ok["caption"].to_pylist(), dtype=object)})
        pool.write_parquet(f"scores/language/{sid}.parquet", pa.table({"uid": ok["uid"], **lang}))
        scores = pool.read_parquet(f"scores/l14/{sid}.parquet")
        values = scores[KEY].to_numpy(zero_copy_only=False).astype(np.float32)
        values[rng.random(len(values)) < 0.03] = np.nan
        scores = scores.set_column(scores.schema.get_field_index(KEY), KEY, pa.array(values, pa.float32()))
        pool.write_parquet(f"scores/l14/{sid}.parquet", scores)
        emb = means[rng.integers(0, len(means), size=ok.num_rows)] + 0.4 * rng.normal(size=(ok.num_rows, DIM))
        emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
        pool.write_parquet(f"embeddings/l14/{sid}.parquet",
                           pa.table({"uid": ok["uid"], "image_embedding": embedding_array(emb)}))
        df = ok.select(["uid", "caption"]).to_pandas().rename(columns={"caption": "text"})
        df[KEY] = values
        frames.append((df, emb))
    reference = (means[:6, None, :] + 0.3 * rng.normal(size=(6, 300, DIM))).reshape(-1, DIM).astype(np.float32)
    np.save(tmp / "in1k.npy", reference)
    return {"tmp": tmp, "pool": pool, "frames": frames, "reference": reference, "means": means}


def _caption_filtered_embeddings(frames: list[tuple[pd.DataFrame, np.ndarray]], model: Any) -> np.ndarray:
    """image_based_clustering.load_embedding(caption_filtering=True): per shard in order, np.vstack."""
    return np.vstack([npz[datacomp_caption_filter(df, model)] for df, npz in frames]).astype(np.float32)


@pytest.mark.parametrize("shipped,fraction", [("datacomp_image_based.yaml", None),
                                              ("datacomp_image_based_clip_l14.yaml", 0.3)])
def test_image_based_kmeans_equals_datacomp(image_world: dict[str, Any], shipped: str, fraction: float | None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import fasttext

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    tmp, pool = image_world["tmp"], image_world["pool"]
    spec_dir = tmp / shipped.replace(".yaml", "")
    spec_dir.mkdir(exist_ok=True)
    spec = _spec_with(shipped, spec_dir, reference=str(tmp / "in1k.npy"))
    text = spec_dir.joinpath("datacomp_image_based.yaml").read_text().replace("clusters: 100000", "clusters: 40")
    spec_dir.joinpath("datacomp_image_based.yaml").write_text(text)
    name = shipped.replace(".yaml", "")
    funnel = run(pool, FilterConfig(spec=str(spec)), quiet=True)

    model = fasttext.load_model(str(bundled_model_path()))
    frames = image_world["frames"]
    points = _caption_filtered_embeddings(frames, model)
    centroids = datacomp_train_kmeans(points, 40, seed=0)
    ours = np.load(io.BytesIO(pool.read_bytes(f"subsets/{name}/centroids-0.npy")))
    assert ours.tobytes() == centroids.tobytes()
    threshold = None
    if fraction is not None:
        values = np.concatenate([df[KEY].values for df, _ in frames])
        threshold = -np.sort(-values)[int(len(values) * fraction)]
    expected = datacomp_image_filter(frames, centroids, image_world["reference"], model, threshold)
    assert 200 < len(expected) < len(points)
    assert pool.read_bytes(f"subsets/{name}/uids.npy") == datacomp_saved_bytes(expected)
    assert funnel["resources"][0]["kmeans_points"] == len(points)


def test_image_based_given_centroids_ties_equal_datacomp(image_world: dict[str, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DataComp's shipped centroids given as a file; duplicated centroid rows make exact argmax ties
    (the first index wins for the samples and the reference alike)."""
    import fasttext

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    pool, means = image_world["pool"], image_world["means"]
    centroids = np.concatenate([means[:12], means[3:5], means[12:]]).astype(np.float32)  # rows 12, 13 repeat 3, 4
    np.save(tmp_path / "centroids.npy", centroids)
    spec = _spec_with("datacomp_image_based.yaml", tmp_path, reference=str(image_world["tmp"] / "in1k.npy"),
                      centroids=str(tmp_path / "centroids.npy"))
    run(pool, FilterConfig(spec=str(spec), name="given"), quiet=True)
    model = fasttext.load_model(str(bundled_model_path()))
    expected = datacomp_image_filter(image_world["frames"], centroids, image_world["reference"], model, None)
    assert len(expected) > 200
    assert pool.read_bytes("subsets/given/uids.npy") == datacomp_saved_bytes(expected)
    assert not pool.exists("subsets/given/centroids-0.npy")


def test_image_based_sample_without_embedding_is_removed(image_world: dict[str, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DataComp's npz always holds every row; curate drops a sample whose embedding row is missing."""
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    src = image_world["pool"]
    pool = Pool(str(tmp_path / "pool"))
    for rel in ("shards", "scores", "embeddings", "_done"):
        import shutil

        shutil.copytree(Path(src.uri(rel)), tmp_path / "pool" / rel)
    sid = sorted(p.stem for p in (tmp_path / "pool" / "embeddings" / "l14").glob("*.parquet"))[0]
    emb = pool.read_parquet(f"embeddings/l14/{sid}.parquet")
    pool.write_parquet(f"embeddings/l14/{sid}.parquet", emb.slice(1))  # first row's embedding lost
    np.save(tmp_path / "centroids.npy", image_world["means"])
    spec = _spec_with("datacomp_image_based.yaml", tmp_path, reference=str(image_world["tmp"] / "in1k.npy"),
                      centroids=str(tmp_path / "centroids.npy"))
    funnel = run(pool, FilterConfig(spec=str(spec), name="lost"), quiet=True)
    kept = set(pool.read_parquet("subsets/lost/uids.parquet")["uid"].to_pylist())
    assert emb["uid"][0].as_py() not in kept
    assert funnel["missing_values"]["embedding:l14:image_embedding"] == 1


def test_image_based_spec_errors_are_one_line(text_world: dict[str, Any], tmp_path: Path) -> None:
    """A pool without the embeddings, and k-means placed after a fraction, are rejected before any data is read."""
    from curate.stages.filter import prepare

    pool = text_world["pool"]
    with pytest.raises(ConfigError, match=r"datacomp_image_based\.yaml:\d+: conditions\[3\]\.image_clusters: no "
                                          r"embeddings/l14/ in the pool"):
        prepare(pool, FILTERS / "datacomp_image_based.yaml")
    spec = tmp_path / "late.yaml"
    spec.write_text("name: late\nconditions:\n  - {column: lang_score, top_fraction: 0.5}\n"
                    "  - image_clusters: {embeddings: l14, reference: r.npy, clusters: 4}\n")
    with pytest.raises(ConfigError, match=r"late\.yaml:4: conditions\[1\]\.image_clusters: k-means trains on the "
                                          r"rows passing the earlier top-level conditions"):
        prepare(pool, spec)
    spec.write_text("name: both\nconditions:\n  - image_clusters: {embeddings: l14, reference: r.npy}\n")
    with pytest.raises(ConfigError, match=r"expected exactly one of 'centroids' \(a \.npy file\) or 'clusters'"):
        prepare(pool, spec)


@pytest.mark.ray
def test_on_ray_kmeans_points_in_shard_order(image_world: dict[str, Any], text_world: dict[str, Any],
                                             ray_runtime: object, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """On Ray the shards finish in any order; k-means still sees them in shard order (same centroids
    as DataComp's load_embedding + train_kmeans), and the matcher/centroids reach the tasks pickled."""
    import fasttext

    tmp, pool = image_world["tmp"], image_world["pool"]
    spec = _spec_with("datacomp_image_based_clip_l14.yaml", tmp_path, reference=str(tmp / "in1k.npy"))
    text = (tmp_path / "datacomp_image_based.yaml").read_text().replace("clusters: 100000", "clusters: 40")
    (tmp_path / "datacomp_image_based.yaml").write_text(text)
    run(pool, FilterConfig(spec=str(spec), name="on_ray"), quiet=True)
    model = fasttext.load_model(str(bundled_model_path()))
    frames = image_world["frames"]
    centroids = datacomp_train_kmeans(_caption_filtered_embeddings(frames, model), 40, seed=0)
    assert pool.read_bytes("subsets/on_ray/centroids-0.npy") == _npy(centroids)
    values = np.concatenate([df[KEY].values for df, _ in frames])
    threshold = -np.sort(-values)[int(len(values) * 0.3)]
    expected = datacomp_image_filter(frames, centroids, image_world["reference"], model, threshold)
    assert pool.read_bytes("subsets/on_ray/uids.npy") == datacomp_saved_bytes(expected)

    words = text_world["tmp"]
    spec = _spec_with("datacomp_text_based.yaml", tmp_path, synsets=str(words / "wnids.txt"),
                      wordnet=str(words / "wordnet"))
    run(text_world["pool"], FilterConfig(spec=str(spec), name="text_on_ray"), quiet=True)
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    run(text_world["pool"], FilterConfig(spec=str(spec), name="text_local"), quiet=True)
    on_ray = text_world["pool"].read_bytes("subsets/text_on_ray/uids.npy")
    assert len(on_ray) > 5000 and on_ray == text_world["pool"].read_bytes("subsets/text_local/uids.npy")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_resumed_run_reuses_trained_centroids(image_world: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """k-means at DataComp's scale takes hours: a second run on the same points loads the centroids it
    wrote; other points (or --rerun) train again."""
    from curate.stages.filter import clusters

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    pool = image_world["pool"]
    spec = _spec_with("datacomp_image_based.yaml", tmp_path, reference=str(image_world["tmp"] / "in1k.npy"))
    spec.write_text(spec.read_text().replace("clusters: 100000", "clusters: 30"))
    first = run(pool, FilterConfig(spec=str(spec), name="resumed"), quiet=True)
    saved = pool.read_bytes("subsets/resumed/uids.npy")
    trained = []
    real = clusters.train_kmeans

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        trained.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(clusters, "train_kmeans", counting)
    again = run(pool, FilterConfig(spec=str(spec), name="resumed"), quiet=True)
    assert trained == [] and pool.read_bytes("subsets/resumed/uids.npy") == saved
    assert again["resources"] == first["resources"]
    run(pool, FilterConfig(spec=str(spec), name="resumed"), rerun=True, quiet=True)
    assert trained == [30]
    spec.write_text(spec.read_text().replace("gt: 5", "gt: 25"))  # fewer k-means points
    fewer = run(pool, FilterConfig(spec=str(spec), name="resumed"), quiet=True)
    assert trained == [30, 30]
    assert fewer["resources"][0]["kmeans_points"] < first["resources"][0]["kmeans_points"]
