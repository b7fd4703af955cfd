"""The journey report as one self-contained HTML file: inline SVG and CSS, no script and nothing fetched,
so it opens offline, in a mail attachment, or as an MLflow artifact.

Every figure is drawn from `summary.json`'s numbers (`render_report(summary)`), so the page and the file
cannot disagree.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
END_COLOURS = {"converted": "#59a14f", "not converted": "#bab0ac", "other": "#d3d3d3"}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.muted { color: #666; } .cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.3rem; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { padding: .25rem .6rem; text-align: left; }
th { border-bottom: 2px solid #ccc; } td { border-bottom: 1px solid #eee; } td.num { text-align: right; }
.heat td { text-align: center; min-width: 3.2rem; border: 1px solid #fff; }
svg text { font: 12px system-ui, sans-serif; }
"""


def render_report(summary: dict[str, Any]) -> str:
    """The HTML page of a discovery `summary` (see `nextbest.discovery.summary`)."""
    touch = summary["overview"]["touch_column"].replace("_", " ")
    sections = [
        _overview(summary["overview"]),
        section(
            "Journeys, step by step",
            f"How journeys flow through their first touches by {touch}.",
            _sankey_svg(summary["sankey"]),
        ),
        section(
            "Funnel",
            _funnel_caption(summary["funnel"], summary["overview"]),
            _funnel_svg(summary["funnel"]),
        ),
        section(
            "Time to convert",
            _time_caption(summary["time_to_convert"]),
            _histogram_svg(summary["time_to_convert"]["histogram"]),
        ),
        section(
            "Most frequent paths",
            f"Paths by {touch} (repeats collapsed), most frequent first.",
            _paths_table(summary["paths"]["touch"]),
        ),
        section(
            "Where journeys stall",
            "The last touch of journeys that did not convert and then went quiet (churn or "
            "abandonment); the stall rate is the share of the journeys reaching that touch that stall there.",
            _stalls_table(summary["stalls"], touch),
        ),
        section(
            f"Transitions between {touch} values",
            f"Share of each {touch}'s next touches going to each {touch} "
            "(rows sum to 1); the switches that most often lead to a conversion follow.",
            _heatmap(summary["transitions"]) + _switches_table(summary["transitions"]["switches"]),
        ),
        section(
            "Attribution",
            _attribution_caption(summary["attribution"]),
            _attribution_svg(summary["attribution"]),
        ),
    ]
    if summary.get("moments_of_truth"):
        sections.append(
            section(
                "Moments of truth",
                "Touches whose removal moves the model's P(conversion) "
                "most, on average (occlusion with the sequence model).",
                _moments_table(summary["moments_of_truth"]),
            )
        )
    if summary.get("segments"):
        sections.append(
            section(
                "Segments",
                "Customers clustered on the sequence model's journey embeddings.",
                _segments_table(summary["segments"]),
            )
        )
    title = html.escape(summary["overview"].get("title", "Customer journeys"))
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def section(title: str, caption: str, body: str) -> str:
    """A titled section with its caption (shared with the monitoring report)."""
    return (
        f"<section><h2>{html.escape(title)}</h2><p class='muted'>{html.escape(caption)}</p>{body}</section>"
    )


def _overview(overview: dict[str, Any]) -> str:
    cards = [
        ("customers", f"{overview['customers']:,}"),
        ("events", f"{overview['events']:,}"),
        ("journeys", f"{overview['journeys']:,}"),
        ("converted", f"{overview['conversion_rate']:.1%}"),
        (f"{overview['touch_column']} values", f"{overview['touch_labels']:,}"),
    ]
    items = "".join(f"<div class='card'>{html.escape(k)}<b>{v}</b></div>" for k, v in cards)
    period = f"{overview['first_event']} to {overview['last_event']}" if overview.get("first_event") else ""
    conversion = f"Conversion: a <code>{html.escape(overview['conversion_event'])}</code> event. "
    return (
        f"<h1>{html.escape(overview.get('title', 'Customer journeys'))}</h1>"
        f"<p class='muted'>{conversion}{html.escape(period)}</p><div class='cards'>{items}</div>"
    )


def _sankey_svg(sankey: dict[str, Any], width: int = 1060, height: int = 420) -> str:
    nodes, links = sankey["nodes"], sankey["links"]
    if not links:
        return "<p>No journeys with touches.</p>"
    steps = max(n["step"] for n in nodes) + 1
    through = [0] * len(nodes)
    for link in links:
        through[link["source"]] += link["journeys"]
    incoming = [0] * len(nodes)
    for link in links:
        incoming[link["target"]] += link["journeys"]
    size = [max(o, i) for o, i in zip(through, incoming, strict=True)]
    gap, node_width = 10, 14
    column_total = [sum(size[i] for i, n in enumerate(nodes) if n["step"] == s) for s in range(steps)]
    column_count = [sum(1 for n in nodes if n["step"] == s) for s in range(steps)]
    scale = min(
        (height - 20 - gap * (c - 1)) / max(t, 1) for t, c in zip(column_total, column_count, strict=True)
    )
    x_step = (width - 140) / max(steps - 1, 1)
    top, y = {}, {s: 10.0 for s in range(steps)}
    for i, node in enumerate(nodes):
        top[i] = y[node["step"]]
        y[node["step"]] += size[i] * scale + gap
    colour = _colours([n["label"] for n in nodes])
    out_offset = {i: 0.0 for i in range(len(nodes))}
    in_offset = {i: 0.0 for i in range(len(nodes))}
    bands = []
    for link in sorted(links, key=lambda link: (link["source"], link["target"])):
        s, t, value = link["source"], link["target"], link["journeys"]
        thickness = value * scale
        x0 = nodes[s]["step"] * x_step + node_width
        x1 = nodes[t]["step"] * x_step
        y0 = top[s] + out_offset[s] + thickness / 2
        y1 = top[t] + in_offset[t] + thickness / 2
        out_offset[s] += thickness
        in_offset[t] += thickness
        middle = (x0 + x1) / 2
        label = html.escape(f"{nodes[s]['label']} → {nodes[t]['label']}: {value:,} journeys")
        bands.append(
            f"<path d='M{x0:.1f},{y0:.1f} C{middle:.1f},{y0:.1f} {middle:.1f},{y1:.1f} {x1:.1f},{y1:.1f}' "
            f"stroke='{colour[nodes[t]['label']]}' stroke-opacity='.35' "
            f"stroke-width='{max(thickness, 1):.1f}' fill='none'>"
            f"<title>{label}</title></path>"
        )
    boxes = []
    for i, node in enumerate(nodes):
        x, h = node["step"] * x_step, max(size[i] * scale, 1)
        name = html.escape(node["label"])
        boxes.append(
            f"<rect x='{x:.1f}' y='{top[i]:.1f}' width='{node_width}' height='{h:.1f}' "
            f"fill='{colour[node['label']]}'><title>{name}: {size[i]:,} journeys</title></rect>"
            f"<text x='{x + node_width + 4:.1f}' y='{top[i] + h / 2 + 4:.1f}'>{name}</text>"
        )
    return f"<svg width='{width}' height='{height}' role='img'>{''.join(bands)}{''.join(boxes)}</svg>"


def _colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label, the same at every step (end nodes and "other" in fixed greys and green)."""
    colours = dict(END_COLOURS)
    for label in labels:
        colours.setdefault(label, PALETTE[(len(colours) - len(END_COLOURS)) % len(PALETTE)])
    return colours


def _bars_svg(items: Sequence[tuple[str, float, str]], width: int = 760, bar: int = 22) -> str:
    """Horizontal bars: (label, value in [0, max], text shown after the bar)."""
    if not items:
        return "<p>Nothing to show.</p>"
    biggest = max(value for _, value, _ in items) or 1.0
    label_width, rows = 220, []
    for i, (label, value, text) in enumerate(items):
        y = i * (bar + 6)
        length = (width - label_width - 260) * value / biggest
        rows.append(
            f"<text x='{label_width - 8}' y='{y + bar * 0.7:.1f}' text-anchor='end'>"
            f"{html.escape(label)}</text>"
            f"<rect x='{label_width}' y='{y}' width='{max(length, 0.5):.1f}' height='{bar}' "
            f"fill='{PALETTE[0]}'><title>{html.escape(f'{label}: {text}')}</title></rect>"
            f"<text x='{label_width + length + 6:.1f}' y='{y + bar * 0.7:.1f}'>{html.escape(text)}</text>"
        )
    return f"<svg width='{width}' height='{len(items) * (bar + 6)}' role='img'>{''.join(rows)}</svg>"


def _funnel_svg(funnel: list[dict[str, Any]]) -> str:
    items = [
        (
            stage["stage"],
            float(stage["journeys"]),
            f"{stage['journeys']:,} ({stage['share_of_all']:.1%}; drop-off {stage['drop_off']:.1%})",
        )
        for stage in funnel
    ]
    return _bars_svg(items)


def _funnel_caption(funnel: list[dict[str, Any]], overview: dict[str, Any]) -> str:
    """The funnel counts a journey at a stage only once it has passed every earlier stage in order, so its
    last bar, when that is the conversion, is smaller than the header's conversion rate: say by how much."""
    caption = "Journeys reaching each stage in order, and the share lost at each step."
    if not funnel or funnel[-1]["stage"] != overview["conversion_event"]:
        return caption
    last, converted = funnel[-1], overview["converted_journeys"]
    return (
        f"{caption} The last bar counts the {last['journeys']:,} journeys ({last['share_of_all']:.1%}) that "
        f"converted after passing every stage above in this order; {converted:,} journeys converted in all "
        f"({overview['conversion_rate']:.1%}, the conversion rate above), {converted - last['journeys']:,} "
        "of them by another route (skipping a stage, or taking the stages in another order)."
    )


def _time_caption(time_to_convert: dict[str, Any]) -> str:
    quantiles = time_to_convert["quantiles_hours"]
    if not quantiles:
        return "No converted journey with a touch before its conversion."
    return (
        f"Time from a converted journey's first touch to its conversion ({time_to_convert['journeys']:,} "
        f"journeys): median {duration(quantiles['p50'])}, 10% within {duration(quantiles['p10'])}, 90% "
        f"within {duration(quantiles['p90'])}."
    )


def _histogram_svg(histogram: list[dict[str, Any]]) -> str:
    def span(row: dict[str, Any]) -> str:
        if row["to_hours"] is None:
            return f"over {duration(row['from_hours'])}"
        if row["from_hours"] == 0:
            return f"under {duration(row['to_hours'])}"
        return f"{duration(row['from_hours'])} to {duration(row['to_hours'])}"

    return _bars_svg([(span(row), float(row["journeys"]), f"{row['journeys']:,}") for row in histogram])


def duration(hours: float) -> str:
    """A duration as people say it, in one unit with at most one decimal: "15 min", "5.2 h", "63 days"."""
    if hours * 60 < 59.5:  # what would round to "60 min" reads "1 h"
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{_one_decimal(hours)} h"
    days = hours / 24
    return f"{_one_decimal(days) if days < 10 else f'{days:.0f}'} days"


def _one_decimal(value: float) -> str:
    """`value` to one decimal, without a trailing ".0"."""
    return f"{value:.1f}".removesuffix(".0")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table, the columns at `numeric` right-aligned (shared with the monitoring report)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{html.escape(str(v))}</td>"
            if i in numeric
            else f"<td>{html.escape(str(v))}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _paths_table(paths: list[dict[str, Any]]) -> str:
    rows = [
        (
            " → ".join(p["path"]) or "(no touch)",
            f"{p['journeys']:,}",
            f"{p['conversions']:,}",
            f"{p['conversion_rate']:.1%}",
        )
        for p in paths
    ]
    return table(("path", "journeys", "conversions", "conversion rate"), rows, numeric=(1, 2, 3))


def _stalls_table(stalls: dict[str, list[dict[str, Any]]], touch: str) -> str:
    parts = []
    for level, rows in stalls.items():
        parts.append(f"<h3>by {html.escape(touch if level == 'touch' else level.replace('_', ' '))}</h3>")
        parts.append(
            table(
                ("last touch", "stalled journeys", "share of stalls", "stall rate"),
                [
                    (
                        r["touch"],
                        f"{r['stalled_journeys']:,}",
                        f"{r['share_of_stalls']:.1%}",
                        f"{r['stall_rate']:.1%}",
                    )
                    for r in rows
                ],
                numeric=(1, 2, 3),
            )
        )
    return "".join(parts)


def _heatmap(transitions: dict[str, Any], most: int = 12) -> str:
    """Row-normalised shares between the `most` busiest labels (summary.json holds them all)."""
    labels, counts = transitions["labels"], transitions["counts"]
    volume = [sum(counts[i]) + sum(row[i] for row in counts) for i in range(len(labels))]
    used = sorted(sorted(range(len(labels)), key=lambda i: -volume[i])[:most])
    used = [i for i in used if volume[i]]
    head = "<th>from \\ to</th>" + "".join(f"<th>{html.escape(labels[j])}</th>" for j in used)
    rows = []
    for i in used:
        total = sum(counts[i]) or 1
        cells = []
        for j in used:
            share = counts[i][j] / total
            cells.append(
                f"<td style='background: rgba(78,121,167,{share:.3f})' title='{counts[i][j]:,}'>"
                f"{share:.0%}</td>"
            )
        rows.append(f"<tr><th>{html.escape(labels[i])}</th>{''.join(cells)}</tr>")
    return f"<table class='heat'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _switches_table(switches: list[dict[str, Any]], limit: int = 10) -> str:
    best = sorted(switches, key=lambda s: (-s["transitions"], s["from"], s["to"]))[:limit]
    rows = [(s["from"], s["to"], f"{s['transitions']:,}", f"{s['conversion_rate']:.1%}") for s in best]
    return table(("from", "to", "switches", "journeys converting after"), rows, numeric=(2, 3))


def _attribution_caption(attribution: dict[str, Any]) -> str:
    markov = attribution["markov"]
    return (
        f"Share of conversions credited to each touch label. Markov (order {markov['order']}): removal "
        f"effects normalised, from an absorbing chain solved exactly (P(conversion) = "
        f"{markov['conversion_probability']:.3f}); first touch, last touch and linear for comparison."
    )


def _attribution_svg(attribution: dict[str, Any]) -> str:
    models = {
        "Markov": attribution["markov"]["shares"],
        **{name.replace("_", " "): shares for name, shares in attribution["touch"].items()},
    }
    shares = attribution["markov"]["shares"]
    channels = [c for c in sorted(shares, key=lambda c: -shares[c]) if shares[c] > 0][:12]
    width, bar, label_width = 760, 12, 160
    biggest = max((shares.get(c, 0.0) for shares in models.values() for c in channels), default=0.0) or 1.0
    rows, y = [], 0
    for channel in channels:
        rows.append(
            f"<text x='{label_width - 8}' y='{y + 2 * bar:.1f}' text-anchor='end'>"
            f"{html.escape(channel)}</text>"
        )
        for m, (name, shares) in enumerate(models.items()):
            value = shares.get(channel, 0.0)
            length = (width - label_width - 80) * value / biggest
            rows.append(
                f"<rect x='{label_width}' y='{y}' width='{max(length, 0.5):.1f}' height='{bar - 1}' "
                f"fill='{PALETTE[m]}'><title>{html.escape(f'{channel}, {name}: {value:.1%}')}</title></rect>"
                f"<text x='{label_width + length + 4:.1f}' y='{y + bar - 2}'>{value:.1%}</text>"
            )
            y += bar
        y += 10
    legend = "".join(
        f"<rect x='{label_width + i * 130}' y='{y + 4}' width='12' height='12' fill='{PALETTE[i]}'/>"
        f"<text x='{label_width + i * 130 + 16}' y='{y + 15}'>{html.escape(name)}</text>"
        for i, name in enumerate(models)
    )
    return f"<svg width='{width}' height='{y + 24}' role='img'>{''.join(rows)}{legend}</svg>"


def _moments_table(moments: list[dict[str, Any]]) -> str:
    rows = [(m["touch"], f"{m['mean_effect']:+.4f}", f"{m['touches']:,}") for m in moments]
    return table(("touch", "mean change of P(conversion)", "touches"), rows, numeric=(1, 2))


def _segments_table(segments: list[dict[str, Any]]) -> str:
    rows = [
        (
            s["segment"],
            f"{s['customers']:,}",
            f"{s['conversion_rate']:.1%}",
            f"{s['churn_rate']:.1%}",
            " → ".join(s["typical_path"]) or "(no touch)",
            s.get("next_best_action") or "",
        )
        for s in segments
    ]
    header = ("segment", "customers", "conversion", "churn", "typical path", "most valuable next action")
    return table(header, rows, numeric=(1, 2, 3))
