"""Malformed specs: each gives one precise `file:line: key: expected` message, before data is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.errors import ConfigError
from curate.pool import Pool
from curate.stages.dedup.embeddings import embedding_array
from curate.stages.filter import prepare
from curate.stages.filter.spec import load_spec
from curate.testing.pool import make_score_pool

FILTERS = Path(__file__).resolve().parent.parent / "filters"


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name: x\nconditions:\n  - {column: a, gt: 1, lt: 2}\n",
         ":3: conditions[0]: expected exactly one operator of gt, ge, lt, le, eq, ne, between, in, not_in, "
         "top_fraction, bottom_fraction, top_count, bottom_count; got gt, lt"),
        ("name: x\nconditions:\n  - column: a\n", ":3: conditions[0]: expected exactly one operator"),
        ("name: x\nconditions:\n  - column: a\n    top_fraction: 1.5\n",
         ":4: conditions[0].top_fraction: Input should be less than or equal to 1 (got 1.5)"),
        ("name: x\nconditions:\n  - {column: a, between: [3, 1]}\n",
         ":3: conditions[0].between: expected [low, high] with low <= high, got [3, 1]"),
        ("name: x\nconditions:\n  - {column: a, gt: 1, colour: red}\n", ":3: conditions[0].colour: unknown key"),
        ("name: x\nconditions:\n  - {frobnicate: 1}\n",
         ":3: conditions[0]: expected a mapping with exactly one of the keys column, not_duplicate, all, any, not"),
        ("name: x\nconditions:\n  - any:\n      - {column: a, eq: 1}\n      - {column: b, in: []}\n",
         ":5: conditions[0].any[1].in: List should have at least 1 item"),
        ("name: x\nconditions:\n  - not: {column: a, ge: [1]}\n",
         ":3: conditions[0].not.ge: expected a number (got [1])"),
        ("conditions: []\n", ":1: name: required key is missing"),
        ("name: has space\nconditions: []\n", ":1: name: not a valid name (one path segment"),
        ("name: x\nconditions:\n  - {column: a, gt: 1, within: survivors}\n",
         ":3: conditions[0]: 'within' applies only to top_fraction / bottom_fraction"),
        ("name: x\nconditions:\n  - all:\n      - {column: a, top_fraction: 0.1, within: survivors}\n",
         ":4: conditions[0].all[0].within: 'within: survivors' is allowed only on a top-level condition"),
        ("name: x\nconditions: {column: a}\n", ":2: conditions: Input should be a valid list"),
        ("- just\n- a list\n", ":1: (top level): expected a mapping"),
        ("name: x\nconditions: [\n", ":3: invalid YAML"),
        ("name: x\nconditions:\n  - {column: a, gt: one}\n", ":3: conditions[0].gt: expected a number (got 'one')"),
        ("name: x\nconditions:\n  - {column: a, eq: [1]}\n",
         ":3: conditions[0].eq: expected a number or a string (got [1])"),
    ],
)
@pytest.mark.fault("filter", "malformed filter specs (unknown operator, wrong types, missing keys, bad fractions, …)", "one message naming file, line, key and what was expected")  # noqa: E501 - one row of docs/reliability.md
def test_malformed_spec_message(tmp_path: Path, body: str, expected: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert f"{path}{expected}" in str(err.value) if expected.startswith(":") else expected in str(err.value)


def test_include_resolves_relative_and_reports_errors_in_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "name: inner\nconditions:\n  - {column: a, gt: 1}\n", "inner.yaml")
    outer = _write(tmp_path, "name: outer\nconditions:\n  - include: sub/inner.yaml\n  - any:\n"
                             "      - include: sub/inner.yaml\n")
    spec, _ = load_spec(outer)
    assert [c.label() for c in spec.conditions] == ["a > 1", "any(include sub/inner.yaml)"]
    _write(tmp_path / "sub", "name: inner\nconditions:\n  - {column: a, gt: one}\n", "inner.yaml")
    with pytest.raises(ConfigError) as err:
        load_spec(outer)
    assert f"{tmp_path / 'sub' / 'inner.yaml'}:3: conditions[0].gt:" in str(err.value)
    assert f"(included from {outer}:3)" in str(err.value)


@pytest.mark.fault("filter", "an include cycle or a missing included spec", "an error showing the chain / the missing file")  # noqa: E501 - one row of docs/reliability.md
def test_include_cycle_and_missing_file(tmp_path: Path) -> None:
    _write(tmp_path, "name: a\nconditions:\n  - include: b.yaml\n", "a.yaml")
    _write(tmp_path, "name: b\nconditions:\n  - all:\n    - include: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match=r"include cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_spec(tmp_path / "a.yaml")
    missing = _write(tmp_path, "name: c\nconditions:\n  - include: nope.yaml\n", "c.yaml")
    with pytest.raises(ConfigError, match=rf"{missing}:3: conditions\[0\].include: included spec not found"):
        load_spec(missing)


@pytest.mark.fault("filter", "an include bomb: 9 spec files, each including the next 10 times (10^8 loads)",
                   "refused after 256 spec files, naming the file")
def test_include_bomb_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "name: s9\nconditions:\n  - {column: a, gt: 1}\n", "s9.yaml")
    for i in range(8, -1, -1):
        body = "".join(f"  - include: s{i + 1}.yaml\n" for _ in range(10))
        _write(tmp_path, f"name: s{i}\nconditions:\n{body}", f"s{i}.yaml")
    with pytest.raises(ConfigError, match=r"s\d.yaml: more than 256 spec files included in all"):
        load_spec(tmp_path / "s0.yaml")
    _write(tmp_path, "name: ok\nconditions:\n" + "  - include: s9.yaml\n" * 200, "ok.yaml")
    spec, _ = load_spec(tmp_path / "ok.yaml")
    assert len(spec.conditions) == 200


def test_pool_checks_name_columns_types_and_dedup(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    make_score_pool(pool, 1, 50, seed=1, scorers=("b32", "language"))
    spec = _write(tmp_path, "name: x\nconditions:\n  - {column: clip_l14_similarity_score, top_fraction: 0.3}\n"
                            "  - {column: lang, gt: 3}\n  - {column: lang, eq: 1}\n  - {not_duplicate: phash}\n")
    with pytest.raises(ConfigError) as err:
        prepare(pool, spec)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{spec}:3: conditions[0].column: unknown column 'clip_l14_similarity_score'; "
                               "columns that exist: caption, caption_fasttext_tokens, caption_num_chars, "
                               "caption_num_words, "
                               "clip_b32_similarity_score, height, lang, lang_en_score, lang_score,")
    assert lines[1] == f"{spec}:4: conditions[1].gt: gt needs a numeric column; 'lang' is string"
    assert lines[2] == f"{spec}:5: conditions[2].eq: expected string value(s) for column 'lang' (string), got 1"
    assert lines[3] == (f"{spec}:6: conditions[3].not_duplicate: no dedup table dedup/phash.parquet in the pool; "
                        "methods that exist: exact")


@pytest.mark.parametrize("spec_file", sorted(FILTERS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_validate_against_a_pool(tmp_path: Path, spec_file: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    for sid in make_score_pool(pool, 1, 20, seed=0):
        # The image-based specs read a clip scorer's embeddings/l14/.
        uids = pool.read_parquet(f"scores/l14/{sid}.parquet", columns=["uid"])["uid"]
        emb = embedding_array(np.ones((len(uids), 4), np.float32))
        pool.write_parquet(f"embeddings/l14/{sid}.parquet", pa.table({"uid": uids, "image_embedding": emb}))
    spec, _, _ = prepare(pool, spec_file)
    assert spec.name == spec_file.stem
    assert spec.description
