"""``report.html``: a saved plan as one self-contained page a reviewer opens offline and signs off.

The page reads the plan directory through :func:`review.diff_plan` (nothing is
re-run) and shows with charts what a person would rather look at than read:
each user's load before and after against the balance band, the bands of every
balanced measure, who gains and loses value, the flow of accounts between
owners and why accounts stay unassigned; then tables of users, territories and
the largest moved accounts with their reasons, searchable and sortable.

plotly.js is inlined once per page and every chart is drawn from inline JSON,
so opening the file makes no network request. Text from the CRM files is
hostile: the template escapes everything (jinja2 autoescape) and chart labels
are HTML-escaped too, since plotly.js reads tags such as ``<a href>`` in them.

Needs the ``report`` extra (plotly, jinja2); :func:`report_available` says
whether it is installed, so a plan can be written without it.
"""

from __future__ import annotations

import html
import importlib.util
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .planfile import Manifest
from .review import NONE, Move, PlanDiff, UserChange, compact, diff_plan

MOVED_ROWS = 5_000  # moved accounts listed in the table, largest value first
FLOW_USERS = 20  # owners named in the flow of accounts; the others are grouped
FLOW_LINKS = 40  # flows drawn between them; the smaller ones are grouped
REASONS = 12  # unassigned reasons charted; the others are grouped
GAINERS = 30  # users in the gained / lost chart, largest moved value first
_OTHERS = "other owners"
_CONFIG = {"displaylogo": False, "responsive": True}
_BEFORE, _AFTER, _BAND, _LINK = "#9aa5b1", "#1f6feb", "rgba(46, 160, 67, 0.18)", "rgba(31, 111, 235, 0.22)"


def report_available() -> bool:
    """Whether the ``report`` extra (plotly, jinja2) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("plotly", "jinja2"))


def render_report(directory: str | Path) -> str:
    """The HTML page reviewing the plan saved in ``directory`` (its manifest, summary and rows must be written)."""
    import jinja2
    from plotly.offline import get_plotlyjs

    d = diff_plan(directory, largest=MOVED_ROWS)
    manifest = Manifest.read(directory)
    environment = jinja2.Environment(loader=jinja2.PackageLoader("assignment_engine", "templates"), autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["amount"] = compact
    environment.filters["share"] = _share
    measures = [b.measure for b in d.bands]
    return environment.get_template("report.html.j2").render(
        d=d,
        manifest=manifest,
        measures=measures,
        tolerance={b.measure: b.tolerance for b in d.bands},
        changed=[u for u in d.users if u.changed],
        moved_territories=[t for t in d.territories if t.moved],
        more_moved=d.moved - len(d.largest),
        charts=_charts(d),
        plotly_js=jinja2.utils.markupsafe.Markup(get_plotlyjs()),
    )


def _charts(d: PlanDiff) -> list[tuple[str, str, Any]]:
    """(title, caption, chart HTML) in page order; a chart with nothing to show is left out."""
    from markupsafe import Markup

    charts = []
    for band in d.bands:
        figure = _loads_chart(d.users, band.measure, band.tolerance)
        if figure is not None:
            charts.append((f"Load per user: {band.measure}", f"share of fair share before (grey) and after (blue); the green band is the tolerance ±{band.tolerance:.0%}", figure))
    if d.bands:
        charts.append(("Balance bands", "lowest to highest deviation from fair share across users, before and after, against the tolerance", _bands_chart(d)))
    if d.moves:
        charts.append((f"{d.value_measure} gained and lost", f"the {GAINERS} users with the most {d.value_measure} changing hands", _gains_chart(d)))
        charts.append(("Flow of accounts between owners", f"{d.value_measure} moved from the owner before (left) to the owner after (right): the {FLOW_LINKS} largest flows between the {FLOW_USERS} owners with the most moved; the rest as other owners", _flow_chart(d.moves)))
    if d.unassigned:
        charts.append(("Unassigned accounts by reason", "accounts that end without an owner", _unassigned_chart(d.unassigned)))
    return [(title, caption, Markup(_html(figure))) for title, caption, figure in charts]


def _loads_chart(users: list[UserChange], measure: str, tolerance: float) -> Any | None:
    """A dumbbell per user: share of fair share before and after, users sorted by their share before."""
    import plotly.graph_objects as go

    shown = [(u.user_id, load) for u in users if (load := u.loads.get(measure)) is not None and load.share_before is not None and load.share_after is not None]
    if not shown:
        return None
    shown.sort(key=lambda pair: -(pair[1].share_before or 0))
    names = [_label(user_id) for user_id, _ in shown]
    before = [100 * (load.share_before or 0) for _, load in shown]
    after = [100 * (load.share_after or 0) for _, load in shown]
    lines_x = [x for name in names for x in (name, name, None)]
    lines_y = [y for b, a in zip(before, after, strict=True) for y in (b, a, None)]
    figure = go.Figure(
        [
            go.Scatter(x=lines_x, y=lines_y, mode="lines", line={"color": "#d0d7de", "width": 2}, hoverinfo="skip", showlegend=False),
            go.Scatter(x=names, y=before, mode="markers", name="before", marker={"color": _BEFORE, "size": 7}, hovertemplate="%{x}: %{y:.0f}% before<extra></extra>"),
            go.Scatter(x=names, y=after, mode="markers", name="after", marker={"color": _AFTER, "size": 7}, hovertemplate="%{x}: %{y:.0f}% after<extra></extra>"),
        ]
    )
    figure.add_hrect(y0=100 * (1 - tolerance), y1=100 * (1 + tolerance), fillcolor=_BAND, line_width=0, layer="below")
    figure.update_layout(yaxis={"title": "% of fair share", "ticksuffix": "%"}, xaxis={"type": "category", "showticklabels": len(names) <= 60})
    return _layout(figure, height=380)


def _bands_chart(d: PlanDiff) -> Any:
    """Per measure: the tolerance band and the range of deviations before and after, as floating bars."""
    import plotly.graph_objects as go

    names = [_label(b.measure) for b in d.bands]

    def spans(low: list[float | None], high: list[float | None], name: str, color: str) -> Any:
        base = [100 * (lo or 0) for lo in low]
        length = [100 * ((hi or 0) - (lo or 0)) for lo, hi in zip(low, high, strict=True)]
        return go.Bar(
            y=names, x=length, base=base, orientation="h", name=name, marker_color=color,
            customdata=[[b, b + n] for b, n in zip(base, length, strict=True)], hovertemplate=f"%{{y}} {name}: %{{customdata[0]:+.1f}}% to %{{customdata[1]:+.1f}}%<extra></extra>",
        )

    figure = go.Figure(
        [
            spans([-b.tolerance for b in d.bands], [b.tolerance for b in d.bands], "tolerance", _BAND),
            spans([b.min_before for b in d.bands], [b.max_before for b in d.bands], "before", _BEFORE),
            spans([b.min_after for b in d.bands], [b.max_after for b in d.bands], "after", _AFTER),
        ]
    )
    figure.update_layout(barmode="group", xaxis={"title": "deviation from fair share", "ticksuffix": "%", "zeroline": True}, yaxis={"autorange": "reversed"})
    return _layout(figure, height=120 + 90 * len(names))


def _gains_chart(d: PlanDiff) -> Any:
    """Value gained (right) and lost (left) by the users with the most value changing hands."""
    import plotly.graph_objects as go

    top = sorted((u for u in d.users if u.changed), key=lambda u: -(u.value_gained + u.value_lost))[:GAINERS]
    names = [_label(u.user_id) for u in top]
    figure = go.Figure(
        [
            go.Bar(y=names, x=[u.value_gained for u in top], orientation="h", name="gained", marker_color=_AFTER, hovertemplate="%{y} gains %{x:,.0f}<extra></extra>"),
            go.Bar(y=names, x=[-u.value_lost for u in top], orientation="h", name="lost", marker_color="#cf222e", hovertemplate="%{y} loses %{x:,.0f}<extra></extra>"),
        ]
    )
    figure.update_layout(barmode="relative", yaxis={"autorange": "reversed", "type": "category"}, xaxis={"title": d.value_measure})
    return _layout(figure, height=140 + 22 * len(names))


def _flow_chart(moves: list[Move]) -> Any:
    """A Sankey of moved value from owner before to owner after.

    Only the owners with the most value moved are named and only the largest
    flows between them drawn; the rest is one group of other owners, so the
    picture stays readable for thousands of users.
    """
    import plotly.graph_objects as go

    weight: dict[str, float] = defaultdict(float)
    for m in moves:
        weight[m.from_id] += m.value
        weight[m.to_id] += m.value
    named = set(sorted(weight, key=lambda u: -weight[u])[:FLOW_USERS])
    grouped: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for m in moves:
        pair = grouped[m.from_id if m.from_id in named else _OTHERS, m.to_id if m.to_id in named else _OTHERS]
        pair[0] += m.value
        pair[1] += m.accounts
    ranked = sorted(grouped.items(), key=lambda item: -item[1][0])
    links = dict(ranked[:FLOW_LINKS])
    for _pair, (value, accounts) in ranked[FLOW_LINKS:]:
        rest = links.setdefault((_OTHERS, _OTHERS), [0.0, 0])
        rest[0] += value
        rest[1] += accounts
    sources = sorted({s for s, _ in links}, key=lambda u: (u == _OTHERS, -weight.get(u, 0)))
    targets = sorted({t for _, t in links}, key=lambda u: (u == _OTHERS, -weight.get(u, 0)))
    index = {("from", u): k for k, u in enumerate(sources)} | {("to", u): len(sources) + k for k, u in enumerate(targets)}
    figure = go.Figure(
        go.Sankey(
            node={"label": [_label(u) for u in (*sources, *targets)], "pad": 10, "thickness": 14, "color": [_BEFORE] * len(sources) + [_AFTER] * len(targets)},
            link={
                "source": [index["from", s] for s, _ in links],
                "target": [index["to", t] for _, t in links],
                "value": [v for v, _ in links.values()],
                "color": _LINK,
                "customdata": [f"{n:,.0f} accounts" for _, n in links.values()],
                "hovertemplate": "%{source.label} → %{target.label}: %{value:,.0f} (%{customdata})<extra></extra>",
            },
        )
    )
    return _layout(figure, height=max(360, 26 * max(len(sources), len(targets))))


def _unassigned_chart(reasons: dict[str, int]) -> Any:
    import plotly.graph_objects as go

    items = list(reasons.items())
    if len(items) > REASONS:
        items = [*items[: REASONS - 1], (f"{len(items) - REASONS + 1} other reasons", sum(n for _, n in items[REASONS - 1 :]))]
    figure = go.Figure(go.Bar(y=[_label(r) for r, _ in items], x=[n for _, n in items], orientation="h", marker_color="#bf8700", hovertemplate="%{y}: %{x:,} accounts<extra></extra>"))
    figure.update_layout(yaxis={"autorange": "reversed", "automargin": True}, xaxis={"title": "accounts"})
    return _layout(figure, height=120 + 28 * len(items))


def _layout(figure: Any, height: int) -> Any:
    figure.update_layout(template="plotly_white", height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    figure.update_yaxes(automargin=True)
    figure.update_xaxes(automargin=True)
    return figure


def _html(figure: Any) -> str:
    import plotly.io as pio

    return str(pio.to_html(figure, include_plotlyjs=False, full_html=False, config=_CONFIG))


def _label(text: str) -> str:
    """Data shown inside a chart: plotly.js reads tags such as <a href> in labels, so they are escaped to show as text."""
    return html.escape(text if text else NONE, quote=False)


def _share(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.0%}"
