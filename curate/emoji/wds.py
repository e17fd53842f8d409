"""Deterministic webdataset tar shards: members in key order, zero mtimes and owners, so the same
samples give the same bytes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


class ShardWriter:
    """Writes samples ({ext: bytes}) into <out>/<prefix>-00000.tar, ... of per_shard samples each."""

    def __init__(self, out_dir: str | Path, per_shard: int = 1000, prefix: str = "shard") -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.per_shard, self.prefix = per_shard, prefix
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._count % self.per_shard == 0:
            self.close()
            self._tar = tarfile.open(  # noqa: SIM115 - spans many write() calls; close() and __exit__ end it
                self.out / f"{self.prefix}-{self._count // self.per_shard:05d}.tar", "w",
                format=tarfile.PAX_FORMAT)
        assert self._tar is not None
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
