"""`python -m curate.demo` (`make demo`): the whole pipeline on a generated pool with planted problems.

1. Generate a small web of shape images and pages (curate.demo.web), with planted problems, and
   serve it on 127.0.0.1; describe its pages as Common Crawl WAT files.
2. Train a small DFN on a separate clean set (curate train-dfn's code path).
3. Run pipelines/demo.yaml: ingest → download → score → dedup → filter → balance → export → stats.
4. Check which planted problems were caught, write reports/planted.json.
5. Real pixels (curate.demo.emoji): curate a web of emoji artwork with pipelines/emoji.yaml and
   measure the curated subset with `curate eval` against a random subset of the same size and the
   whole pool (tiny CLIPs at equal compute, several seeds, zero-shot on another vendor's artwork).
6. Print where everything is.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from curate.config import load_pipeline
from curate.demo.planted import planted_report, print_planted
from curate.demo.web import Resource, build_demo_web, write_training_set
from curate.pipeline import run_pipeline
from curate.pool import Pool
from curate.progress import console
from curate.testing.http import Route, serve_routes
from curate.testing.watgen import write_wat

REPO = Path(__file__).resolve().parents[2]


def _routes(resources: dict[str, Resource]):
    def route(path: str) -> Route | None:
        res = resources.get(path.split("?", 1)[0])
        return None if res is None else Route(body=res.body, content_type=res.content_type, status=res.status)

    return route


def train_demo_dfn(out: Path, steps: int) -> Path:
    """Train the demo's DFN on a generated clean set unless a trained model is already there."""
    from curate.demo.tiny_dfn import train_tiny_dfn

    # The name carries the training set's version, so a changed demo never reuses a stale DFN.
    run_dir = out / "dfn-scenes-v1"
    model_dir = run_dir / "model"
    if (model_dir / "open_clip_config.json").exists():
        console.print(f"[demo] reusing the trained DFN in {model_dir}")
        return model_dir
    write_training_set(out / "hq", 2048, seed=1000)
    return train_tiny_dfn(out / "hq", run_dir, steps, "class", "the demo DFN on 2,048 clean pairs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m curate.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="where inputs, the DFN and the pool go (default demo_out)")
    parser.add_argument("--pipeline", default=str(REPO / "pipelines" / "demo.yaml"))
    parser.add_argument("--clean", type=int, default=1600, help="clean image-caption pairs (problems are added)")
    parser.add_argument("--dfn-steps", type=int, default=300)
    parser.add_argument("--wat-files", type=int, default=4)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--emoji-concepts", type=int, default=40, help="emoji concepts (zero-shot classes)")
    parser.add_argument("--emoji-links", type=int, default=60, help="image links per emoji concept")
    parser.add_argument("--eval-seeds", type=int, default=3, help="training seeds per arm of the evaluation")
    parser.add_argument("--eval-samples-seen", type=int, default=None,
                        help="samples seen per training run (default: the tiny preset's)")
    parser.add_argument("--no-eval", action="store_true", help="skip the real-pixel pool and its evaluation")
    args = parser.parse_args(argv)
    started = time.time()
    out = Path(args.out)
    # The server's port changes per run and with it every url and uid: a demo pool is rebuilt each time.
    for sub in ("pool", "wat"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "wat").mkdir(parents=True, exist_ok=True)

    console.print("[demo] generating the demo web (images, pages, planted problems)")
    web = build_demo_web(n_clean=args.clean)
    with serve_routes(_routes(web.resources)) as server:
        pages = [(server.url(page), [(server.url(src), alt) for src, alt in links]) for page, links in web.pages]
        per_file = -(-len(pages) // args.wat_files)
        for i in range(args.wat_files):
            write_wat(out / "wat" / f"demo-{i:05d}.warc.wat.gz", pages[i * per_file:(i + 1) * per_file])
        console.print(f"[demo] {len(web.resources) + len(web.planted.get('dead_link', []))} image links on "
                      f"{len(pages)} pages in {args.wat_files} WAT files, served at {server.url('/')}")

        model_dir = train_demo_dfn(out, args.dfn_steps)

        cfg = load_pipeline(args.pipeline)
        inputs = [str(out / "wat" / "*.warc.wat.gz")]
        fixture = REPO.parent / "shared" / "fixtures" / "commoncrawl" / "whirlwind.warc.gz"
        if fixture.exists():
            inputs.append(str(fixture))
        else:
            console.print(f"[demo] {fixture} not found; running without the real Common Crawl sample")
        cfg.pool = str(out / "pool")
        cfg.ingest.inputs = inputs
        cfg.score.scorers[0].model = str(model_dir)
        run_pipeline(cfg, ray_address=args.ray_address)

        pool = Pool(cfg.pool)
        report = planted_report(pool, web, server.url, subset="demo", final=f"balanced/{cfg.balance.name}")
        pool.write_json("reports/planted.json", report)
    print_planted(report)
    # Re-render the HTML report so it includes the planted-problem table.
    from curate.stats import run as run_stats

    run_stats(pool, cfg.stats, ray_address=args.ray_address, rerun=True, quiet=True)
    emoji = None
    if not args.no_eval:
        from curate.demo.emoji import run_emoji_demo

        emoji = run_emoji_demo(out / "emoji", concepts=args.emoji_concepts, per_concept=args.emoji_links, seed=0,
                               seeds=args.eval_seeds, dfn_steps=args.dfn_steps, eval_per_concept=10,
                               samples_seen=args.eval_samples_seen, ray_address=args.ray_address)
    export_dir = Path(cfg.pool) / "exports" / cfg.export.name
    console.print(f"\n[bold]demo finished in {time.time() - started:.0f}s[/bold]")
    console.print(f"  pool:                 {Path(cfg.pool).resolve()}")
    console.print(f"  curated subset:       {(Path(cfg.pool) / 'subsets' / 'demo' / 'uids.parquet').resolve()}")
    console.print(f"  balanced set:         {(Path(cfg.pool) / 'balanced' / cfg.balance.name).resolve()}")
    console.print(f"  webdataset shards:    {export_dir.resolve()}")
    console.print(f"  curated Parquet:      {(export_dir / 'metadata').resolve()}")
    console.print(f"  HTML report:          {(Path(cfg.pool) / 'reports' / 'index.html').resolve()}")
    console.print(f"  planted problems:     {(Path(cfg.pool) / 'reports' / 'planted.json').resolve()}")
    if emoji is not None:
        epool = Path(emoji["pool"])
        console.print(f"  emoji pool:           {epool.resolve()}")
        console.print(f"  emoji evaluation:     {(epool / 'evals' / 'emoji' / 'results.json').resolve()}")
        console.print(f"  emoji HTML report:    {(epool / 'reports' / 'index.html').resolve()}")
        for c in emoji["eval"]["headline"]:
            console.print(f"  [bold]{c['arm']} vs {c['against']}[/bold]: {c['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
