"""Helpers for tests, benchmarks and the demo; not pipeline code.

No pipeline module imports this package (tests/test_testing_package.py checks it); only
curate.demo, tests/ and benchmarks/ do.

- `http`: a threaded HTTP server on 127.0.0.1 with scriptable routes (slow, broken, redirects).
- `synthetic`: coloured-shape images with captions that describe them.
- `synthetic_set`: a generated high-quality set of those shapes as webdataset tars or Parquet.
- `pool`: a pool of score tables, as download and the scorers would have written it.
- `metadata`: DataComp-format metadata parquets and .npz embeddings.
- `watgen`: WAT files shaped like Common Crawl's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def random_hex(rng: np.random.Generator, n: int, nbytes: int = 16) -> pa.Array:
    """n random lowercase hex strings of 2 * nbytes characters (16 bytes: a uid), without a Python loop."""
    raw = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    chars = np.empty((n, 2 * nbytes), np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, (n + 1) * 2 * nbytes, 2 * nbytes, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
