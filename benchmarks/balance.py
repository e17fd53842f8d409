"""Benchmark: MetaCLIP substring matching, Aho-Corasick (curate) vs MetaCLIP's brute-force loop.

Metadata: 500,000 entries from a real word list (Debian's wamerican-insane,
/usr/share/dict/american-english-insane): unigrams plus bigrams of them, the MetaCLIP mix of
single words and multi-word entries. Captions: 3-12 tokens drawn with Zipf frequencies over the
word list (natural-language word frequencies are Zipfian), some of them metadata bigrams, with
commas, periods and capitalised words, so the spacing rule has work to do.

Both matchers run in this one process on one core, on the same captions:
- curate: `Matcher.match` over batches of captions (vectorised spacing + one automaton scan);
- peer: MetaCLIP's loop — space the caption, then `" entry " in text` for every entry —
  timed on a random subsample (--brute-sample) because it is ~10^4x slower;
and the two must return identical matches on that subsample.

    .venv/bin/python benchmarks/balance.py --size 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.stages.balance.matching import build_matcher, spacing_reference
from curate.stages.balance.metadata import ALL_LANGUAGES

WORD_LISTS = ("/usr/share/dict/american-english-insane", "/usr/share/dict/american-english-huge",
              "/usr/share/dict/words")


def load_words(path: str | None) -> tuple[list[str], str]:
    candidates = [path] if path else list(WORD_LISTS)
    for p in candidates:
        if p and Path(p).is_file():
            words = sorted({w.strip() for w in Path(p).read_text(encoding="utf-8", errors="replace").splitlines()
                            if w.strip()})
            return words, p
    print(f"word list not found ({', '.join(c for c in candidates if c)}); install it with "
          "`apt-get install -y wamerican-insane`. Falling back to 700,000 synthetic pronounceable words — "
          "figures are then NOT comparable to runs on the real list.", file=sys.stderr)
    rng = np.random.default_rng(0)
    syll = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = sorted({"".join(rng.choice(syll, size=rng.integers(1, 5))) for _ in range(900_000)})[:700_000]
    return words, "synthetic (no word list found)"


def build_metadata(words: list[str], n_entries: int, bigram_share: float, rng: np.random.Generator) -> tuple[
        list[str], np.ndarray]:
    """Entries and the Zipf ranking of words used by the captions (rank 0 = most frequent)."""
    ranking = rng.permutation(len(words))
    n_bigrams = int(n_entries * bigram_share)
    n_unigrams = min(n_entries - n_bigrams, len(words))
    # Metadata favours frequent words (MetaCLIP keeps Wikipedia's most frequent unigrams) but is
    # not every frequent word: drop a random tenth of the first ranks.
    pool = ranking[: int(n_unigrams * 1.1)]
    unigrams = [words[i] for i in rng.choice(pool, size=n_unigrams, replace=False)]
    first = ranking[np.minimum(rng.zipf(1.2, size=2 * n_bigrams) - 1, len(words) - 1)]
    second = ranking[rng.integers(0, min(len(words), 50_000), size=2 * n_bigrams)]
    bigrams = list(dict.fromkeys(f"{words[a]} {words[b]}" for a, b in zip(first, second, strict=True)))
    while len(bigrams) < n_bigrams:  # pairs repeat under Zipf; top up with uniform pairs
        a, b = rng.integers(0, len(words), size=2)
        bigrams = list(dict.fromkeys([*bigrams, f"{words[a]} {words[b]}"]))
    entries = unigrams + bigrams[:n_bigrams]
    return entries, ranking


def build_captions(words: list[str], ranking: np.ndarray, bigrams: list[str], n: int,
                   rng: np.random.Generator) -> list[str]:
    lengths = rng.integers(3, 13, size=n)
    tokens = np.asarray(words, dtype=object)[ranking[np.minimum(rng.zipf(1.1, size=int(lengths.sum())) - 1,
                                                                 len(words) - 1)]]
    punct = rng.random(tokens.size)
    tokens = np.where(punct < 0.05, tokens + ",", np.where(punct < 0.08, tokens + ".", tokens))
    caps = rng.random(tokens.size) < 0.1
    tokens[caps] = [t[:1].upper() + t[1:] for t in tokens[caps]]
    inject = rng.random(n) < 0.3
    extra = rng.integers(0, len(bigrams), size=n)
    out = []
    pos = 0
    for i, k in enumerate(lengths.tolist()):
        words_i = tokens[pos : pos + k].tolist()
        pos += k
        if inject[i]:
            words_i.insert(k // 2, bigrams[extra[i]])
        out.append(" ".join(words_i))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="number of captions (default 1,000,000)")
    ap.add_argument("--entries", type=int, default=500_000, help="metadata entries (default 500,000)")
    ap.add_argument("--bigram-share", type=float, default=0.2, help="share of entries that are bigrams")
    ap.add_argument("--brute-sample", type=int, default=200, help="captions timed with the brute-force loop")
    ap.add_argument("--batch", type=int, default=10_000, help="captions per matcher call (a shard's batch)")
    ap.add_argument("--word-list", default=None, help="word list file (default: wamerican-insane)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    words, source = load_words(args.word_list)
    entries, ranking = build_metadata(words, args.entries, args.bigram_share, rng)
    bigrams = [e for e in entries if " " in e]
    captions = build_captions(words, ranking, bigrams, args.size, rng)
    print(f"word list: {source} ({len(words):,} words); metadata: {len(entries):,} entries "
          f"({len(bigrams):,} bigrams); captions: {len(captions):,}, "
          f"mean {np.mean([len(c) for c in captions]):.0f} chars", flush=True)

    t0 = time.perf_counter()
    matcher, _ = build_matcher({ALL_LANGUAGES: entries})
    build_s = time.perf_counter() - t0

    arrow = pa.array(captions, pa.string())
    n_matches = 0
    matched_captions = 0
    t0 = time.process_time()
    w0 = time.perf_counter()
    for start in range(0, len(captions), args.batch):
        rows, _ = matcher.match(arrow.slice(start, args.batch))
        n_matches += rows.size
        matched_captions += np.unique(rows).size
    ac_cpu = time.process_time() - t0
    ac_wall = time.perf_counter() - w0
    ac_rate = len(captions) / ac_cpu

    sample_idx = rng.choice(len(captions), size=min(args.brute_sample, len(captions)), replace=False)
    spaced_entries = [f" {spacing_reference(e)} " for e in entries]  # MetaCLIP spaces entries once
    brute: list[list[int]] = []
    t0 = time.process_time()
    for i in sample_idx.tolist():
        text = f" {spacing_reference(captions[i])} "
        brute.append([j for j, e in enumerate(spaced_entries) if e in text])
    bf_cpu = time.process_time() - t0
    bf_rate = len(sample_idx) / bf_cpu

    rows, ents = matcher.match(pa.array([captions[i] for i in sample_idx.tolist()]))
    ac_sample: list[list[int]] = [[] for _ in sample_idx]
    for r, e in zip(rows.tolist(), ents.tolist(), strict=True):
        ac_sample[r].append(e)
    agree = ac_sample == brute

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared; no GPU",
        "word_list": source, "entries": len(entries), "bigram_entries": len(bigrams), "captions": len(captions),
        "automaton_build_s": round(build_s, 2),
        "automaton_captions_per_s_per_core": round(ac_rate),
        "automaton_chars_per_s_per_core": round(sum(len(c) for c in captions) / ac_cpu),
        "mean_caption_chars": round(float(np.mean([len(c) for c in captions])), 1),
        "automaton_cpu_s": round(ac_cpu, 2), "automaton_wall_s": round(ac_wall, 2),
        "matches_per_caption": round(n_matches / len(captions), 2),
        "captions_matching_any_entry": round(matched_captions / len(captions), 4),
        "brute_force_sample": len(sample_idx), "brute_force_captions_per_s_per_core": round(bf_rate, 2),
        "speedup": round(ac_rate / bf_rate), "identical_matches_on_sample": agree,
    }
    print(json.dumps(result, indent=2))
    print(f"automaton: {ac_rate:,.0f} captions/s/core (build {build_s:.1f}s) | brute force: {bf_rate:,.1f} "
          f"captions/s/core | speed-up {ac_rate / bf_rate:,.0f}x | identical on sample: {agree}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
