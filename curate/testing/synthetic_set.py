"""Write a generated high-quality set (curate.testing.synthetic shapes) as webdataset tars or Parquet.

Tests, the demo and the benchmark train DFNs on it: the caption names the colour and shape the
image shows, and each sample's .json carries `class` ("<colour> <shape>") for eval-dfn.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.testing.synthetic import encode, make_samples
from curate.uid import make_uid


def _records(n: int, seed: int) -> list[dict[str, object]]:
    out = []
    for i, s in enumerate(make_samples(n, seed=seed)):
        url = f"synthetic://{seed}/{i}.jpg"
        out.append({"key": f"{seed:03d}{i:06d}", "uid": make_uid(url, s.caption), "caption": s.caption,
                    "class": f"{s.color} {s.shape}", "image": encode(s.image)})
    return out


def write_webdataset(out_dir: str | Path, n: int, *, seed: int = 0, per_shard: int = 1000) -> list[Path]:
    """`n` pairs in tars of `per_shard` samples: {key}.jpg, {key}.txt, {key}.json (uid, caption, class)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, paths = _records(n, seed), []
    for shard, start in enumerate(range(0, n, per_shard)):
        path = out / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for r in records[start:start + per_shard]:
                meta = {k: r[k] for k in ("uid", "caption", "class")}
                for ext, data in (("jpg", r["image"]), ("txt", str(r["caption"]).encode()),
                                  ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{r['key']}.{ext}")
                    info.size = len(data)  # type: ignore[arg-type]
                    tar.addfile(info, io.BytesIO(data))  # type: ignore[arg-type]
        paths.append(path)
    return paths


def write_parquet(path: str | Path, n: int, *, seed: int = 0) -> Path:
    """`n` pairs in one Parquet file: uid, caption, class, jpg (encoded bytes)."""
    records = _records(n, seed)
    table = pa.table({"uid": [r["uid"] for r in records], "caption": [r["caption"] for r in records],
                      "class": [r["class"] for r in records],
                      "jpg": pa.array([r["image"] for r in records], pa.binary())})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return Path(path)
