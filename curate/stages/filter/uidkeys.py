"""Vectorised views of 32-hex uids as two uint64 halves (DataComp's uids.npy layout).

curate.uid.uids_to_npy_array converts uid by uid in Python; on millions of kept uids that and a
string sort dominate the filter's merge step. Lowercase 32-hex uids (what make_uid writes) decode
here straight from the Arrow string buffers, and their numeric order equals their string order,
so one integer sort gives both the sorted uids.parquet and the sorted uids.npy. Anything else
(other lengths, upper case, non-hex) returns None and callers take the general path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.uid import UID_DTYPE

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
