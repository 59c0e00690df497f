"""The comparison drawn as HTML: one section, the same in a run's report.html and in the
page of its own that `factory compare` writes (compare.html). Inline SVG and no
script library, like the report, so it opens offline."""

from __future__ import annotations

from html import escape
from typing import Any

from factory.outputs import charts
from factory.outputs.html_page import CHECK, PAGE

_chart = charts.figure
SCORES = ("mauve", "precision", "recall", "density", "coverage")
STATUS = {"over": "over-represented", "under": "under-represented", "balanced": "balanced"}


def render_page(result: dict[str, Any]) -> str:
    syn, ref = result["synthetic"], result["reference"]
    facts = [("synthetic", f"{syn['path']} ({syn['rows']:,} records)"),
             ("reference", f"{ref['path']} ({ref['rows']:,} records)"),
             ("sample", f"{syn['sampled']:,} a side"), ("embeddings", result["settings"]["model"])]
    items = "".join(f"<div class=fact><b>{escape(k)}</b><span>{escape(v)}</span></div>" for k, v in facts)
    header = f"<header><h1>Synthetic versus reference</h1><div class=facts>{items}</div></header>"
    return PAGE.format(title="factory compare", body=header + "\n" + comparison_section(result), check=CHECK)


def comparison_section(result: dict[str, Any]) -> str:
    n = result["synthetic"]["sampled"]
    scores = "".join(f"<div class=fact><b>{name}</b><span>{result[name]:.3f}</span></div>" for name in SCORES)
    vendi = result["vendi"]
    scores += (f"<div class=fact><b>vendi</b><span>{vendi['synthetic']:,.1f} synthetic · "
               f"{vendi['reference']:,.1f} reference</span></div>")
    note = (f"How far the synthetic records are from the reference, measured on {n:,} records drawn from each "
            f"side (seed {result['settings']['seed']}) and embedded with {result['settings']['model']}. "
            "MAUVE 1 = the same distribution. Precision: share of synthetic records that fall where reference "
            "records are (realism); recall: share of reference records the synthetic set reaches (breadth); "
            "density: like precision, weighted by how many reference neighbourhoods hold each one (about 1 when "
            "alike); coverage: share of reference neighbourhoods that hold a synthetic record. Vendi: the "
            "effective number of distinct records in each sample.")
    parts = [f"<div class=facts>{scores}</div>",
             _chart("compare-scores", charts.bars(list(SCORES), [result[s] for s in SCORES], "comparison scores")),
             _topics(result["topics"]), _map(result["map"]), _lengths(result["lengths"]),
             _distinct(result["distinct_n"]), _phrases(result["phrases"])]
    return (f"<section><h2>Reference comparison</h2><p class=note>{escape(note)}</p>" + "".join(parts)
            + "</section>")


def _topics(topics: list[dict]) -> str:
    labels = [f"T{t['topic']}: {', '.join(t['words'][:2])}" for t in topics]
    chart = _chart("compare-topics", charts.grouped_bars(
        labels, {"synthetic": [t["synthetic_share"] for t in topics],
                 "reference": [t["reference_share"] for t in topics]}, "topic shares"))
    rows = []
    for t in topics:
        examples = "".join(
            f"<details><summary>{side} examples</summary>"
            + "".join(f"<div class=quote>{escape(e)}</div>" for e in t["examples"][side]) + "</details>"
            for side in ("synthetic", "reference") if t["examples"][side])
        rows.append(f"<tr class='topic {t['status']}'><td>T{t['topic']}</td><td>{escape(t['label'])}{examples}</td>"
                    f"<td>{escape(STATUS[t['status']])}</td><td class=num>{t['synthetic']:,}</td>"
                    f"<td class=num>{t['reference']:,}</td><td class=num>{t['ratio']:g}</td>"
                    f"<td class=num>{t['p_value']:.2g}</td></tr>")
    table = ("<table><tr><th>topic</th><th>words and examples</th><th>synthetic side</th><th>synthetic</th>"
             "<th>reference</th><th>ratio</th><th>p</th></tr>" + "".join(rows) + "</table>")
    over = [t["label"] for t in topics if t["status"] == "over"]
    under = [t["label"] for t in topics if t["status"] == "under"]
    summary = ("Over-represented: " + ("; ".join(over) or "none") + ". Under-represented: "
               + ("; ".join(under) or "none") + ".")
    return (f"<h3>Topics <small>{len(topics)} clusters over both samples</small></h3>"
            f"<p class=note>Share of each side's sample in each cluster. {escape(summary)}</p>" + chart + table)


def _map(points: dict[str, list[list[float]]]) -> str:
    return ("<h3>Embedding map <small>PCA of both samples</small></h3>"
            + _chart("compare-map", charts.scatter(points, "embedding map")))


def _lengths(lengths: dict[str, Any]) -> str:
    if "histogram" not in lengths:
        return ""
    syn, ref = lengths["synthetic"], lengths["reference"]
    note = (f"Words per record, every record of each side. Median {syn['median']:g} synthetic, {ref['median']:g} "
            f"reference; Wasserstein-1 distance {lengths['wasserstein']:g} words, Jensen-Shannon distance "
            f"{lengths['js_distance']:.3f} (0 = same, 1 = disjoint) over the bins drawn (each labelled by where it "
            "starts; the last holds the longest 1%).")
    return "<h3>Lengths</h3>" + f"<p class=note>{escape(note)}</p>" + _chart(
        "compare-lengths", _shares_chart(lengths["histogram"], "lengths"))


def _distinct(distinct: dict[str, Any]) -> str:
    sizes = list(distinct)
    chart = _chart("compare-distinct", charts.grouped_bars(
        [f"distinct-{g}" for g in sizes], {side: [distinct[g]["corpus"][side] for g in sizes]
                                          for side in ("synthetic", "reference")}, "distinct-n"))
    rows = "".join(
        f"<tr><td>distinct-{g}</td><td class=num>{d['corpus']['synthetic']:.3f}</td>"
        f"<td class=num>{d['corpus']['reference']:.3f}</td>"
        f"<td class=num>{d['per_record'].get('wasserstein', 0):.3f}</td>"
        f"<td class=num>{d['per_record'].get('js_distance', 0):.3f}</td></tr>" for g, d in distinct.items())
    table = ("<table><tr><th></th><th>synthetic</th><th>reference</th><th>per record: Wasserstein-1</th>"
             "<th>per record: Jensen-Shannon</th></tr>" + rows + "</table>")
    note = ("Distinct n-grams over all n-grams of each same-size sample (higher = more varied wording), and how far "
            "apart the per-record shares are (repetition inside a record).")
    return "<h3>Distinct n-grams</h3>" + f"<p class=note>{escape(note)}</p>" + chart + table


def _phrases(phrases: dict[str, list[dict]]) -> str:
    if not phrases["over"] and not phrases["under"]:
        return ""
    cells = []
    for kind, title in (("over", "the synthetic side uses more"), ("under", "the synthetic side uses less")):
        items = "".join(f"<tr><td>{escape(p['phrase'])}</td><td class=num>{p['synthetic']:,}</td>"
                        f"<td class=num>{p['reference']:,}</td></tr>" for p in phrases[kind])
        cells.append(f"<td><b>{title}</b><table><tr><th>phrase</th><th>synthetic</th><th>reference</th></tr>"
                     f"{items}</table></td>")
    return ("<h3>Phrases</h3><p class=note>Word pairs one sample uses at least twice as often as the other.</p>"
            f"<table><tr>{''.join(cells)}</tr></table>")


def _shares_chart(histogram: dict[str, list[float]], label: str) -> str:
    edges = histogram["edges"]
    names = [f"{edges[i]:.3g}" for i in range(len(edges) - 1)]  # each bin by where it starts
    return charts.grouped_bars(names, {side: histogram[side] for side in ("synthetic", "reference")}, label)
