"""Sample identity: a 128-bit uid from (image url, caption), and DataComp's uid arrays."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

UID_DTYPE = np.dtype("u8,u8")


def make_uid(url: str, text: str) -> str:
    """32 lowercase hex characters, stable across runs, machines and Python versions."""
    h = hashlib.blake2b(digest_size=16)
    h.update(url.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


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
