"""The demo's real-pixel half: curate a web of emoji artwork, then measure the curation with `curate eval`.

1. Build a web of OpenMoji and Twemoji artwork with web-like noise (curate.emoji), serve it on
   127.0.0.1 and describe its pages as Common Crawl WAT files.
2. Train a DFN on clean pairs of the same vendors (a separate draw, never the pool's images).
3. Run pipelines/emoji.yaml: ingest → download → score → dedup → filter (subset `emoji`).
4. `curate eval`: the subset against a random subset of the same size and the whole pool, tiny
   CLIPs at equal compute over several seeds, zero-shot on Noto Color Emoji artwork of the same
   concepts (a style no pool image has).
5. Report which noise the curation removed and what it cost in clean samples (reports/noise.json).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from curate import layout
from curate.config import load_pipeline
from curate.emoji import EmojiWeb, build_emoji_web, write_clean_pairs, write_emoji_evalset
from curate.pool import Pool
from curate.progress import console
from curate.shards import list_shards, read_shard_table
from curate.testing.http import Route, serve_routes
from curate.testing.watgen import write_wat

REPO = Path(__file__).resolve().parents[2]
NOISE_JSON = f"{layout.REPORTS}/noise.json"


def _routes(web: EmojiWeb):
    def route(path: str) -> Route | None:
        res = web.resources.get(path.split("?", 1)[0])
        return None if res is None else Route(body=res.body, content_type=res.content_type, status=res.status)

    return route


def train_emoji_dfn(out: Path, concepts: int, seed: int, steps: int) -> Path:
    """A DFN trained on clean pairs of the pool's vendors and concepts, reused when already trained."""
    from curate.demo.tiny_dfn import train_tiny_dfn

    run_dir = out / f"dfn-c{concepts}-s{seed}-{steps}-v1"
    model_dir = run_dir / "model"
    if (model_dir / "open_clip_config.json").exists():
        console.print(f"[demo] reusing the emoji DFN in {model_dir}")
        return model_dir
    hq = out / "hq"
    shutil.rmtree(hq, ignore_errors=True)
    write_clean_pairs(hq, 2048, seed=seed + 1, size=96, concepts=concepts)
    return train_tiny_dfn(hq, run_dir, steps, "concept", "the emoji DFN on 2,048 clean pairs")


def noise_report(pool: Pool, web: EmojiWeb, url_of: Any, subset: str) -> dict[str, Any]:
    """Per noise kind: links planted, samples downloaded, samples kept in the subset."""
    kind_of = {url_of(path): truth.kind for path, truth in web.truth.items()}
    downloaded: Counter[str] = Counter()
    uid_kind: dict[str, str] = {}
    for sid in list_shards(pool):
        t = read_shard_table(pool, sid, columns=["uid", "url", "status"])
        for uid, url, status in zip(t["uid"].to_pylist(), t["url"].to_pylist(), t["status"].to_pylist(), strict=True):
            kind = kind_of.get(url)
            if kind is not None and status == "success":
                downloaded[kind] += 1
                uid_kind[uid] = kind
    kept_uids = pool.read_parquet(layout.subset_uids(subset), columns=["uid"])["uid"].to_pylist()
    kept = Counter(uid_kind[u] for u in kept_uids if u in uid_kind)
    planted = Counter(t.kind for t in web.truth.values())
    rows = [{"kind": k, "planted": planted[k], "downloaded": downloaded[k], "kept": kept[k],
             "kept_fraction": kept[k] / downloaded[k] if downloaded[k] else None} for k in sorted(planted)]
    total_dl, total_kept = sum(downloaded.values()), sum(kept.values())
    noisy_dl = total_dl - downloaded["clean"]
    noisy_kept = total_kept - kept["clean"]
    return {"subset": subset, "kinds": rows,
            "noise_share_downloaded": noisy_dl / total_dl if total_dl else None,
            "noise_share_kept": noisy_kept / total_kept if total_kept else None,
            "clean_kept_fraction": kept["clean"] / downloaded["clean"] if downloaded["clean"] else None}


def print_noise(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"what the curation kept of each kind (subset {report['subset']})")
    for col in ("kind", "planted", "downloaded", "kept", "kept %"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for r in report["kinds"]:
        frac = "—" if r["kept_fraction"] is None else f"{100 * r['kept_fraction']:.0f}%"
        table.add_row(r["kind"], str(r["planted"]), str(r["downloaded"]), str(r["kept"]), frac)
    console.print(table)
    console.print(f"  noise share: {100 * (report['noise_share_downloaded'] or 0):.0f}% of the downloaded pool, "
                  f"{100 * (report['noise_share_kept'] or 0):.0f}% of the subset; "
                  f"{100 * (report['clean_kept_fraction'] or 0):.0f}% of clean samples kept")


def run_emoji_demo(out: Path, *, concepts: int, per_concept: int, seed: int, seeds: int, dfn_steps: int,
                   eval_per_concept: int, samples_seen: int | None = None, wat_files: int = 2,
                   extra_specs: list[str] | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; `extra_specs` are applied too and evaluated as more arms."""
    from curate.evaluation.config import EvalConfig
    from curate.evaluation.run import run_eval
    from curate.pipeline import run_pipeline

    out.mkdir(parents=True, exist_ok=True)
    for sub in ("pool", "wat"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "wat").mkdir(parents=True)
    console.print(f"[demo] building the emoji web: {concepts} concepts × {per_concept} links, OpenMoji + Twemoji")
    web = build_emoji_web(concepts=concepts, per_concept=per_concept, seed=seed, size=256)
    evalset = out / "eval-noto"
    shutil.rmtree(evalset, ignore_errors=True)
    write_emoji_evalset(evalset, concepts=concepts, per_concept=eval_per_concept, seed=seed, size=128)
    with serve_routes(_routes(web)) as server:
        pages = [(server.url(page), [(server.url(src), alt) for src, alt in links]) for page, links in web.pages]
        per_file = -(-len(pages) // wat_files)
        for i in range(wat_files):
            write_wat(out / "wat" / f"emoji-{i:05d}.warc.wat.gz", pages[i * per_file:(i + 1) * per_file])
        model_dir = train_emoji_dfn(out, concepts, seed, dfn_steps)
        cfg = load_pipeline(REPO / "pipelines" / "emoji.yaml")
        cfg.pool = str(out / "pool")
        cfg.ingest.inputs = [str(out / "wat" / "*.warc.wat.gz")]
        cfg.score.scorers[0].model = str(model_dir)
        run_pipeline(cfg, ray_address=ray_address)
        pool = Pool(cfg.pool)
        noise = noise_report(pool, web, server.url, subset="emoji")
    pool.write_json(NOISE_JSON, noise)
    print_noise(noise)
    arms = [{"subset": "emoji"}]
    for spec in extra_specs or []:
        from curate.config import FilterConfig
        from curate.stages.filter import run as run_filter
        from curate.stages.filter.spec import load_spec

        run_filter(pool, FilterConfig(spec=spec), ray_address=ray_address, quiet=True)
        arms.append({"subset": load_spec(spec)[0].name})
    train = {"samples_seen": samples_seen} if samples_seen else {}
    eval_cfg = EvalConfig.model_validate({
        "name": "emoji", "pool": cfg.pool, "arms": arms, "evalsets": [str(evalset)],
        "preset": "tiny", "seeds": seeds, "train": train,
    })
    results = run_eval(eval_cfg)
    from curate.stats import run as run_stats

    run_stats(pool, cfg.stats, ray_address=ray_address, rerun=True, quiet=True)
    return {"pool": cfg.pool, "noise": noise, "eval": results}
