"""Sample identity: a 128-bit uid from (image url, caption), and DataComp's uid arrays.

The vectorised views (`hex_uid_keys` and what builds on it) decode lowercase 32-hex uids straight
from Arrow's string buffers as two uint64 halves (DataComp's uids.npy layout); their numeric order
equals their string order, so one integer sort gives both a sorted uids.parquet and uids.npy.
"""

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


_LOWER_HEX = b"0123456789abcdef"

def hex_uid_keys(uids: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """(n, 2) big-endian-decoded uint64 halves of lowercase 32-hex uids, or None if any is not one."""
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    if not (pa.types.is_string(uids.type) or pa.types.is_large_string(uids.type)) or uids.null_count:
        return None
    n = len(uids)
    if n == 0:
        return np.empty((0, 2), dtype=np.uint64)
    offset_type = np.int64 if pa.types.is_large_string(uids.type) else np.int32
    offsets = np.frombuffer(uids.buffers()[1], dtype=offset_type)[uids.offset : uids.offset + n + 1]
    if not (np.diff(offsets) == 32).all():
        return None
    text = uids.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
    # Only lowercase hex: upper case would decode too but sort differently as strings than as numbers.
    if text.translate(None, _LOWER_HEX):
        return None
    raw = bytes.fromhex(text.decode("ascii"))
    return np.frombuffer(raw, dtype=">u8").reshape(n, 2).astype(np.uint64)


def uid_halves(uids: pa.Array, shown: str, first_row: int, error: type[CurateError] = PoolError) -> np.ndarray:
    """(n, 2) big-endian uint64 halves of 32-lowercase-hex uids (byte order = numeric order, so a
    row viewed as S16 sorts like its uid); the first bad uid raises `error` naming its row."""
    keys = hex_uid_keys(uids)
    if keys is not None:
        return keys.astype(">u8")
    for row, uid in enumerate(uids.to_pylist()):  # the error path only: find the row to name
        if uid is None:
            raise error(f"{shown}: row {first_row + row}: uid is null")
        if len(uid) != 32 or uid.translate(str.maketrans("", "", "0123456789abcdef")):
            raise error(f"{shown}: row {first_row + row}: uid {uid!r} is not 32 lowercase hex "
                        "characters (DataComp's and curate's uid format)")
    raise error(f"{shown}: the uid column is {uids.type}, not strings of 32 lowercase hex characters")


def all_unique(uids: pa.Array | pa.ChunkedArray) -> bool:
    """Whether no uid repeats; sorts 64-bit prefixes when it can, hashes strings otherwise."""
    keys = hex_uid_keys(uids)
    if keys is None:
        return int(pc.count_distinct(uids, mode="all").as_py()) == len(uids)
    hi = np.sort(keys[:, 0])
    if not (hi[1:] == hi[:-1]).any():
        return True
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    ordered = keys[order]
    return not (ordered[1:] == ordered[:-1]).all(axis=1).any()


def sorted_uids_and_npy(uids: pa.Array) -> tuple[pa.Array, np.ndarray] | None:
    """The uids in string order and DataComp's sorted (u8, u8) array, from one integer sort."""
    keys = hex_uid_keys(uids)
    if keys is None:
        return None
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    npy = np.empty(len(keys), dtype=UID_DTYPE)
    npy["f0"] = keys[order, 0]
    npy["f1"] = keys[order, 1]
    return uids.take(pa.array(order)), npy
