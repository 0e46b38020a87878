"""The report's charts as inline SVG written by hand: no script, no library, no network, so
report.html stays one file that opens anywhere (and prints). Each function takes report data
and returns one <svg> string; every label is escaped."""

from __future__ import annotations

import math
from html import escape

from shared.report import format as fmt

WIDTH = 760
LABEL_W = 190  # left column for row labels
VALUE_W = 110  # right column for value labels
FOREST_VALUE_W = 170  # "INCONCLUSIVE +14.0 pp"
LEGEND_H = 22
ROW_H = 22
TOP, BOTTOM = 30, 34
VERDICT_COLOURS = {"GO": "#1a7f37", "NO-GO": "#cf222e", "INCONCLUSIVE": "#9a6700"}
JUDGE_COLOUR = "#8c959f"
PALETTE = ("#0969da", "#8250df", "#bf3989", "#1a7f37", "#bc4c00", "#6e7781")


def svg_chart(name: str, title: str, height: float, body: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{name}" role="img" '
        f'width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


class _Scale:
    """Maps data values on [low, high] to x pixels of the plot area."""

    def __init__(self, low: float, high: float, value_width: float = VALUE_W) -> None:
        self.low, self.high = low, high if high > low else low + 1.0
        self.left, self.right = LABEL_W, WIDTH - value_width

    def __call__(self, value: float) -> float:
        return self.left + (value - self.low) / (self.high - self.low) * (self.right - self.left)

    def ticks(self, count: int = 6) -> list[float]:
        return round_ticks(self.low, self.high, count)


def round_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) inside [low, high] (high > low)."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _axis(scale: _Scale, y: float, label) -> list[str]:
    parts = [f'<line x1="{scale.left}" y1="{y}" x2="{scale.right}" y2="{y}" class="axis"/>']
    for tick in scale.ticks():
        x = scale(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle" class="tick">{escape(label(tick))}</text>')
    return parts


def _row_label(y: float, text: str) -> str:
    return f'<text x="{LABEL_W - 8}" y="{y + 4}" text-anchor="end" class="label">{escape(text)}</text>'


def forest(data: dict) -> str | None:
    """Improvement (candidate - baseline, points) per agent with its interval; a dashed orange
    tick marks each row's required improvement, the grey line zero."""
    rows = [c for c in data["comparisons"] if c["ci95_abs"] is not None]
    if not rows:
        return None
    values = [v for c in rows for v in (*c["ci95_abs"], c["threshold_abs"])] + [0.0]
    scale = _Scale(max(-1.0, min(values) - 0.05), min(1.0, max(values) + 0.05), value_width=FOREST_VALUE_W)
    height = TOP + ROW_H * len(rows) + BOTTOM + LEGEND_H
    zero = scale(0.0)
    body = [f'<line x1="{zero:.1f}" y1="{TOP - 6}" x2="{zero:.1f}" y2="{height - BOTTOM}" class="zero"/>']
    for i, c in enumerate(rows):
        y = TOP + ROW_H * i + ROW_H / 2
        low, high = c["ci95_abs"]
        colour = VERDICT_COLOURS[c["decision"]]
        threshold = scale(c["threshold_abs"])
        label = "ALL (pooled)" if c["agent"] == "ALL" else c["agent"]
        body += [
            _row_label(y, f"{label} · {c['candidate']}"),
            f'<line x1="{threshold:.1f}" y1="{y - 8}" x2="{threshold:.1f}" y2="{y + 8}" class="threshold"/>',
            f'<line x1="{scale(low):.1f}" y1="{y}" x2="{scale(high):.1f}" y2="{y}" stroke="{colour}" stroke-width="3"/>',
            f'<circle cx="{scale(c["improvement_abs"]):.1f}" cy="{y}" r="5" fill="{colour}"/>',
            f'<text x="{WIDTH - FOREST_VALUE_W + 10}" y="{y + 4}" class="value" fill="{colour}">'
            f'{escape(c["decision"])} {100 * c["improvement_abs"]:+.1f} pp</text>',
        ]
    axis_y = height - BOTTOM - LEGEND_H + 4
    body += _axis(scale, axis_y, lambda v: f"{100 * v:+.0f} pp")
    legend_y = axis_y + 34
    body += [
        f'<line x1="{LABEL_W}" y1="{legend_y - 4}" x2="{LABEL_W + 24}" y2="{legend_y - 4}" stroke="#57606a" stroke-width="3"/>',
        f'<text x="{LABEL_W + 30}" y="{legend_y}" class="tick">interval (dot: observed)</text>',
        f'<line x1="{LABEL_W + 200}" y1="{legend_y - 10}" x2="{LABEL_W + 200}" y2="{legend_y + 2}" class="threshold"/>',
        f'<text x="{LABEL_W + 208}" y="{legend_y}" class="tick">required improvement</text>',
        f'<line x1="{LABEL_W + 370}" y1="{legend_y - 10}" x2="{LABEL_W + 370}" y2="{legend_y + 2}" class="zero"/>',
        f'<text x="{LABEL_W + 378}" y="{legend_y}" class="tick">no difference</text>',
    ]
    level = f"{data['confidence']:.0%}"
    return svg_chart("forest", "Improvement over the baseline (candidate - baseline, points) with its "
                     f"{level} family-wise interval", height, body)


def _bars(name: str, title: str, items: list[tuple[str, list[tuple[float, str]], str]],
          legend: list[tuple[str, str]] = ()) -> str | None:
    """Horizontal bars, stacked: (label, [(value >= 0, colour), ...], value text) per row;
    `legend` names the segments as (text, colour)."""
    if not items:
        return None
    scale = _Scale(0.0, max(sum(v for v, _ in segments) for _, segments, _ in items) or 1.0)
    height = TOP + ROW_H * len(items) + BOTTOM + (LEGEND_H if legend else 0)
    body = []
    for i, (label, segments, text) in enumerate(items):
        y = TOP + ROW_H * i
        body.append(_row_label(y + ROW_H / 2, label))
        start = 0.0
        for value, colour in segments:
            if value > 0 or start == 0.0:
                body.append(f'<rect x="{scale(start):.1f}" y="{y + 3}" width="{max(scale(start + value) - scale(start), 1):.1f}" '
                            f'height="{ROW_H - 6}" fill="{colour}"/>')
            start += value
        body.append(f'<text x="{WIDTH - 8}" y="{y + ROW_H / 2 + 4}" text-anchor="end" class="value">{escape(text)}</text>')
    legend_y = TOP + ROW_H * len(items) + 16
    for i, (text, colour) in enumerate(legend):
        x = LABEL_W + 180 * i
        body += [f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>',
                 f'<text x="{x + 18}" y="{legend_y}" class="tick">{escape(text)}</text>']
    return svg_chart(name, title, height, body)


def _colours(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def accuracy(data: dict) -> str | None:
    colour = _colours([b["backend"] for b in data["by_backend"]])
    items = [(f"{b['agent']} · {b['backend']}", [(b["accuracy"], colour[b["backend"]])], fmt.pct(b["accuracy"]))
             for b in data["backends"] if b["accuracy"] is not None]
    return _bars("accuracy", "Accuracy per agent and backend (mean score over ok jobs)", items)


def latency(data: dict) -> str | None:
    """A box per backend: p25-p75 box, median bar, whiskers from the fastest to p95, a dot at
    the slowest."""
    rows = [b for b in data["by_backend"] if b["latency_ms"]]
    if not rows:
        return None
    colour = _colours([b["backend"] for b in data["by_backend"]])
    scale = _Scale(0.0, max(b["latency_ms"]["p100"] for b in rows))
    height = TOP + ROW_H * len(rows) + BOTTOM
    body = []
    for i, b in enumerate(rows):
        q = b["latency_ms"]
        y = TOP + ROW_H * i + ROW_H / 2
        c = colour[b["backend"]]
        body += [
            _row_label(y, b["backend"]),
            f'<line x1="{scale(q["p0"]):.1f}" y1="{y}" x2="{scale(q["p95"]):.1f}" y2="{y}" stroke="{c}"/>',
            f'<rect x="{scale(q["p25"]):.1f}" y="{y - 7}" width="{max(scale(q["p75"]) - scale(q["p25"]), 1):.1f}" '
            f'height="14" fill="{c}" fill-opacity="0.35" stroke="{c}"/>',
            f'<line x1="{scale(q["p50"]):.1f}" y1="{y - 7}" x2="{scale(q["p50"]):.1f}" y2="{y + 7}" stroke="{c}" stroke-width="3"/>',
            f'<circle cx="{scale(q["p100"]):.1f}" cy="{y}" r="3" fill="{c}"/>',
            f'<text x="{WIDTH - 8}" y="{y + 4}" text-anchor="end" class="value">p50 {escape(fmt.ms(q["p50"]))}</text>',
        ]
    body += _axis(scale, height - BOTTOM + 4, lambda v: f"{v:,.0f} ms")
    return svg_chart("latency", "Latency per backend (box p25-p75, bar median, whiskers to p95, dot slowest)", height, body)


def cost(data: dict) -> list[str]:
    """Cost per backend with the judge's calls stacked on its inference (grey), then the
    inference cost per point of accuracy."""
    colour = _colours([b["backend"] for b in data["by_backend"]])
    judged = any(b["judge_cost_usd"] for b in data["by_backend"])
    per_backend = _bars(
        "cost", "Cost per backend (USD): inference" + (", judge stacked in grey" if judged else ""),
        [(b["backend"], [(b["cost_usd"], colour[b["backend"]]), (b["judge_cost_usd"], JUDGE_COLOUR)],
          fmt.usd(b["total_cost_usd"]))
         for b in data["by_backend"]],
        legend=[("inference (backend colour)", PALETTE[0]), ("judge", JUDGE_COLOUR)] if judged else [])
    per_point = _bars("cost-per-point", "Inference cost per point of accuracy (USD per percentage point)", [
        (b["backend"], [(b["cost_per_accuracy_point_usd"], colour[b["backend"]])], fmt.usd(b["cost_per_accuracy_point_usd"]))
        for b in data["by_backend"] if b["cost_per_accuracy_point_usd"] is not None])
    return [svg for svg in (per_backend, per_point) if svg]


def chart(name: str, data: dict) -> list[str]:
    """The SVGs of one chart block (none when there is nothing to draw)."""
    if name == "cost":
        return cost(data)
    drawn = {"forest": forest, "accuracy": accuracy, "latency": latency}[name](data)
    return [drawn] if drawn else []
