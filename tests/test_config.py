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
