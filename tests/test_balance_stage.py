"""The balance stage over a pool: outputs, statistics, shard invariance, per-language t."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate import layout
from curate.config import BalanceConfig
from curate.errors import ConfigError, PoolError
from curate.pool import Pool
from curate.shards import SHARD_SCHEMA, shard_name
from curate.stages import balance
from curate.stages.balance.matching import brute_force_match
from curate.stages.balance.sampling import p_to_t, t_to_p
from curate.uid import make_uid, npy_array_to_uids

ENTRIES = [f"w{i}" for i in range(40)] + ["w0 w1", "hot dog"]


def zipf_captions(n: int, vocab: list[str], seed: int, exponent: float = 1.3) -> list[str]:
    """Captions of 1-3 vocabulary words with Zipf frequencies (heads and tails), some junk."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(exponent, size=3 * n) - 1, len(vocab) + 9)
    words = [vocab[r] if r < len(vocab) else f"zz{r}" for r in ranks.tolist()]
    lengths = rng.integers(1, 4, size=n)
    out, pos = [], 0
    for k in lengths.tolist():
        out.append(", ".join(words[pos : pos + k]) if k == 3 else " ".join(words[pos : pos + k]))
        pos += k
    return out


def build_pool(root, captions: list[str], n_shards: int, langs: list[str] | None = None,
               failed_every: int = 0) -> Pool:
    """Download shards written directly: SHARD_SCHEMA parquet + markers (+ language scores)."""
    pool = Pool(str(root))
    uids = [make_uid(f"http://img/{i}.jpg", c) for i, c in enumerate(captions)]
    bounds = np.linspace(0, len(captions), n_shards + 1).astype(int)
    for s in range(n_shards):
        lo, hi = bounds[s], bounds[s + 1]
        sid = shard_name(s)
        rows = range(lo, hi)
        status = ["failed_to_download" if failed_every and i % failed_every == 0 else "success" for i in rows]
        table = pa.table({
            "key": [f"{sid}{i:06d}" for i in rows], "uid": uids[lo:hi], "url": [f"http://img/{i}.jpg" for i in rows],
            "caption": captions[lo:hi], "status": status, "error_message": [None] * (hi - lo),
            "width": [64] * (hi - lo), "height": [64] * (hi - lo), "original_width": [64] * (hi - lo),
            "original_height": [64] * (hi - lo), "sha256": ["0" * 64] * (hi - lo),
        }, schema=SHARD_SCHEMA)
        pool.write_parquet(f"shards/{sid}.parquet", table)
        if langs is not None:
            pool.write_parquet(f"scores/language/{sid}.parquet", pa.table(
                {"uid": uids[lo:hi], "lang": langs[lo:hi], "lang_score": [0.9] * (hi - lo)}))
        pool.write_json(layout.download_marker(sid), {"samples": hi - lo})
    return pool


def _metadata(tmp_path, entries=ENTRIES) -> str:
    path = tmp_path / "metadata.txt"
    path.write_text("\n".join(entries) + "\n")
    return str(path)


def test_kept_counts_follow_the_formula(tmp_path, local_executor) -> None:
    captions = zipf_captions(12_000, [e for e in ENTRIES if " " not in e], seed=1)
    pool = build_pool(tmp_path / "pool", captions, 3, failed_every=50)
    t = 150
    report = balance.run(pool, BalanceConfig(metadata=_metadata(tmp_path), t=t, seed=3), quiet=True)

    # Independent computation of c_e and of each sample's keep probability with the brute-force rule.
    ok = [c for i, c in enumerate(captions) if i % 50]
    matches = [brute_force_match(c, ENTRIES) for c in ok]
    counts = np.zeros(len(ENTRIES))
    for m in matches:
        counts[m] += 1
    q = np.minimum(1.0, t / np.maximum(counts, 1))
    p_keep = np.array([1 - np.prod(1 - q[m]) if m else 0.0 for m in matches])
    expected = np.zeros(len(ENTRIES))
    for m, p in zip(matches, p_keep, strict=True):
        expected[m] += p

    table = pool.read_parquet("balanced/balanced/entry_counts.parquet").to_pydict()
    assert table["count"] == counts.astype(int).tolist()
    assert np.allclose(table["expected_after"], expected)
    actual = np.array(table["actual_after"], float)
    # Per entry: a sum of independent Bernoullis; 5 sigma (variance <= expectation) plus slack.
    assert (np.abs(actual - expected) <= 5 * np.sqrt(expected) + 2).all()
    assert (counts > t).sum() >= 5, "the test pool must have head entries"
    head = counts > 3 * t
    assert (actual[head] < counts[head] / 2).all()  # heads are really cut down
    assert report["expected_kept"] == pytest.approx(p_keep.sum(), abs=1e-3)
    assert abs(report["actual_kept"] - p_keep.sum()) <= 5 * np.sqrt(p_keep.sum())
    unmatched = sum(1 for m in matches if not m)
    assert report["match_counts"]["not_success"] == len(captions) - len(ok)
    assert report["match_counts"]["unmatched"] == unmatched
    assert report["sample_counts"]["dropped_unmatched"] == unmatched

    uids = npy_array_to_uids(np.load(pool.open("balanced/balanced/uids.npy")))
    assert uids == pool.read_parquet("balanced/balanced/uids.parquet")["uid"].to_pylist() == sorted(uids)
    assert len(uids) == report["actual_kept"]
    assert report["top_head_entries"][0]["entry"] == "w0"
    # The kept uids are the samples tables' kept rows; no second copy of them is kept.
    samples = pa.concat_tables([pool.read_parquet(layout.balanced_samples("balanced", shard_name(i)))
                                for i in range(3)])
    assert sorted(samples.filter(samples["kept"])["uid"].to_pylist()) == uids
    assert pool.listdir(layout.balanced_work("balanced")) == ["counts", "entry_stats", "matches"]


@pytest.mark.ray
def test_identical_output_for_1_3_and_7_shards(tmp_path, ray_runtime) -> None:
    captions = zipf_captions(3_000, [e for e in ENTRIES if " " not in e], seed=2)
    outputs = []
    for n in (1, 3, 7):
        pool = build_pool(tmp_path / f"pool{n}", captions, n)
        balance.run(pool, BalanceConfig(metadata=_metadata(tmp_path), t=40, seed=11), quiet=True)
        outputs.append((pool.read_bytes("balanced/balanced/uids.npy"),
                        pool.read_parquet("balanced/balanced/entry_counts.parquet")))
    assert outputs[0][0] == outputs[1][0] == outputs[2][0]
    # What travels to every task is a reference to the automaton in the object store, not the automaton.
    import pickle

    from curate.stages.balance.matching import SharedMatcher, build_matcher

    matcher, _ = build_matcher({"*": [f"entry {i}" for i in range(20_000)]})
    assert len(pickle.dumps(matcher)) > 200_000
    assert len(pickle.dumps(SharedMatcher(matcher, "fp", use_ray=True))) < 5_000
    # Expected counts are float sums whose order depends on sharding: equal up to rounding.
    exact = [t.drop_columns(["expected_after"]) for _, t in outputs]
    assert exact[0].equals(exact[1]) and exact[0].equals(exact[2])
    for _, table in outputs[1:]:
        assert np.allclose(table["expected_after"].to_numpy(), outputs[0][1]["expected_after"].to_numpy())


def test_per_language_t_reproduces_reference_tail_fraction(tmp_path, local_executor) -> None:
    en_vocab, fr_vocab = ([f"{p}{i}" for i in range(60)] for p in ("en", "fr"))
    # CJK ideographs only: MetaCLIP 2 pads an entry's side whose character is not CJK-or-similar.
    ja_vocab = [f"猫{chr(0x4E00 + i)}" for i in range(60)]
    en = zipf_captions(6_000, en_vocab, seed=3, exponent=1.2)
    fr = zipf_captions(2_500, fr_vocab, seed=4, exponent=1.5)
    ja = ["".join(c.split()) for c in zipf_captions(1_500, ja_vocab, seed=5)]  # no spaces in ja
    captions = en + fr + ja + ["xx"] * 20
    langs = ["en"] * len(en) + ["fr"] * len(fr) + ["ja"] * len(ja) + ["de"] * 20
    folder = tmp_path / "meta"
    folder.mkdir()
    for code, vocab in (("en", en_vocab), ("fr", fr_vocab), ("ja", ja_vocab)):
        (folder / f"{code}.txt").write_text("\n".join(vocab))
    pool = build_pool(tmp_path / "pool", captions, 2, langs=langs)
    report = balance.run(pool, BalanceConfig(metadata=str(folder), t=60), quiet=True)

    table = pool.read_parquet("balanced/balanced/entry_counts.parquet").to_pandas()
    by_lang = {k: g["count"].to_numpy() for k, g in table.groupby("language")}
    th = report["thresholds"]
    assert th["en"]["t"] == 60
    p_en = t_to_p(60, by_lang["en"])
    assert 0 < p_en < 1
    for lang in ("fr", "ja"):
        c = by_lang[lang]
        t = th[lang]["t"]
        # MetaCLIP 2's p_to_t (exact parity: tests/test_fidelity_metaclip.py).
        assert t == p_to_t(p_en, c)
        assert abs(t_to_p(t, c) - p_en) < 0.05
    assert th["fr"]["t"] != 60
    # ja captions have no spaces, so their entries only match with MetaCLIP 2's unpadded CJK rule.
    assert by_lang["ja"].sum() > 1000
    assert report["match_counts"]["language_without_metadata"] == 20


def test_subset_keep_unmatched_resume_and_reseed(tmp_path, local_executor) -> None:
    captions = zipf_captions(2_000, [e for e in ENTRIES if " " not in e], seed=6)
    pool = build_pool(tmp_path / "pool", captions, 2)
    subset = pool.read_parquet("shards/00000000.parquet", ["uid"])
    pool.write_parquet("subsets/half/uids.parquet", subset)
    cfg = BalanceConfig(metadata=_metadata(tmp_path), t=30, subset="subsets/half", keep_unmatched=True, name="b1")
    first = balance.run(pool, cfg, quiet=True)
    assert first["match_counts"]["not_in_subset"] == 1_000
    assert first["samples_considered"] == 1_000
    assert first["sample_counts"]["kept_unmatched"] == first["match_counts"]["unmatched"] > 0
    kept = set(pool.read_parquet("balanced/b1/uids.parquet")["uid"].to_pylist())
    assert kept <= set(subset["uid"].to_pylist())

    again = balance.run(pool, cfg, quiet=True)
    assert _ran(again) == {"match": (0, 2), "sample": (0, 2)}
    assert again["actual_kept"] == first["actual_kept"]

    reseeded = balance.run(pool, cfg.model_copy(update={"seed": 5}), quiet=True)
    assert _ran(reseeded) == {"match": (0, 2), "sample": (2, 0)}
    assert _ran(pool.read_report("balance/b1")) == _ran(reseeded)
    assert set(pool.read_parquet("balanced/b1/uids.parquet")["uid"].to_pylist()) != kept
    assert reseeded["expected_kept"] == pytest.approx(first["expected_kept"])


def test_requires_the_subset_it_balances() -> None:
    assert balance.Balance().requires(BalanceConfig()) == ("population",)
    assert balance.Balance().requires(BalanceConfig(subset="subsets/x")) == ("population", "subsets")


def _ran(report: dict) -> dict[str, tuple[int, int]]:
    """(shards run now, shards skipped as done) per pass of a balance report."""
    return {name: (p["shards_run_now"], p["shards_skipped_as_done"]) for name, p in report["passes"].items()}


def _balanced(pool: Pool, name: str) -> bytes:
    return pool.read_bytes(layout.balanced_npy(name))


def test_changed_t_subset_or_shards_redo_the_affected_pass_only(tmp_path, local_executor) -> None:
    """What each pass's fingerprint holds: t or the seed redo the draws only; a subset redoes the
    matching too; a shard added to the pool moves the global counts, so every shard's draws are
    redone though their matches are kept. Each result equals a fresh run's."""
    captions = zipf_captions(3_000, [e for e in ENTRIES if " " not in e], seed=12)
    pool = build_pool(tmp_path / "pool", captions, 3)
    later = layout.download_marker(shard_name(2))
    pool.remove(later)  # the third shard is downloaded later
    cfg = BalanceConfig(metadata=_metadata(tmp_path), t=30, seed=2, name="b2")
    first = balance.run(pool, cfg, quiet=True)
    assert _ran(first) == {"match": (2, 0), "sample": (2, 0)}
    assert _ran(balance.run(pool, cfg, quiet=True)) == {"match": (0, 2), "sample": (0, 2)}

    def fresh(config: BalanceConfig, n_shards: int = 2, subset: list[str] | None = None) -> bytes:
        other = build_pool(tmp_path / f"fresh{fresh.n}", captions, 3)
        fresh.n += 1
        if n_shards == 2:
            other.remove(later)
        if subset is not None:
            other.write_parquet("subsets/some/uids.parquet", pa.table({"uid": subset}))
        balance.run(other, config, quiet=True)
        return _balanced(other, config.name)

    fresh.n = 0
    assert _balanced(pool, "b2") == fresh(cfg)

    wider = cfg.model_copy(update={"t": 60})
    assert _ran(balance.run(pool, wider, quiet=True)) == {"match": (0, 2), "sample": (2, 0)}
    assert _balanced(pool, "b2") == fresh(wider) != fresh(cfg)

    some = pool.read_parquet("shards/00000001.parquet", ["uid"])["uid"].to_pylist()[::2]
    pool.write_parquet("subsets/some/uids.parquet", pa.table({"uid": some}))
    within = wider.model_copy(update={"subset": "some"})
    assert _ran(balance.run(pool, within, quiet=True)) == {"match": (2, 0), "sample": (2, 0)}
    assert _balanced(pool, "b2") == fresh(within, subset=some)

    pool.write_json(later, {"samples": 1000})
    grown = balance.run(pool, wider, quiet=True)
    assert _ran(grown) == {"match": (3, 0), "sample": (3, 0)}  # the subset is gone: all matches redone
    assert _ran(balance.run(pool, wider, quiet=True)) == {"match": (0, 3), "sample": (0, 3)}
    pool.remove(later)
    balance.run(pool, wider, quiet=True)
    pool.write_json(later, {"samples": 1000})
    regrown = balance.run(pool, wider, quiet=True)
    assert _ran(regrown) == {"match": (0, 3), "sample": (3, 0)}  # matches kept, every shard redrawn
    assert _balanced(pool, "b2") == fresh(wider, n_shards=3)


def test_tail_fraction_sets_t(tmp_path, local_executor) -> None:
    captions = zipf_captions(3_000, [e for e in ENTRIES if " " not in e], seed=9)
    pool = build_pool(tmp_path / "pool", captions, 1)
    report = balance.run(pool, BalanceConfig(metadata=_metadata(tmp_path), tail_fraction=0.3), quiet=True)
    th = report["thresholds"]["*"]
    counts = pool.read_parquet("balanced/balanced/entry_counts.parquet")["count"].to_numpy()
    assert th["how"] == "from tail_fraction"
    assert th["t"] < counts.max() and abs(t_to_p(th["t"], counts) - 0.3) < 0.1
    assert th["tail_fraction"] == pytest.approx(t_to_p(th["t"], counts))


@pytest.mark.fault("balance", "bad metadata, a missing subset or language table", "one-line error before any shard runs")  # noqa: E501 - one row of docs/reliability.md
def test_clear_errors(tmp_path, local_executor) -> None:
    pool = build_pool(tmp_path / "pool", ["w0 w1"] * 10, 1)
    with pytest.raises(ConfigError, match="needs metadata"):
        balance.run(pool, BalanceConfig(), quiet=True)
    with pytest.raises(PoolError, match="subset not found"):
        balance.run(pool, BalanceConfig(metadata=_metadata(tmp_path), subset="nope"), quiet=True)
    folder = tmp_path / "meta"
    folder.mkdir()
    (folder / "fr.txt").write_text("w0\n")
    with pytest.raises(ConfigError, match="reference language 'en'"):
        balance.run(pool, BalanceConfig(metadata=str(folder), t=5), quiet=True)
    with pytest.raises(PoolError, match="scores/language"):  # per-language metadata needs language scores
        balance.run(pool, BalanceConfig(metadata=str(folder), tail_fraction=0.5), quiet=True)
    with pytest.raises(PoolError, match="no finished download shards"):
        balance.run(Pool(str(tmp_path / "empty")), BalanceConfig(metadata=_metadata(tmp_path)), quiet=True)


def test_cli_balance(tmp_path) -> None:
    import os
    import subprocess
    import sys

    captions = zipf_captions(500, [e for e in ENTRIES if " " not in e], seed=8)
    pool = build_pool(tmp_path / "pool", captions, 2)
    env = {**os.environ, "CURATE_EXECUTOR": "local"}
    from pathlib import Path

    curate = str(Path(sys.executable).parent / "curate")
    cmd = [curate, "balance", "--pool", pool.url, "--metadata", _metadata(tmp_path),
           "--t", "20", "--seed", "4", "--name", "cli"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stdout + done.stderr and pool.exists("balanced/cli/uids.npy")
    assert pool.read_json("balanced/cli/report.json")["thresholds"]["*"]["t"] == 20
    bad = subprocess.run([*cmd[:-6], "--t", "5", "--tail-fraction", "0.2"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "not both" in bad.stderr
