from __future__ import annotations

import pytest

from curate.config import PipelineConfig, load_pipeline
from curate.errors import ConfigError
from curate.uid import make_uid, npy_array_to_uids, uids_to_npy_array


def test_valid_pipeline_loads(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: t\npool: /tmp/pool\ndownload:\n  image_size: 256\n")
    cfg = load_pipeline(path)
    assert isinstance(cfg, PipelineConfig) and cfg.download.image_size == 256 and cfg.score is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool: /p\ndownload:\n  image_size: big\n", "p.yaml:3: download.image_size: Input should be a valid integer"),
        ("pool: /p\ndownload:\n  imagesize: 3\n", "p.yaml:3: download.imagesize: unknown key"),
        ("name: x\n", "p.yaml:1: pool: required key is missing"),
        ("pool: /p\ndownload:\n  timeout: -1\n", "p.yaml:3: download.timeout: Input should be greater than 0"),
        ("pool: [unclosed\n", "p.yaml:2: invalid YAML"),
        ("- a\n- b\n", "p.yaml:1: expected a mapping"),
    ],
)
@pytest.mark.fault("config", "malformed pipeline YAML (bad type, unknown key, missing key, out of range, broken YAML)", "one line naming file, line, key and what was expected, before any work")  # noqa: E501 - one row of docs/reliability.md
def test_bad_config_is_one_precise_line(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert expected in str(info.value)


def _laughs(levels: int, top: str) -> str:
    """A "billion laughs" document: each level is 9 aliases of the one before, so 9**levels strings."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{top}: *l{levels - 1}\n"


def _pipeline(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_pipeline(path)


def _spec(tmp_path, text):
    from curate.stages.filter.spec import load_spec

    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_spec(path)


HOSTILE_YAML = {
    # 9 levels of 9 aliases in ~500 bytes: 387M strings once expanded (old: >90 s and gigabytes)
    # The budget runs out at the first alias of l4 (l1..l3 add 90 + 819 + 7380 nodes).
    "billion laughs": (_laughs(9, "conditions"), ":5: invalid YAML: aliases expand to more than 10000 nodes"),
    "9^5 expansion": (_laughs(5, "conditions"), ":5: invalid YAML: aliases expand to more than 10000 nodes"),
    "recursive alias": ("pool: &a [x, *a]\nconditions: &b [*b]\n", ":1: invalid YAML: alias *a refers to a node"),
    "20,000-deep nesting": ("conditions: " + "[" * 20_000 + "]" * 20_000 + "\n",
                            ":1: invalid YAML: nested deeper than 64 levels"),
    "duplicate key": ("name: x\npool: /a\nconditions: []\npool: /b\n",
                      ":4: invalid YAML: duplicate key 'pool' (first on line 2)"),
    "duplicate nested key": ("pool: /p\ndownload: {timeout: 1, retries: 2, timeout: 3}\n",
                             ":2: invalid YAML: duplicate key 'timeout' (first on line 2)"),
    "over 4 MiB": ("name: x\n" + "# padding\n" * 420_000, "p.yaml: larger than 4 MiB"),
}


@pytest.mark.parametrize("loader", [_pipeline, _spec], ids=["pipeline", "spec"])
@pytest.mark.parametrize("case", list(HOSTILE_YAML))
@pytest.mark.fault("config", "hostile YAML in a config or spec: alias bomb (billion laughs, 9^5), recursive alias, "
                   "20,000-deep nesting, duplicate keys, a 4 MiB+ file, a 100 KB value",
                   "refused while parsing, before anything expands: one short line naming file:line")
def test_hostile_yaml_is_one_short_line(tmp_path, loader, case):
    text, expected = HOSTILE_YAML[case]
    with pytest.raises(ConfigError) as info:
        loader(tmp_path, text)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and len(message) < 300, message[:500]


@pytest.mark.parametrize(("loader", "text", "expected"), [
    (_pipeline, "pool: /p\ndownload:\n  timeout: " + "x" * 100_000 + "\n",
     ":3: download.timeout: Input should be a valid number, unable to parse string as a number (got 'xxx"),
    (_spec, "name: x\ndescription: d\nconditions:\n  - {column: a, gt: " + "x" * 100_000 + "}\n",
     ":4: conditions[0].gt: expected a number (got 'xxx"),
    (_spec, "name: x\ndescription: d\nconditions:\n  - [" + ", ".join(["lol"] * 9 ** 5) + "]\n",
     ":4: conditions[0]: expected a mapping with exactly one of the keys"),
], ids=["pipeline value", "spec value", "spec list"])
@pytest.mark.fault("config", "a 100 KB value or a 59,049-item list where a number or a mapping belongs",
                   "one line, the value cut to 80 characters")
def test_long_values_are_cut_in_errors(tmp_path, loader, text, expected):
    with pytest.raises(ConfigError) as info:
        loader(tmp_path, text)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and len(message) < 400, message[:500]


def test_yaml_merge_keys_and_small_aliases_still_load(tmp_path):
    cfg = _pipeline(tmp_path, "pool: &p /p\nname: *p\ndownload: {timeout: 5, retries: 1}\n")
    assert cfg.name == "/p" and cfg.download.timeout == 5
    spec, _ = _spec(tmp_path, "name: m\ndescription: d\nconditions:\n  - &c {column: a, gt: 1}\n  - any: [*c, *c]\n")
    assert len(spec.conditions) == 2
    from curate.yamlconf import parse_yaml

    data, _ = parse_yaml("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  y: 3\n")
    assert data["b"] == {"x": 1, "y": 3}  # an explicit key overriding a merged one is not a duplicate


BAD_NAMES = {
    # key: (section YAML after "pool: /p", the line and key the error must name)
    "scorer name": ("score:\n  scorers:\n    - type: text_stats\n      name: ../../X\n", ":5: score.scorers[0].name"),
    "dedup name": ("dedup:\n  methods:\n    - {method: exact, name: ..}\n", ":4: dedup.methods[0].name"),
    "dedup embeddings": ("dedup:\n  methods:\n    - method: semantic\n      embeddings: ../clip\n",
                         ":5: dedup.methods[0].embeddings"),
    "perceptual scorer": ("dedup:\n  methods:\n    - method: perceptual\n      scorer: /abs\n",
                          ":5: dedup.methods[0].scorer"),
    "filter name": ("filter:\n  name: .hidden\n", ":3: filter.name"),
    "balance name": ("balance:\n  name: ..\n", ":3: balance.name"),
    "balance language scorer": ("balance:\n  language_scorer: a/b\n", ":3: balance.language_scorer"),
    "export name": ("export:\n  name: ../x\n", ":3: export.name"),
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
@pytest.mark.fault("config", "a name that becomes a pool path is '../../X', '..', '/abs', '.hidden' or 'a/b' "
                   "(scorer, dedup, filter, balance, export names and the names they read)",
                   "one line naming file:line and key; nothing is written")
def test_names_that_become_paths_are_one_path_segment(tmp_path, case):
    section, expected = BAD_NAMES[case]
    with pytest.raises(ConfigError) as info:
        _pipeline(tmp_path, "pool: /p\n" + section)
    message = str(info.value)
    assert expected + ": not a valid name (one path segment" in message and "\n" not in message


@pytest.mark.fault("filter/dfn/balance/export", "a spec name, --name, a dfn pool subset or a balance subset "
                   "that leaves the pool ('../x')", "ConfigError before anything is read or written")
def test_names_from_specs_and_options_are_checked(tmp_path):
    from curate.dfn.config import load_dfn_config
    from curate.pool import Pool
    from curate.stages.balance import _subset_uids
    from curate.stages.filter import prepare

    with pytest.raises(ConfigError, match=r"p.yaml:1: name: not a valid name"):
        _spec(tmp_path, "name: ../x\nconditions: []\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: ok\nconditions: []\n")
    with pytest.raises(ConfigError, match=r"filter: subset name: '\.\./x' is not a valid name"):
        prepare(Pool(str(tmp_path / "pool")), spec, "../x")
    with pytest.raises(ConfigError, match=r"balance: subset: '\.\./x' is not a valid name"):
        _subset_uids(Pool(str(tmp_path / "pool")), "subsets/../x")
    path = tmp_path / "t.yaml"
    path.write_text("data: {kind: pool_subset, pool: /p, subset: ../../x}\nmodel: {name: curate-tiny, "
                    "from_scratch: true}\noutput_dir: /o\n")
    with pytest.raises(ConfigError, match=r"t.yaml:1: data.subset: not a valid name"):
        load_dfn_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_uid_is_deterministic_and_npy_roundtrips():
    a = make_uid("http://x/a.jpg", "a cat")
    assert a == make_uid("http://x/a.jpg", "a cat") and len(a) == 32 and a == a.lower()
    assert a != make_uid("http://x/a.jpg", "a dog") and a != make_uid("http://x/a.jp", "ga cat")
    uids = [make_uid(f"u{i}", "t") for i in range(50)]
    arr = uids_to_npy_array(uids)
    assert arr.dtype.names == ("f0", "f1")
    back = npy_array_to_uids(arr)
    assert sorted(back) == sorted(uids) and back == sorted(uids)  # sorted by (hi, lo) == hex order


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("shard_timeout: .inf", "download.shard_timeout: Input should be a finite number"),
        ("shard_timeout: .nan", "download.shard_timeout: Input should be a finite number"),
        ("shard_timeout: 1.0e+12", "download.shard_timeout: Input should be less than or equal to 2592000"),
        ("timeout: .inf", "download.timeout: Input should be a finite number"),
    ],
)
@pytest.mark.fault("config", "download.shard_timeout / timeout of .inf, .nan or past what a thread wait can take", "one-line config error naming the key, instead of an OverflowError failing every shard")  # noqa: E501 - one row of docs/reliability.md
def test_download_timeouts_must_be_finite(tmp_path, value, expected):
    path = tmp_path / "p.yaml"
    path.write_text(f"pool: /p\ndownload:\n  {value}\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert f"p.yaml:3: {expected}" in str(info.value)
    assert "\n" not in str(info.value)
