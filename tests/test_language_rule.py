"""The lenient English rule: the language scorer's lang_en_score, the caption benchmark, the shipped specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from curate.scorers.language import LABEL_PREFIX, LanguageConfig, LanguageScorer
from curate.stages.filter.evaluate import EvalContext, apply_to_table
from curate.stages.filter.spec import ColumnCondition, FilterSpec, load_spec
from curate.testing.langbench import LENGTH_BINS, _emoji_names, benchmark, length_bin

FILTERS = Path(__file__).resolve().parent.parent / "filters"
RUSSIAN = "Фотография маленького красного дома у реки"


@pytest.fixture(scope="module")
def scorer() -> LanguageScorer:
    s = LanguageScorer(LanguageConfig())
    s.setup()
    return s


def _table(scorer: LanguageScorer, texts: list[str]) -> pa.Table:
    out = scorer({"caption": np.array(texts, dtype=object)})
    return pa.table({"uid": [f"{i:032x}" for i in range(len(texts))], "lang": out["lang"].tolist(),
                     "lang_score": out["lang_score"], "lang_en_score": out["lang_en_score"]})


def _keep(spec_file: str, table: pa.Table) -> np.ndarray:
    return apply_to_table(load_spec(FILTERS / spec_file)[0], EvalContext(), table)


def test_english_probability_on_planted_captions(scorer: LanguageScorer) -> None:
    assert scorer.columns() == ["lang", "lang_score", "lang_en_score"]
    table = _table(scorer, ["red apple emoji", RUSSIAN, "A photograph of a small red house next to the river"])
    # lid.176.ftz puts "red apple emoji" in Russian (DataComp's rule drops it), with English among its top labels.
    assert table["lang"].to_pylist() == ["ru", "ru", "en"]
    en = table["lang_en_score"].to_numpy()
    assert en.dtype == np.float32
    assert en[0] >= 0.03 and en[1] < 0.001 and en[2] == table["lang_score"].to_numpy()[2]
    assert _keep("english_lenient.yaml", table).tolist() == [True, False, True]
    assert _keep("datacomp_basic.yaml", table.append_column("caption_num_words", pa.array([3, 7, 10]))
                 .append_column("caption_num_chars", pa.array([15, 42, 51]))
                 .append_column("shorter_side", pa.array([256] * 3))
                 .append_column("side_ratio", pa.array([1.0] * 3))).tolist() == [False, False, True]


def test_other_target_and_top_k(scorer: LanguageScorer) -> None:
    ru = LanguageScorer(LanguageConfig(target="ru", top_k=3))
    out = ru({"caption": np.array([RUSSIAN, "red apple emoji"], dtype=object)})
    assert ru.columns() == ["lang", "lang_score", "lang_ru_score"]
    assert out["lang_ru_score"][0] == out["lang_score"][0]
    # Absent from the top 1: 0, not its probability.
    one = LanguageScorer(LanguageConfig(top_k=1))({"caption": np.array(["red apple emoji"], dtype=object)})
    assert one["lang_en_score"][0] == 0.0
    for bad in ("EN", "english", ""):
        with pytest.raises(ValidationError):
            LanguageConfig(target=bad)
    with pytest.raises(ValidationError):
        LanguageConfig(top_k=0)


def test_lang_and_lang_score_are_fasttexts_top_1(scorer: LanguageScorer) -> None:
    """Asking fastText for 10 labels leaves the top-1 label and probability DataComp's rule reads as they were."""
    texts = [c.text for c in benchmark(5, per_bin=200)] + ["", "a\u00a0photo of\na cat", "12345"]
    out = scorer({"caption": np.array(texts, dtype=object)})
    predict = scorer._model.f.predict
    top1 = [predict(t.replace("\n", " ") + "\n", 1, 0.0, "replace") for t in texts]
    assert out["lang"].tolist() == [f[0][1][len(LABEL_PREFIX):] if f else "" for f in top1]
    expected = np.array([min(f[0][0], 1.0) if f else 0.0 for f in top1], np.float32)
    assert out["lang_score"].tobytes() == expected.tobytes()


def test_benchmark_is_deterministic_and_halves_are_disjoint() -> None:
    a, b = benchmark(3, per_bin=60), benchmark(3, per_bin=60)
    assert a == b
    assert a != benchmark(4, per_bin=60)
    for english in (True, False):
        for low, high in LENGTH_BINS:
            rows = [c for c in a if (c.lang == "en") == english and low <= c.words <= high]
            assert len(rows) == 60, (english, low)
    assert {c.lang for c in a} == {"en", "de", "es", "fr", "it", "pt", "ru", "tr", "id", "fa", "ar", "ko", "ja", "zh"}
    tune, held = (_emoji_names(split) for split in ("tune", "eval"))
    assert not {str(r["en"]) for r in tune} & {str(r["en"]) for r in held}
    assert len(tune) + len(held) == len(_emoji_names("all"))


def test_lenient_rule_on_the_held_out_half(scorer: LanguageScorer) -> None:
    """english_lenient.yaml's p and q were chosen on seed 0 of the 'tune' half; this is seed 1 of the other."""
    captions = benchmark(1, per_bin=400, split="eval")
    table = _table(scorer, [c.text for c in captions])
    english = np.array([c.lang == "en" for c in captions])
    keep = _keep("english_lenient.yaml", table)
    top1 = np.array(table["lang"].to_pylist()) == "en"
    assert keep[english].mean() >= 0.95
    assert 1 - keep[~english].mean() >= 0.85
    assert keep[english].mean() - top1[english].mean() >= 0.15  # what the rule is for
    words = np.array([c.words for c in captions])
    long = words >= 3  # what curate_basic's "> 2 words" lets through
    assert keep[english & long].mean() >= 0.97 and 1 - keep[~english & long].mean() >= 0.88
    bins = np.array([length_bin(w) for w in words])
    for b in ("4-5", "6-10"):
        assert 1 - keep[~english & (bins == b)].mean() >= 0.90, b


def test_curate_basic_is_datacomp_basic_with_the_lenient_english_rule() -> None:
    datacomp, _ = load_spec(FILTERS / "datacomp_basic.yaml")
    curate, _ = load_spec(FILTERS / "curate_basic.yaml")
    lenient, _ = load_spec(FILTERS / "english_lenient.yaml")
    # DataComp's rule stays fastText top-1 == en, no threshold.
    assert datacomp.conditions[0] == ColumnCondition(column="lang", eq="en", name="English (fastText)")
    assert curate.conditions == lenient.conditions + datacomp.conditions[1:]
    assert isinstance(curate, FilterSpec) and curate.name == "curate_basic"
