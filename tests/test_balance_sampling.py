"""Balancing arithmetic: tail fraction ↔ t, keep probabilities, the uid-seeded draw."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.stages.balance.sampling import (
    entry_probabilities,
    keep_probabilities,
    p_to_t,
    t_to_p,
    uniform_draws,
)
from curate.uid import hex_uid_keys, make_uid


def test_t_to_p_is_share_of_matches_on_tail_entries() -> None:
    counts = np.array([1, 2, 3, 4, 90])
    assert t_to_p(4, counts) == pytest.approx(6 / 100)
    assert t_to_p(5, counts) == pytest.approx(10 / 100)
    assert t_to_p(1000, counts) == 1.0
    assert t_to_p(1, counts) == 0.0


def test_p_to_t_is_metaclip2s() -> None:
    """MetaCLIP 2's p_to_t (metaclip/curation/curate.py): the count at the sorted position whose
    inclusive running share of all matches is closest to p (tests/test_fidelity_metaclip.py
    compares it with a transcription on generated counts)."""
    counts = np.array([10, 3, 200, 7, 10, 3, 50, 10])  # sorted: 3 3 7 10 10 10 50 200, total 293
    # running shares: .010 .020 .044 .078 .113 .147 .317 1.0
    assert p_to_t(0.02, counts) == 3
    assert p_to_t(0.12, counts) == 10
    assert p_to_t(0.3, counts) == 50
    assert p_to_t(0.9, counts) == 200
    # Never-matched entries sit at share 0: p closest to 0 gives t = 0, as in MetaCLIP 2.
    assert p_to_t(0.001, np.array([0, 0, 100, 100])) == 0
    assert p_to_t(0.5, np.zeros(4)) == 0


def test_keep_probability_formula() -> None:
    counts = np.array([10, 100, 1000, 0])
    q = entry_probabilities(counts, np.full(4, 100.0))
    assert q.tolist() == [1.0, 1.0, 0.1, 1.0]
    lists = pa.array([[2], [1, 2], [], [2, 2]], pa.list_(pa.int32()))
    p = keep_probabilities(lists, np.array([0.5, 0.2, 0.1, 1.0]))
    assert p == pytest.approx([0.1, 1 - 0.8 * 0.9, 0.0, 1 - 0.81])


def test_uid_keys_decode_hex() -> None:
    uids = [make_uid(f"http://x/{i}", "c") for i in range(5)]
    keys = hex_uid_keys(pa.array(uids))
    for u, (h, low) in zip(uids, keys.tolist(), strict=True):
        assert (h, low) == (int(u[:16], 16), int(u[16:], 16))
    sliced = pa.array(["zz", *uids])[1:]
    assert hex_uid_keys(sliced).tolist() == keys.tolist()
    assert hex_uid_keys(pa.array(["x" * 32])) is None
    with pytest.raises(ValueError):
        uniform_draws(pa.array(["x" * 32]), 0)



def test_draws_are_uniform_reproducible_and_seeded() -> None:
    uids = pa.array([make_uid(f"http://x/{i}", "c") for i in range(20_000)])
    a, b = uniform_draws(uids, 7), uniform_draws(uids, 7)
    assert np.array_equal(a, b)
    assert ((a >= 0) & (a < 1)).all()
    # Kolmogorov-Smirnov distance to U(0,1): 1.63/sqrt(n) is the 1% critical value.
    ks = np.max(np.abs(np.sort(a) - np.arange(1, a.size + 1) / a.size))
    assert ks < 1.63 / np.sqrt(a.size)
    c = uniform_draws(uids, 8)
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.05
    # A sample's draw is a function of its own uid only.
    assert np.array_equal(uniform_draws(uids[100:200], 7), a[100:200])
