"""Render the statistics as one self-contained HTML page: inline CSS, data: URI images, no URLs."""

from __future__ import annotations

import html
from typing import Any

from curate.stats import plots

SECTIONS = [
    ("funnel", "Funnel"),
    ("download", "Download"),
    ("scores", "Score distributions"),
    ("language", "Language mix"),
    ("captions", "Caption lengths"),
    ("image-sizes", "Image sizes"),
    ("dedup", "Duplicates"),
    ("filter", "Filter conditions"),
    ("thresholds", "Samples around each threshold"),
    ("balance", "Balancing"),
    ("exports", "Exports"),
    ("evaluation", "Evaluation"),
]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px} table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;
font-size:13px} td.n{text-align:right;font-variant-numeric:tabular-nums} .absent{color:#888;font-style:italic}
figure{display:inline-block;margin:4px;border:1px solid #eee} .grid{display:flex;flex-wrap:wrap;gap:6px}
.card{width:130px;font-size:11px;border:1px solid #ddd;padding:3px} .card img{display:block;margin:auto}
.kept{background:#eef7ee} .removed{background:#f9ecec} nav a{margin-right:10px;font-size:13px}
"""

# The page fills its own table of contents; a broken page shows up as a console error in tests.
SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var nav = document.getElementById('toc');
  document.querySelectorAll('section[data-title]').forEach(function (s) {
    var a = document.createElement('a');
    a.href = '#' + s.id;
    a.textContent = s.dataset.title + (s.dataset.present === 'true' ? '' : ' (absent)');
    nav.appendChild(a);
  });
  document.body.dataset.rendered = 'true';
});
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else esc(value)


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{fmt(c)}</td>' if isinstance(c, int | float) else f"<td>{fmt(c)}</td>"
                         for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fig(svg: str | None, caption: str) -> str:
    return f"<figure data-plot='{esc(caption)}'>{svg}</figure>" if svg else ""


def img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">' if uri else ""


def _funnel(stats: dict[str, Any]) -> str:
    rows, steps = [], []
    for st in stats["funnel"]["stages"]:
        name = st["stage"]
        if not st["present"]:
            rows.append((name, "absent", None))
            continue
        if name in ("candidates", "download", "score"):
            detail = f"of {st['attempted']:,} attempted" if name == "download" else ""
            if name == "score":
                detail = ", ".join(f"{k}: {v:,}" for k, v in st["per_scorer"].items() if v is not None)
            rows.append((name, detail, st["rows"]))
            steps.append((name, st["rows"] or 0))
        else:
            key = {"dedup": "per_method", "filter": "per_subset", "balance": "per_set", "export": "per_export"}[name]
            for sub, value in st[key].items():
                if isinstance(value, dict):
                    rows.append((f"{name}: {sub}", f"{value['duplicates']:,} duplicates", value["rows"]
                                 - value["duplicates"]))
                    steps.append((f"{name}: {sub} (unique)", value["rows"] - value["duplicates"]))
                else:
                    rows.append((f"{name}: {sub}", "", value))
                    steps.append((f"{name}: {sub}", value or 0))
    return table(rows, ("stage", "detail", "samples")) + fig(plots.bar_svg(dict(steps), "samples per stage"), "funnel")


def _download(sec: dict[str, Any]) -> str:
    rate = sec["success_rate"]
    out = f"<p>{sec['attempted']:,} candidates in {sec['shards']:,} shards; success rate {100 * rate:.1f}%.</p>"
    out += table(list(sec["status"].items()), ("status", "samples"))
    out += fig(plots.bar_svg(sec["status"], "download status"), "download status")
    if sec["top_errors"]:
        out += "<h3>Most frequent error messages</h3>" + table(list(sec["top_errors"].items()), ("error", "samples"))
    return out


def _scores(sec: dict[str, Any], cuts: dict[str, list[float]]) -> str:
    note = " (a seeded row sample)" if sec["sampled"] else ""
    out = f"<p>{sec['rows']:,} samples{note}; scorers: {esc(', '.join(sec['scorers']))}.</p><div class='plots'>"
    rows = []
    for col, h in sec["histograms"].items():
        out += fig(plots.histogram_svg(h, col, col, cuts.get(col)), f"histogram of {col}")
        q = h.get("quantiles", {})
        rows.append((col, h["scorer"], h.get("min"), q.get("p10"), q.get("p50"), q.get("p90"), h.get("max"),
                     h["missing"]))
    out += "</div>" + table(rows, ("column", "scorer", "min", "p10", "median", "p90", "max", "missing"))
    return out


def _language(sec: dict[str, Any]) -> str:
    return table(list(sec["counts"].items()), ("lang", "samples")) + fig(plots.bar_svg(sec["counts"], "languages"),
                                                                         "languages")


def _captions(sec: dict[str, Any]) -> str:
    return (f"<p>From {esc(sec['source'])}.</p><div class='plots'>"
            + fig(plots.histogram_svg(sec["words"], "caption words", "words"), "caption words")
            + fig(plots.histogram_svg(sec["chars"], "caption characters", "characters"), "caption characters")
            + "</div>")


def _sizes(sec: dict[str, Any]) -> str:
    out = "<div class='plots'>"
    for key in ("original_width", "original_height", "aspect_ratio", "width", "height"):
        if key in sec:
            out += fig(plots.histogram_svg(sec[key], key, key), key)
    return out + "</div>"


def _dedup(sec: dict[str, Any]) -> str:
    out = ""
    for m, d in sec["methods"].items():
        out += (f"<h3>{esc(m)}</h3><p>{d['rows']:,} rows, {d['duplicates']:,} marked duplicate, {d['groups']:,} "
                f"groups, largest {d['largest_group']:,}.</p>")
        out += fig(plots.bar_svg(d["group_size_counts"], f"{m}: groups by size"),
                   f"{m} group sizes")
    return out


def _filter(subsets: dict[str, Any]) -> str:
    out = ""
    for name, info in subsets.items():
        funnel = info.get("funnel") or {}
        out += f"<h3>{esc(name)}</h3><p>{info['kept']:,} samples kept"
        if funnel.get("population"):
            out += f" of {funnel['population']:,}"
        out += ".</p>"
        rows = [(c.get("condition"), c.get("removed_alone"), c.get("removed_in_order"), c.get("removed_only_by_this"),
                 c.get("remaining")) for c in funnel.get("conditions") or []]
        if rows:
            out += table(rows, ("condition", "removed alone", "removed in order", "only by this", "remaining"))
        else:
            out += "<p class='absent'>No funnel.json for this subset.</p>"
    return out


def _card(item: dict[str, Any], side: str) -> str:
    return (f"<div class='card {side}'>{img(item.get('thumb'), item['uid'])}<div>{fmt(item['score'])}</div>"
            f"<div>{esc(item['caption'][:120])}</div></div>")


def _thresholds(grids: list[dict[str, Any]]) -> str:
    out = ""
    for g in grids:
        out += (f"<h3>{esc(g['subset'])}: {esc(g['column'])} {esc(g['op'])} {fmt(g['threshold'])}</h3>"
                "<p>Kept, closest to the cut first:</p><div class='grid'>"
                + "".join(_card(i, "kept") for i in g["kept"]) + "</div><p>Removed, closest to the cut first:</p>"
                "<div class='grid'>" + "".join(_card(i, "removed") for i in g["removed"]) + "</div>")
    return out


def _balance(balanced: dict[str, Any]) -> str:
    out = ""
    for name, info in balanced.items():
        out += f"<h3>{esc(name)}</h3><p>{fmt(info['kept'])} samples kept.</p>"
        ec = info.get("entry_counts")
        if ec:
            out += f"<p>{ec['entries']:,} metadata entries.</p>"
            out += fig(plots.rank_curves_svg(ec["curves"], f"{name}: entry counts, head to tail"), "entry counts")
        else:
            out += "<p class='absent'>No entry_counts.parquet for this set.</p>"
    return out


def _exports(exports: dict[str, Any]) -> str:
    rows = [(n, r.get("subset"), r.get("samples_written"), len(r.get("output_shards") or []),
             sum((r.get("missing_uids") or {}).values())) for n, r in exports.items()]
    return table(rows, ("export", "subset", "samples", "shards", "missing uids"))


def _evaluation(evals: dict[str, Any]) -> str:
    from curate.evaluation.report import metric_title

    out = ("<p>Proxy training at equal compute (<code>curate eval</code>): one small CLIP per arm and seed; "
           "bars are the mean over seeds, whiskers ± one standard deviation. Each curated arm is compared with "
           "a random subset of the pool of the same size and with the whole pool (paired bootstrap over seeds "
           "and evaluation examples).</p>")
    for name, res in evals.items():
        preset = res.get("preset", {})
        out += (f"<h3>{esc(name)}: {esc(preset.get('model'))}, {fmt(preset.get('samples_seen'))} samples seen, "
                f"seeds {esc(res.get('seeds'))}</h3>")
        arms = res.get("arms", {})
        keys = sorted({k for a in arms.values() for k in a.get("metrics", {})
                       if k.endswith(("zeroshot_top1", "zeroshot_top5"))})
        figs = [fig(plots.interval_bars_svg([(arm, a["metrics"][k]["mean"], a["metrics"][k]["std"])
                                             for arm, a in arms.items() if k in a.get("metrics", {})],
                                            metric_title(k), "accuracy %"), metric_title(k)) for k in keys]
        out += f"<div class='grid'>{''.join(figs)}</div>"
        all_keys = sorted({k for a in arms.values() for k in a.get("metrics", {})})
        rows = [(arm, a.get("kind"), a.get("size"),
                 *(f"{a['metrics'][k]['mean']:.1f} ± {a['metrics'][k]['std']:.1f}" if k in a.get("metrics", {})
                   else "—" for k in all_keys)) for arm, a in arms.items()]
        out += table(rows, ("arm", "kind", "samples", *(metric_title(k) + " %" for k in all_keys)))
        comp = [(c["arm"], c["against"], metric_title(c["metric"]), f"{c['difference_pp']:+.1f}",
                 f"[{c['ci_low_pp']:+.1f}, {c['ci_high_pp']:+.1f}]", c["verdict"]) for c in res.get("comparisons", [])]
        out += table(comp, ("arm", "against", "metric", "difference (pp)", "CI", "verdict"))
    return out


def _planted(planted: dict[str, Any]) -> str:
    rows = [(r["kind"], r["planted"], r["downloaded"], r["flagged_by_signal"], r["left_in_filtered_subset"],
             r["left_in_final_set"], r["signal"]) for r in planted["kinds"]]
    note = ("<p>Problems planted in the demo pool, how many the signal meant for each flagged, and how many are "
            "left in the filtered subset and the final set (for duplicates: copies whose group still has two "
            "members there).</p>")
    return note + table(rows, ("kind", "planted", "downloaded", "flagged", "left in subset", "left in final",
                               "signal"))


def render_html(stats: dict[str, Any], grids: list[dict[str, Any]]) -> str:
    cuts: dict[str, list[float]] = {}
    for g in grids:
        cuts.setdefault(g["column"], []).append(g["threshold"])
    present = {
        "funnel": True, "download": stats["download"]["present"], "scores": stats["scores"]["present"],
        "language": stats["language"]["present"], "captions": stats["captions"]["present"],
        "image-sizes": stats["image_sizes"]["present"], "dedup": stats["dedup"]["present"],
        "filter": bool(stats["subsets"]), "thresholds": bool(grids), "balance": bool(stats["balanced"]),
        "exports": bool(stats["exports"]),
        "evaluation": bool(stats.get("evals")),
    }
    absent_text = {
        "download": stats["download"].get("absent_reason"), "scores": stats["scores"].get("absent_reason"),
        "language": stats["language"].get("absent_reason"), "captions": stats["captions"].get("absent_reason"),
        "image-sizes": stats["image_sizes"].get("absent_reason"), "dedup": stats["dedup"].get("absent_reason"),
        "filter": "no filter subsets (subsets/<spec>/uids.parquet)",
        "thresholds": "no threshold conditions in any applied spec (subsets/<spec>/spec.json)",
        "balance": "no balanced sets (balanced/<name>/uids.parquet)",
        "exports": "no exports (exports/<name>/report.json)",
        "evaluation": "no evaluations (evals/<name>/results.json, written by `curate eval`)",
    }
    render = {
        "funnel": lambda: _funnel(stats), "download": lambda: _download(stats["download"]),
        "scores": lambda: _scores(stats["scores"], cuts), "language": lambda: _language(stats["language"]),
        "captions": lambda: _captions(stats["captions"]), "image-sizes": lambda: _sizes(stats["image_sizes"]),
        "dedup": lambda: _dedup(stats["dedup"]), "filter": lambda: _filter(stats["subsets"]),
        "thresholds": lambda: _thresholds(grids), "balance": lambda: _balance(stats["balanced"]),
        "exports": lambda: _exports(stats["exports"]),
        "evaluation": lambda: _evaluation(stats["evals"]),
    }
    parts = []
    for sid, title in SECTIONS:
        body = render[sid]() if present[sid] else f"<p class='absent'>Absent: {esc(absent_text[sid])}.</p>"
        parts.append(f"<section id='{sid}' data-title='{esc(title)}' data-present='{str(present[sid]).lower()}'>"
                     f"<h2>{esc(title)}</h2>{body}</section>")
    if stats.get("planted"):  # only demo pools have one; other pools show no empty section for it
        parts.insert(0, "<section id='planted' data-title='Planted problems' data-present='true'>"
                        f"<h2>Planted problems</h2>{_planted(stats['planted'])}</section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>curate pool statistics: {esc(stats['pool'])}</title><style>{CSS}</style></head><body>"
            f"<h1>Pool statistics</h1><p>{esc(stats['pool'])} — generated {esc(stats['generated'])}</p>"
            f"<nav id='toc'></nav>{''.join(parts)}<script>{SCRIPT}</script></body></html>")
