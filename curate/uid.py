"""Sample identity: a 128-bit uid from (image url, caption), and DataComp's uid arrays."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError, PoolError

UID_DTYPE = np.dtype("u8,u8")
UID_PATTERN = "^[0-9a-f]{32}$"


def make_uid(url: str, text: str) -> str:
    """32 lowercase hex characters, stable across runs, machines and Python versions."""
    h = hashlib.blake2b(digest_size=16)
    h.update(url.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def check_uids(uids: pa.Array | pa.ChunkedArray, where: str, error: type[CurateError] = PoolError) -> None:
    """Raise `error` (one line naming `where`) unless every uid is 32 lowercase hex characters.

    Called where uids enter curate (candidates read by download, shard tables, uid lists), so a
    malformed one is named there instead of passing score and dedup and crashing a later merge."""
    if not (pa.types.is_string(uids.type) or pa.types.is_large_string(uids.type)):
        raise error(f"{where}: the uid column is {uids.type}, not strings of 32 lowercase hex characters")
    bad = pc.invert(pc.match_substring_regex(pc.fill_null(uids, ""), UID_PATTERN))
    n_bad = int(pc.sum(pc.cast(bad, pa.int64())).as_py() or 0)
    if n_bad:
        first = pc.filter(uids, bad)[0].as_py()
        raise error(f"{where}: {n_bad} uid(s) are not 32 lowercase hex characters, e.g. {first!r}")


def uids_to_npy_array(uids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """DataComp's subset format: a sorted structured array of two uint64 halves of each uid."""
    if isinstance(uids, pa.ChunkedArray | pa.Array):
        uids = uids.to_pylist()
    raw = np.frombuffer(b"".join(bytes.fromhex(u) for u in uids), dtype=">u8")
    out = np.empty(len(raw) // 2, dtype=UID_DTYPE)
    out["f0"] = raw[0::2]
    out["f1"] = raw[1::2]
    out.sort(order=["f0", "f1"])
    return out


def npy_array_to_uids(arr: np.ndarray) -> list[str]:
    """Inverse of uids_to_npy_array (order preserved)."""
    halves = np.empty(len(arr) * 2, dtype=">u8")
    halves[0::2] = arr["f0"] if arr.dtype.names else arr[:, 0]
    halves[1::2] = arr["f1"] if arr.dtype.names else arr[:, 1]
    hexed = halves.tobytes().hex()
    return [hexed[i : i + 32] for i in range(0, len(hexed), 32)]
