"""DataComp's text-based baseline: a caption word whose first WordNet synset is in a synset list.

DataComp (baselines/apply_filter.py, does_contain_text_entity) keeps a caption when, for some
`word in text.split()`, `wordnet.synsets(word)[0].offset()` is in the ImageNet-21k list (the
list's `n########` ids with the `n` dropped: offsets only, so a verb or adjective synset whose
offset equals a listed noun offset matches too). nltk's `synsets(word)` lowercases the word,
tries the parts of speech in the order noun, verb, adjective, adverb, and for the first one
where morphy finds a form in WordNet's index returns that form's senses in index order; the first
of them is sense 1 of that form. This module reads WordNet's own dict files (index.*, *.exc) and
reproduces exactly that choice, for the two morphy versions nltk has shipped:

- "nltk-3.8" (nltk <= 3.8.1, what DataComp ran in 2023): an exception-list entry returns
  [word] + its base forms; otherwise the suffix rules are applied once, and if no result is in
  the index, applied again to the results until something matches or nothing is left;
- "nltk-3.9" (nltk >= 3.8.2): exception entries or one application of the rules, never more.

Python runs once per distinct token of a shard (a cache spans shards), not once per caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import ConfigError

POS_ORDER = ("n", "v", "a", "r")  # nltk's POS_LIST
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# nltk's WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS, in its order.
SUBSTITUTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}
MORPHY_VERSIONS = ("nltk-3.8", "nltk-3.9")


@dataclass
class WordNet:
    """The parts of WordNet nltk's synsets() reads: sense-1 offset per (lemma, pos), exception lists."""

    first_offset: dict[str, dict[str, int]]
    exceptions: dict[str, dict[str, list[str]]]

    @classmethod
    def load(cls, root: str | Path) -> WordNet:
        root = Path(root)
        first: dict[str, dict[str, int]] = {}
        exceptions: dict[str, dict[str, list[str]]] = {}
        for pos, suffix in _FILES.items():
            index = root / f"index.{suffix}"
            exc = root / f"{suffix}.exc"
            for path in (index, exc):
                if not path.is_file():
                    raise ConfigError(f"{path}: WordNet file not found (expected WordNet 3.0 dict files: "
                                      "index.noun ... adv.exc, e.g. Debian's wordnet-base in /usr/share/wordnet)")
            with index.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.startswith(" "):  # the licence header
                        continue
                    parts = line.split()
                    try:
                        lemma, line_pos, n_synsets, n_pointers = parts[0], parts[1], int(parts[2]), int(parts[3])
                        offsets_at = 4 + n_pointers + 2
                        offset = int(parts[offsets_at])
                    except (IndexError, ValueError):
                        raise ConfigError(f"{index}:{lineno}: not a WordNet index line") from None
                    if n_synsets > 0:
                        first.setdefault(lemma, {})[line_pos] = offset
            table: dict[str, list[str]] = {}
            with exc.open(encoding="utf-8") as fh:
                for line in fh:
                    terms = line.split()
                    if terms:
                        table[terms[0]] = terms[1:]
            exceptions[pos] = table
        return cls(first, exceptions)

    def _filter(self, forms: list[str], pos: str) -> list[str]:
        out: list[str] = []
        for form in forms:
            if pos in self.first_offset.get(form, ()) and form not in out:
                out.append(form)
        return out

    def morphy(self, form: str, pos: str, version: str) -> list[str]:
        """nltk's WordNetCorpusReader._morphy(form, pos) with check_exceptions=True."""
        subs = SUBSTITUTIONS[pos]

        def apply_rules(forms: list[str]) -> list[str]:
            out = [f[: -len(old)] + new for f in forms for old, new in subs if f.endswith(old)]
            # Dropping repeats keeps the first of each form, which is all filter_forms looks at; it
            # bounds the otherwise exponential growth of the repeated application on long tokens.
            return list(dict.fromkeys(out))

        exceptions = self.exceptions[pos]
        if version == "nltk-3.9":
            forms = exceptions[form] if form in exceptions else apply_rules([form])
            return self._filter([form, *forms], pos)
        if form in exceptions:
            return self._filter([form, *exceptions[form]], pos)
        forms = apply_rules([form])
        results = self._filter([form, *forms], pos)
        while not results and forms:
            forms = apply_rules(forms)
            results = self._filter(forms, pos)
        return results

    def first_synset_offset(self, word: str, version: str) -> int | None:
        """`wordnet.synsets(word)[0].offset()`, or None when synsets() is empty."""
        lemma = word.lower()
        for pos in POS_ORDER:
            forms = self.morphy(lemma, pos, version)
            if forms:
                return self.first_offset[forms[0]][pos]
        return None


def read_synset_ids(path: str | Path) -> frozenset[int]:
    """DataComp's entity list: one WordNet id per line (`n01440764`); the offset is the part after
    the first character (`int(x[1:])`), whatever that character is."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: synset list not found")
    ids = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            try:
                ids.add(int(text[1:]))
            except ValueError:
                raise ConfigError(f"{path}:{lineno}: expected a WordNet id like n01440764, got {text!r}") from None
    return frozenset(ids)


@dataclass
class SynsetMatcher:
    """Everything a shard task needs to evaluate a caption_synsets condition."""

    wordnet: WordNet
    synsets: frozenset[int]
    morphy: str
    _cache: dict[str, bool] = field(default_factory=dict, repr=False)

    def word_matches(self, word: str) -> bool:
        hit = self._cache.get(word)
        if hit is None:
            offset = self.wordnet.first_synset_offset(word, self.morphy)
            hit = self._cache[word] = offset is not None and offset in self.synsets
        return hit

    def __getstate__(self) -> dict[str, object]:
        return {"wordnet": self.wordnet, "synsets": self.synsets, "morphy": self.morphy, "_cache": {}}

    def mask(self, captions: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per caption: does some whitespace-separated word (str.split()) match? A null caption does not."""
        if isinstance(captions, pa.ChunkedArray):
            captions = captions.combine_chunks() if captions.num_chunks else pa.array([], pa.string())
        n = len(captions)
        # utf8_split_whitespace splits at the same code points as str.split(); runs of whitespace leave
        # empty tokens, which never match (WordNet has no empty lemma).
        tokens = pc.utf8_split_whitespace(captions)
        flat = pc.list_flatten(tokens)
        parents = np.asarray(pc.list_parent_indices(tokens))
        distinct = pc.unique(flat)
        hits = [w for w in distinct.to_pylist() if self.word_matches(w)]
        found = np.asarray(pc.is_in(flat, value_set=pa.array(hits, pa.string())).fill_null(False), dtype=bool)
        out = np.zeros(n, dtype=bool)
        out[parents[found]] = True
        return out
