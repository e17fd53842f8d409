"""Which of the demo's planted problems the pipeline caught, by the signal meant to catch each.

For every kind of planted problem: how many were planted, how many reached the pool (downloaded),
how many the signal designed for them flagged, and how many survived into the filtered subset and
the final balanced set. Clean samples are reported alongside, so false positives show too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from curate.demo.web import DemoWeb
from curate.pool import Pool
from curate.progress import console
from curate.shards import list_shards, read_shard_table
from curate.uid import make_uid

SIGNALS = {
    "dead_link": "download status is not success",
    "mismatched_caption": "DFN score below the subset's DFN cut-off",
    "exact_duplicate": "grouped with another sample by dedup/exact",
    "near_duplicate": "grouped with another sample by dedup/perceptual",
    "tiny_image": "shorter side < 200 px",
    "extreme_aspect": "aspect ratio > 3",
    "non_english": "fastText language is not en",
    "nsfw_caption": "nsfw_text_score >= 0.5",
    "clean": "(none: clean samples; what is flagged or dropped here is a false positive)",
}


def _uids_of(pool: Pool, rel: str) -> set[str]:
    return set(pool.read_parquet(rel, columns=["uid"]).column("uid").to_pylist()) if pool.exists(rel) else set()


DEDUP_OF_KIND = {"exact_duplicate": "exact", "near_duplicate": "perceptual"}


def _still_duplicated(pool: Pool, method: str, uids: list[str], kept: set[str]) -> int:
    """Planted copies whose duplicate group still has two or more members in `kept`."""
    rel = f"dedup/{method}.parquet"
    if not pool.exists(rel):
        return 0
    d = pool.read_parquet(rel, columns=["uid", "group"]).to_pandas()
    d = d[d["uid"].isin(kept)]
    survivors = d.groupby("group")["uid"].size()
    group_of = dict(zip(d["uid"], d["group"], strict=True))
    return sum(1 for u in uids if u in group_of and survivors[group_of[u]] > 1)


def _joined(pool: Pool) -> pd.DataFrame:
    shards = [read_shard_table(pool, s, ["uid", "status"]).to_pandas() for s in list_shards(pool)]
    frame = pd.concat(shards, ignore_index=True).drop_duplicates("uid")
    for scorer in pool.listdir("scores"):
        table = pool.read_parquet_dir(f"scores/{scorer}").to_pandas()
        keep = [c for c in table.columns if c == "uid" or c not in frame.columns]
        frame = frame.merge(table[keep], on="uid", how="left")
    for name in pool.listdir("dedup"):
        if not name.endswith(".parquet"):
            continue
        method = name[: -len(".parquet")]
        d = pool.read_parquet(f"dedup/{name}", columns=["uid", "group"]).to_pandas()
        sizes = d.groupby("group")["uid"].transform("size")
        d[f"grouped_{method}"] = sizes > 1
        frame = frame.merge(d[["uid", f"grouped_{method}"]], on="uid", how="left")
    return frame


def _dfn_cutoff(pool: Pool, subset: str) -> float | None:
    """The threshold the subset's DFN top-fraction condition resolved to (funnel.json cutoffs)."""
    rel = f"subsets/{subset}/funnel.json"
    if not pool.exists(rel):
        return None
    for cut in pool.read_json(rel).get("cutoffs", []):
        if "dfn" in str(cut.get("column", "")) + str(cut.get("condition", "")):
            return float(cut["threshold"])
    return None


def _flag(kind: str, rows: pd.DataFrame, dfn_cut: float | None) -> pd.Series:
    def col(name: str, default: Any = None) -> pd.Series:
        return rows[name] if name in rows else pd.Series(default, index=rows.index)

    if kind == "dead_link":
        return col("status").fillna("missing") != "success"
    if kind == "mismatched_caption":
        if dfn_cut is None:
            return pd.Series(False, index=rows.index)
        return col("clip_dfn_similarity_score").astype(float) < dfn_cut
    if kind == "exact_duplicate":
        return col("grouped_exact", False).astype("boolean").fillna(False).astype(bool)
    if kind == "near_duplicate":
        return col("grouped_perceptual", False).astype("boolean").fillna(False).astype(bool)
    w, h = col("original_width").astype(float), col("original_height").astype(float)
    if kind == "tiny_image":
        return pd.concat([w, h], axis=1).min(axis=1) < 200
    if kind == "extreme_aspect":
        return pd.concat([w, h], axis=1).max(axis=1) / pd.concat([w, h], axis=1).min(axis=1) > 3
    if kind == "non_english":
        return col("lang").fillna("") != "en"
    if kind == "nsfw_caption":
        return col("nsfw_text_score").astype(float) >= 0.5
    return pd.Series(False, index=rows.index)


def planted_report(pool: Pool, web: DemoWeb, url_of: Callable[[str], str], *, subset: str | None,
                   final: str) -> dict[str, Any]:
    frame = _joined(pool).set_index("uid")
    in_subset = _uids_of(pool, f"subsets/{subset}/uids.parquet") if subset else set()
    in_final = _uids_of(pool, f"{final}/uids.parquet")
    dfn_cut = _dfn_cutoff(pool, subset) if subset else None
    groups = {**web.planted, "clean": web.clean}
    rows_out = []
    for kind, items in groups.items():
        uids = [make_uid(url_of(path), caption) for path, caption in items]
        rows = frame.reindex(uids)
        downloaded = int((rows["status"] == "success").sum())
        flagged = int(_flag(kind, rows, dfn_cut).sum())
        if kind in DEDUP_OF_KIND:  # a kept copy is fine when its original went: count what stays doubled
            left_subset = _still_duplicated(pool, DEDUP_OF_KIND[kind], uids, in_subset)
            left_final = _still_duplicated(pool, DEDUP_OF_KIND[kind], uids, in_final)
        else:
            left_subset = sum(u in in_subset for u in uids)
            left_final = sum(u in in_final for u in uids)
        rows_out.append({
            "kind": kind, "signal": SIGNALS[kind], "planted": len(uids), "downloaded": downloaded,
            "flagged_by_signal": flagged, "left_in_filtered_subset": left_subset, "left_in_final_set": left_final,
        })
    return {"dfn_cutoff": dfn_cut, "subset": subset, "final": final, "kinds": rows_out}


def print_planted(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="planted problems: caught by their signal, and what is left", title_justify="left")
    for col in ("kind", "planted", "fetched", "flagged", "subset", "final"):
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for r in report["kinds"]:
        table.add_row(r["kind"], str(r["planted"]), str(r["downloaded"]), str(r["flagged_by_signal"]),
                      str(r["left_in_filtered_subset"]), str(r["left_in_final_set"]))
    console.print(table)
    console.print("signals: " + "; ".join(f"{r['kind']}: {r['signal']}" for r in report["kinds"]), soft_wrap=True)
    console.print("subset/final: how many are left in the filtered subset and the final balanced set; for "
                  "duplicates, planted copies whose group still has two members there.")
