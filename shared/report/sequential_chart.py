"""One chart per verdict of a sequential run (issue #28), inline SVG like shared.report.charts:
x is the information reached (the share of the planned pairs) with each look named above the
plot, y the difference in points. At each look the design's repeated interval is a bar in its
verdict's colour with the estimate as a dot; the GO line (the lower end must clear it) and the
NO-GO line (the upper end must fall below it) join the looks, the bar (the improvement required
at the last look) runs across, and the stop is a vertical line with its verdict. Every label is
escaped: agent and backend names come from config."""

from __future__ import annotations

from html import escape

from shared.report import format as fmt
from shared.report.charts import JUDGE_COLOUR, VERDICT_COLOURS, WIDTH, round_ticks, svg_chart
from shared.report.sequential_section import path_title
from shared.report.sequential_types import LookPoint, VerdictPath

LEFT, RIGHT = 64, 24  # y tick labels; the last look's label
TOP = 46  # the title, then the looks' names
PLOT_H = 170
BOTTOM = 58  # x ticks and their caption, then the legend
GO_COLOUR, NO_GO_COLOUR = VERDICT_COLOURS["GO"], VERDICT_COLOURS["NO-GO"]


class _Plot:
    """Fraction of the planned pairs (0..1) to x, difference (points) to y."""

    def __init__(self, points: tuple[LookPoint, ...], bar: float) -> None:
        values = [0.0, bar] + [v for p in points for v in (p.low, p.high, p.estimate, p.go_line, p.no_go_line)
                               if v is not None]
        pad = max(0.02, 0.08 * (max(values) - min(values)))
        self.low, self.high = max(-1.0, min(values) - pad), min(1.0, max(values) + pad)
        self.left, self.right, self.top, self.bottom = LEFT, WIDTH - RIGHT, TOP, TOP + PLOT_H

    def x(self, fraction: float) -> float:
        return self.left + min(max(fraction, 0.0), 1.0) * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.low) / (self.high - self.low) * (self.bottom - self.top)


def _axes(plot: _Plot) -> list[str]:
    parts = [f'<line x1="{plot.left}" y1="{plot.bottom}" x2="{plot.right}" y2="{plot.bottom}" class="axis"/>',
             f'<line x1="{plot.left}" y1="{plot.top}" x2="{plot.left}" y2="{plot.bottom}" class="axis"/>']
    for tick in round_ticks(plot.low, plot.high, 5):
        y = plot.y(tick)
        parts.append(f'<line x1="{plot.left - 4}" y1="{y:.1f}" x2="{plot.left}" y2="{y:.1f}" class="axis"/>'
                     f'<text x="{plot.left - 7}" y="{y + 4:.1f}" text-anchor="end" class="tick">{100 * tick:+.0f} pp</text>')
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = plot.x(share)
        parts.append(f'<line x1="{x:.1f}" y1="{plot.bottom}" x2="{x:.1f}" y2="{plot.bottom + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{plot.bottom + 16}" text-anchor="middle" class="tick">{share:.0%}</text>')
    parts.append(f'<text x="{(plot.left + plot.right) / 2:.0f}" y="{plot.bottom + 30}" text-anchor="middle" '
                 'class="tick">share of the planned pairs reached</text>')
    zero = plot.y(0.0)
    parts.append(f'<line x1="{plot.left}" y1="{zero:.1f}" x2="{plot.right}" y2="{zero:.1f}" class="zero"/>')
    return parts


def _line(plot: _Plot, points: tuple[LookPoint, ...], value, colour: str, css: str) -> str:
    """A boundary joining its value at each look (a short stroke where there is one look)."""
    xy = [(plot.x(p.fraction), plot.y(value(p))) for p in points]
    if len(xy) == 1:
        (x, y), = xy
        xy = [(x - 24, y), (x + 24, y)]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" class="{css}"/>'


def _look_name(plot: _Plot, p: LookPoint, path: VerdictPath) -> str:
    """'look 2' above its bar; the stop, and a last look that settled nothing, say so there."""
    x = plot.x(p.fraction)
    anchor = "end" if x > plot.right - 60 else "middle"
    if p.look == path.stopped_at:
        colour = VERDICT_COLOURS.get(p.verdict, JUDGE_COLOUR)
        return (f'<text x="{x:.1f}" y="{TOP - 8}" text-anchor="{anchor}" class="value" fill="{colour}">'
                f'look {p.look} · stop: {escape(p.verdict)}</text>')
    last = path.stopped_at is None and p is path.points[-1]
    return (f'<text x="{x:.1f}" y="{TOP - 8}" text-anchor="{anchor}" class="tick">'
            f'look {p.look}{" · not settled" if last else ""}</text>')


def _look(plot: _Plot, p: LookPoint) -> list[str]:
    """The repeated interval at one look, capped at both ends, with the estimate as a dot."""
    x = plot.x(p.fraction)
    if p.low is None or p.high is None:
        return [f'<text x="{x:.1f}" y="{plot.bottom - 6}" text-anchor="middle" class="tick">no pairs</text>']
    colour = VERDICT_COLOURS.get(p.verdict, JUDGE_COLOUR)
    top, bottom = plot.y(min(p.high, plot.high)), plot.y(max(p.low, plot.low))
    parts = [f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{colour}" stroke-width="4" '
             f'class="interval"><title>{escape(_point_text(p))}</title></line>',
             *(f'<line x1="{x - 6:.1f}" y1="{y:.1f}" x2="{x + 6:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>'
               for y in (top, bottom))]
    if p.estimate is not None:
        parts.append(f'<circle cx="{x:.1f}" cy="{plot.y(p.estimate):.1f}" r="5" fill="{colour}"/>')
    return parts


def _point_text(p: LookPoint) -> str:
    return (f"look {p.look}: {p.pairs:,} pairs ({p.fraction:.0%}), estimate {fmt.pp(p.estimate)}, "
            f"interval {fmt.ci([p.low, p.high])}, {p.verdict}")


def _stop(plot: _Plot, path: VerdictPath) -> list[str]:
    """A vertical line through the look the verdict stopped at (its name says the verdict)."""
    stopped = next((p for p in path.points if p.look == path.stopped_at), None)
    if stopped is None:
        return []
    x = plot.x(stopped.fraction)
    return [f'<line x1="{x:.1f}" y1="{plot.top}" x2="{x:.1f}" y2="{plot.bottom}" '
            f'stroke="{VERDICT_COLOURS.get(stopped.verdict, JUDGE_COLOUR)}" stroke-width="1.5" '
            'stroke-dasharray="6 3" class="stop"/>']


def _legend(y: float) -> list[str]:
    stroke = '<line x1="0" y1="-4" x2="22" y2="-4" '
    items = [(stroke + 'stroke="#57606a" stroke-width="4"/>', "repeated interval (dot: estimate)"),
             (stroke + f'stroke="{GO_COLOUR}" stroke-width="2" class="boundary"/>', "GO line"),
             (stroke + f'stroke="{NO_GO_COLOUR}" stroke-width="2" class="boundary"/>', "NO-GO line"),
             (stroke + 'class="threshold"/>', "bar (last look)")]
    parts, x = [], LEFT
    for mark, text in items:
        parts.append(f'<g transform="translate({x},{y})">{mark}<text x="28" y="0" class="tick">{escape(text)}</text></g>')
        x += 44 + 6.2 * len(text)  # 11 px text is about 6.2 px a character
    return parts


def look_chart(path: VerdictPath) -> str:
    """The chart of one verdict across its looks."""
    plot = _Plot(path.points, path.bar)
    body = _axes(plot)
    if path.points:
        body += [_line(plot, path.points, lambda p: p.go_line, GO_COLOUR, "boundary"),
                 _line(plot, path.points, lambda p: p.no_go_line, NO_GO_COLOUR, "boundary")]
    bar = plot.y(path.bar)
    body.append(f'<line x1="{plot.left}" y1="{bar:.1f}" x2="{plot.right}" y2="{bar:.1f}" class="threshold"/>')
    for p in path.points:
        body += [_look_name(plot, p, path), *_look(plot, p)]
    body += _stop(plot, path)
    body += _legend(plot.bottom + 50)
    return svg_chart("sequential", f"{path_title(path)}: the repeated interval at each look", plot.bottom + BOTTOM, body)
