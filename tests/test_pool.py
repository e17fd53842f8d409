from __future__ import annotations

import os

import pyarrow as pa
import pytest

from curate import layout
from curate.pool import TMP_MARK, Pool


@pytest.fixture(params=["local", "memory"])
def pool(request, tmp_path):
    if request.param == "local":
        return Pool(str(tmp_path / "pool"))
    import uuid

    return Pool(f"memory://pool-{uuid.uuid4().hex}")


def test_write_and_read_roundtrip(pool):
    pool.write_json("reports/x.json", {"a": 1})
    assert pool.read_json("reports/x.json") == {"a": 1}
    table = pa.table({"uid": ["a" * 32, "b" * 32], "v": [1.0, 2.0]})
    pool.write_parquet("scores/s/00000000.parquet", table)
    pool.write_parquet("scores/s/00000001.parquet", table)
    assert pool.read_parquet_dir("scores/s").num_rows == 4
    assert pool.listdir("scores/s") == ["00000000.parquet", "00000001.parquet"]
    assert pool.glob("scores/*/*.parquet") == ["scores/s/00000000.parquet", "scores/s/00000001.parquet"]


def test_markers_and_reports(pool):
    where = layout.markers_dir("stage/name", "pass")
    assert pool.marker_ids(where) == []
    pool.write_json(layout.marker("stage/name", "pass", "00000000"), {"samples": 3})
    pool.write_bytes(layout.marker("stage/name", "pass", "00000001"), b"\x00 not json")
    assert pool.marker_ids(where) == ["00000000", "00000001"]
    good, damaged = pool.read_marker_dir(where)
    assert good == {"00000000": {"samples": 3}} and "not valid JSON" in damaged["00000001"]
    pool.write_json(layout.report("stage"), {"ok": True})
    pool.write_json(layout.report("stage/name"), {"ok": 2})
    assert pool.read_report("stage") == {"ok": True} and pool.read_report("stage/name") == {"ok": 2}
    pool.clear_stage("stage")
    assert pool.marker_ids(where) == [] and pool.read_report("stage") is None
    assert pool.read_report("stage/name") is None


@pytest.mark.fault("pool", "a writer crashes half-way through a shard file", "nothing appears under the final name")
def test_failed_atomic_write_leaves_nothing_visible(tmp_path):
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(RuntimeError), pool.open_atomic("shards/00000000.tar") as fh:
        fh.write(b"partial")
        raise RuntimeError("worker crashed")
    assert not pool.exists("shards/00000000.tar")
    assert pool.listdir("shards") == []


@pytest.mark.fault("pool", "a killed worker leaves a temporary file", "readers never list it; cleanup_temporaries removes it")  # noqa: E501 - one row of docs/reliability.md
def test_temporaries_are_invisible_and_cleaned(tmp_path):
    pool = Pool(str(tmp_path / "pool"))
    pool.write_bytes("shards/00000000.tar", b"done")
    os.makedirs(tmp_path / "pool" / "shards", exist_ok=True)
    (tmp_path / "pool" / "shards" / f"00000001.tar{TMP_MARK}abc").write_bytes(b"half")
    assert pool.listdir("shards") == ["00000000.tar"]
    assert pool.glob("shards/*") == ["shards/00000000.tar"]
    assert pool.cleanup_temporaries() == 1
    assert sorted(os.listdir(tmp_path / "pool" / "shards")) == ["00000000.tar"]


def test_pool_pickles_by_url(tmp_path):
    import pickle

    pool = Pool(str(tmp_path / "pool"))
    clone = pickle.loads(pickle.dumps(pool))
    assert clone.url == pool.url and clone.root == pool.root


@pytest.mark.parametrize("rel", ["../outside.json", "scores/../../outside.json", "/tmp/outside.json"])
@pytest.mark.fault("pool", "a location that leaves the pool (../, an absolute path) from a name or a pool file",
                   "PoolError; nothing read or written outside the pool")
def test_locations_outside_the_pool_are_refused(tmp_path, rel):
    from curate.errors import PoolError

    root = tmp_path / "deep" / "pool"
    pool = Pool(str(root))
    target = rel.replace("/tmp/", str(tmp_path) + "/") if rel.startswith("/") else rel
    with pytest.raises(PoolError, match="not a location inside the pool"):
        pool.write_json(target, {"x": 1})
    with pytest.raises(PoolError, match="not a location inside the pool"):
        pool.exists(target)
    assert not any(p.name == "outside.json" for p in tmp_path.rglob("*"))
