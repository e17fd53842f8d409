"""`curate train-dfn` and `curate eval-dfn`: make a Data Filtering Network and measure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import from_options
from curate.commands.options import SET_FLAG, apply_sets, set_option_help
from curate.errors import ConfigError


@app.command("train-dfn")
def train_dfn_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="train-dfn YAML (see docs/dfn.md).")],
    local: Annotated[bool, typer.Option(
        "--local", help="One process in this shell, no Ray Train (overrides scaling.backend: ray).")] = False,
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", help="Override output_dir (checkpoints/, model/, train_summary.json).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Override train.steps.", min=1)] = None,
    stop_at_step: Annotated[int | None, typer.Option(
        "--stop-at-step", min=1,
        help="Stop after this step (a checkpoint is written); run again without it to resume.")] = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Ignore and delete existing checkpoints in output_dir instead of resuming.")] = False,
    sets: Annotated[list[str] | None, typer.Option(
        SET_FLAG, metavar="KEY=VALUE", help=set_option_help("the train-dfn YAML (`train.lr=1e-5`)"))] = None,
) -> None:
    """Train or fine-tune a CLIP model as a Data Filtering Network on a high-quality image-text set.

    Reads webdataset shards, Parquet with image bytes, or a pool subset; starts from a pretrained
    open_clip model, a local checkpoint directory, or scratch; CLIP contrastive loss, AdamW with
    warmup + cosine, bf16 autocast on GPU. Writes resumable checkpoints every checkpoint.every_steps
    and resumes from the newest one; at the end writes OUTPUT_DIR/model in the hf-hub layout, which
    the clip scorer loads by path (score: scorers: [{type: clip, name: dfn, model: OUTPUT_DIR/model}]).
    With scaling.backend: ray it runs on Ray Train (TorchTrainer, scaling.num_workers, use_gpu).
    """
    from curate.dfn import load_dfn_config, train_dfn
    from curate.dfn.config import DFNTrainConfig

    cfg = load_dfn_config(config)
    if sets:
        cfg = apply_sets(DFNTrainConfig, cfg.model_dump(), sets, "train-dfn")
    updates: dict[str, object] = {}
    if output_dir is not None:
        updates["output_dir"] = output_dir
    if steps is not None:
        updates["train"] = cfg.train.model_copy(update={"steps": steps})
    if fresh:
        updates["checkpoint"] = cfg.checkpoint.model_copy(update={"resume": False})
    cfg = cfg.model_copy(update=updates)
    summary = train_dfn(cfg, local=local, stop_at_step=stop_at_step)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("counts", {}).items()))
    final = summary.get("final_loss")
    loss = f", final loss {final:.4f}" if final is not None else ""
    typer.echo(f"train-dfn: step {summary['step']}/{summary['target_steps']}{loss}")
    typer.echo(f"  pairs: {counts}")
    if summary.get("model_dir"):
        typer.echo(f"  model: {summary['model_dir']} (load with load_clip(path) or a clip scorer's model:)")
    else:
        typer.echo(f"  stopped before the last step; checkpoints in {Path(cfg.output_dir) / 'checkpoints'}; "
                   "run the same command to resume")


@app.command("eval-dfn")
def eval_dfn_command(
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Model directory (train-dfn's OUTPUT_DIR/model), open_clip name or hf-hub: id.")],
    data: Annotated[list[str] | None, typer.Option(
        "--data", "-d", help="Held-out pairs: webdataset tars or Parquet files/dirs/globs (repeatable).")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Read pairs from this pool's subset instead.")] = None,
    subset: Annotated[str | None, typer.Option("--subset", help="Subset name under POOL/subsets/.")] = None,
    pretrained: Annotated[str | None, typer.Option(
        "--pretrained", help="Pretrained tag or weights file when --model is an architecture name.")] = None,
    label_field: Annotated[str | None, typer.Option(
        "--label-field", help="JSON key / column holding each pair's class; enables the other_class corruption."
    )] = None,
    image_column: Annotated[str, typer.Option("--image-column", help="Parquet column of image bytes.")] = "jpg",
    caption_column: Annotated[str, typer.Option("--caption-column", help="Parquet column of captions.")] = "caption",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the JSON report here.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the corruptions.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per model batch.")] = 256,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 …")] = "cpu",
) -> None:
    """Measure a filter model: AUC of matched pairs against corrupted ones, and each score distribution.

    Corruptions: shuffled (each image with another random pair's caption) and other_class (a caption
    of a pair with a different --label-field value). Prints a table; --out writes the JSON report.
    """
    from rich.console import Console
    from rich.table import Table

    from curate.dfn import require_models
    from curate.dfn.config import PoolSubsetSource
    from curate.dfn.data import load_pairs, source_from_paths

    require_models("eval-dfn")
    from curate.dfn.evaluate import evaluate_filter

    if bool(data) == bool(pool):
        raise ConfigError("eval-dfn: give either --data PATH... or --pool POOL --subset NAME")
    if pool and not subset:
        raise ConfigError("eval-dfn: --pool needs --subset NAME")
    source = (from_options(PoolSubsetSource, {"pool": pool, "subset": subset, "label_field": label_field},
                           "eval-dfn options") if pool
              else source_from_paths(list(data or []), label_field=label_field, image_column=image_column,
                                     caption_column=caption_column))
    pairs = load_pairs(source)
    report = evaluate_filter(model, pairs, seed=seed, batch_size=batch_size, device=device, pretrained=pretrained)
    report["counts"] = {**pairs.counts, **report["counts"]}
    table = Table(title=f"eval-dfn: {model} on {report['pairs']} pairs")
    for col in ("pairs", "n", "AUC vs matched", "mean", "std", "p05", "p50", "p95"):
        table.add_column(col, justify="right" if col != "pairs" else "left")
    for name, dist in report["distributions"].items():
        auc = report["auc"].get(name)
        table.add_row(name, str(dist["n"]), "—" if auc is None else f"{auc:.4f}",
                      *(f"{dist[k]:.4f}" for k in ("mean", "std", "p05", "p50", "p95")))
    console = Console()
    console.print(table)
    if "all_corrupted" in report["auc"]:
        console.print(f"AUC matched vs all corrupted: {report['auc']['all_corrupted']:.4f}")
    for name, why in report["skipped"].items():
        console.print(f"skipped {name}: {why}")
    console.print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(report["counts"].items())))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")
