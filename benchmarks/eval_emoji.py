"""Does curation train a better model? The real-pixel emoji pool through curate, then `curate eval`.

Builds the emoji web (docs/emoji-pool.md), curates it with pipelines/emoji.yaml (curate_basic,
exact and perceptual dedup, DFN top 50% of survivors) and runs `curate eval`: the curated subset
against a random subset of the same size and the whole pool, tiny CLIPs at equal compute, several
seeds, zero-shot and retrieval on Noto Color Emoji artwork of the same concepts. Prints the noise
the curation removed, every arm's metrics, the verdicts and the wall time of each part.

    scripts/hermetic.sh .venv/bin/python benchmarks/eval_emoji.py --concepts 40 --links 100 \\
        --eval-per-concept 20 --seeds 5 --samples-seen 16384 --out /tmp/eval-emoji
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/eval-emoji")
    parser.add_argument("--concepts", type=int, default=40)
    parser.add_argument("--links", type=int, default=60, help="image links per concept")
    parser.add_argument("--eval-per-concept", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples-seen", type=int, default=None, help="default: the tiny preset's 8,192")
    parser.add_argument("--dfn-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="the web's seed")
    parser.add_argument("--extra-spec", action="append", default=[],
                        help="another filter spec to apply and evaluate as one more arm (repeatable)")
    args = parser.parse_args()
    from curate.demo.emoji import run_emoji_demo

    started = time.perf_counter()
    result = run_emoji_demo(Path(args.out), concepts=args.concepts, per_concept=args.links, seed=args.seed,
                            seeds=args.seeds, dfn_steps=args.dfn_steps, eval_per_concept=args.eval_per_concept,
                            samples_seen=args.samples_seen, extra_specs=args.extra_spec)
    total = time.perf_counter() - started
    ev = result["eval"]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "args": vars(args), "total_seconds": round(total, 1), "eval_seconds": round(ev["seconds"], 1),
        "noise": {k: result["noise"][k] for k in ("noise_share_downloaded", "noise_share_kept", "clean_kept_fraction")},
        "arms": {name: {"size": a["size"], **{k.split("/")[-1]: [round(a["metrics"][k]["mean"], 2),
                                                                   round(a["metrics"][k]["std"], 2)]
                                              for k in a["metrics"]}} for name, a in ev["arms"].items()},
        "verdicts": [f"{c['arm']} vs {c['against']}: {c['verdict']}" for c in ev["headline"]],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
