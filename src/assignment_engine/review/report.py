"""``report.html``: a saved plan as one self-contained page a reviewer opens offline and signs off.

The page reads the plan directory through :func:`review.diff_plan` (nothing is
re-run; a plan being written is reviewed from the rows as they are written,
``review.Review``) and shows with charts what a person would rather look at than read:
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files.manifest import Manifest
from ..plan.result import outside_band
from .diff import NONE, Move, PlanDiff, UserChange, compact, diff_plan

MOVED_ROWS = 5_000  # moved accounts listed in the table, largest value first
FLOW_USERS = 20  # owners named in the flow of accounts; the others are grouped
FLOW_LINKS = 40  # flows drawn between them; the smaller ones are grouped
REASONS = 12  # unassigned reasons charted; the others are grouped
GAINERS = 30  # users in the gained / lost chart, largest moved value first
SHARE_CAP = 3.0  # loads above 300% of fair share are drawn at the top of their chart
_OTHERS = "other owners"
_CONFIG = {"displaylogo": False, "responsive": True}
_BEFORE, _AFTER, _BAND, _LINK = "#9aa5b1", "#1f6feb", "rgba(46, 160, 67, 0.18)", "rgba(31, 111, 235, 0.22)"


def report_available() -> bool:
    """Whether the ``report`` extra (plotly, jinja2) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("plotly", "jinja2"))


@dataclass(frozen=True)
class Chart:
    """One chart of the page: a plotly figure as plain JSON-able dicts, drawn by plotly.js from inline data."""

    title: str
    caption: str
    figure: dict[str, Any]  # {"data": [...], "layout": {...}}


def render_report(directory: str | Path, location: str | Path | None = None, review: PlanDiff | None = None) -> str:
    """The HTML page reviewing the plan saved in ``directory`` (its manifest, summary and rows must be written).

    ``location`` is where the page names the plan (default ``directory``): a
    plan rendered in its staging directory is read from there but lives at
    ``--out``. ``review`` is the plan's review when its writer added it up
    from the rows it wrote (``review.Review``); otherwise the rows are read.
    """
    import jinja2  # noqa: PLC0415  the report extra, only when a page is written
    import plotly.io  # noqa: PLC0415  the report extra, only when a page is written
    from markupsafe import Markup  # noqa: PLC0415  the report extra, only when a page is written
    from plotly.offline import get_plotlyjs  # noqa: PLC0415  the report extra, only when a page is written

    d = review or diff_plan(directory, largest=MOVED_ROWS)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("assignment_engine", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["amount"] = compact
    environment.filters["share"] = _share
    environment.tests["outside"] = outside_band  # {% if deviation is outside(tolerance) %}, as the summaries decide it
    # fixed element ids (plotly picks random ones): the same plan gives the same page, byte for byte
    drawn = [
        (
            chart,
            Markup(
                plotly.io.to_html(
                    chart.figure, include_plotlyjs=False, full_html=False, config=_CONFIG, validate=False, div_id=f"chart-{k}"
                )
            ),
        )
        for k, chart in enumerate(charts(d), start=1)
    ]  # figures are validated in the tests
    return environment.get_template("report.html.j2").render(
        d=d,
        manifest=Manifest.read(directory),
        location=str(directory if location is None else location),
        measures=[b.measure for b in d.bands],
        tolerance={b.measure: b.tolerance for b in d.bands},
        changed=[u for u in d.users if u.changed],
        moved_territories=[t for t in d.territories if t.moved],
        more_moved=d.moved - len(d.largest),
        charts=drawn,
        plotly_js=Markup(get_plotlyjs()),
    )


def charts(d: PlanDiff) -> list[Chart]:
    """The page's charts in order; one with nothing to show is left out.

    Figures are plain dicts rather than plotly graph objects: building and
    validating graph objects costs about a second per report, which every
    ``assign`` would pay; the tests validate the same dicts with plotly.
    """
    drawn = []
    for band in d.bands:
        figure = _loads_chart(d.users, band.measure, band.tolerance)
        if figure is not None:
            drawn.append(
                Chart(
                    f"Load per user: {band.measure}",
                    f"share of fair share before (grey) and after (blue); the green band is the tolerance ±{band.tolerance:.0%}",
                    figure,
                )
            )
    if d.bands:
        drawn.append(
            Chart(
                "Balance bands",
                "lowest to highest deviation from fair share across users, before and after, against the tolerance",
                _bands_chart(d),
            )
        )
    if d.moves:
        drawn.append(
            Chart(
                f"Gained and lost: {d.value_measure}",
                f"the {GAINERS} users with the most {d.value_measure} changing hands",
                _gains_chart(d),
            )
        )
        drawn.append(
            Chart(
                "Flow of accounts between owners",
                f"{d.value_measure} moved from the owner before (left) to the owner after (right): "
                f"the {FLOW_LINKS} largest flows between the {FLOW_USERS} owners with the most moved; the rest as other owners",
                _flow_chart(d.moves),
            )
        )
    if d.unassigned:
        drawn.append(Chart("Unassigned accounts by reason", "accounts that end without an owner", _unassigned_chart(d.unassigned)))
    return drawn


def _loads_chart(users: list[UserChange], measure: str, tolerance: float) -> dict[str, Any] | None:
    """A dumbbell per user: share of fair share before and after, users sorted by their share before.

    Shares above :data:`SHARE_CAP` are drawn at the cap as triangles (their hover
    tells the real share): one user at 8,000% would otherwise flatten everyone
    else onto the band.
    """
    shown = [
        (u.user_id, load)
        for u in users
        if (load := u.loads.get(measure)) is not None and load.share_before is not None and load.share_after is not None
    ]
    if not shown:
        return None
    shown.sort(key=lambda pair: -(pair[1].share_before or 0))
    names = [_label(user_id) for user_id, _ in shown]
    before = [100 * (load.share_before or 0) for _, load in shown]
    after = [100 * (load.share_after or 0) for _, load in shown]
    top = min(max(*before, *after, 100 * (1 + tolerance)), 100 * SHARE_CAP)

    def points(shares: list[float], name: str, color: str) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "markers",
            "name": name,
            "x": names,
            "y": [v if v <= top else None for v in shares],
            "marker": {"color": color, "size": 7},
            "hovertemplate": f"%{{x}}: %{{y:,.0f}}% {name}<extra></extra>",
        }

    above = [
        (name, v, when, color)
        for shares, when, color in ((before, "before", _BEFORE), (after, "after", _AFTER))
        for name, v in zip(names, shares, strict=True)
        if v > top
    ]
    capped = {
        "type": "scatter",
        "mode": "markers",
        "name": f"above {top:,.0f}%",
        "x": [a[0] for a in above],
        "y": [top] * len(above),
        "customdata": [[a[1], a[2]] for a in above],
        "marker": {"color": [a[3] for a in above], "size": 9, "symbol": "triangle-up"},
        "hovertemplate": "%{x}: %{customdata[0]:,.0f}% %{customdata[1]}<extra></extra>",
    }
    line = {
        "type": "scatter",
        "mode": "lines",
        "hoverinfo": "skip",
        "showlegend": False,
        "line": {"color": "#d0d7de", "width": 2},
        "x": [x for name in names for x in (name, name, None)],
        "y": [y for b, a in zip(before, after, strict=True) for y in (min(b, top), min(a, top), None)],
    }
    band = {
        "type": "rect",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "yref": "y",
        "y0": 100 * (1 - tolerance),
        "y1": 100 * (1 + tolerance),
        "fillcolor": _BAND,
        "line": {"width": 0},
        "layer": "below",
    }
    layout = {
        "shapes": [band],
        "yaxis": {"title": {"text": "% of fair share"}, "ticksuffix": "%", "range": [0, top * 1.05]},
        "xaxis": {"type": "category", "showgrid": False, "showticklabels": len(names) <= 60},
    }
    return _figure(
        [line, points(before, "before", _BEFORE), points(after, "after", _AFTER), *([capped] if above else [])], layout, height=380
    )


def _bands_chart(d: PlanDiff) -> dict[str, Any]:
    """Per measure: the tolerance band and the range of deviations before and after, as floating bars."""
    names = [_label(b.measure) for b in d.bands]

    def spans(low: list[float | None], high: list[float | None], name: str, color: str) -> dict[str, Any]:
        base = [100 * (lo or 0) for lo in low]
        length = [100 * ((hi or 0) - (lo or 0)) for lo, hi in zip(low, high, strict=True)]
        return {
            "type": "bar",
            "orientation": "h",
            "name": name,
            "y": names,
            "x": length,
            "base": base,
            "marker": {"color": color},
            "customdata": [[b, b + n] for b, n in zip(base, length, strict=True)],
            "hovertemplate": f"%{{y}} {name}: %{{customdata[0]:+.1f}}% to %{{customdata[1]:+.1f}}%<extra></extra>",
        }

    data = [
        spans([-b.tolerance for b in d.bands], [b.tolerance for b in d.bands], "tolerance", _BAND),
        spans([b.min_before for b in d.bands], [b.max_before for b in d.bands], "before", _BEFORE),
        spans([b.min_after for b in d.bands], [b.max_after for b in d.bands], "after", _AFTER),
    ]
    layout = {
        "barmode": "group",
        "xaxis": {"title": {"text": "deviation from fair share"}, "ticksuffix": "%", "zeroline": True},
        "yaxis": {"autorange": "reversed"},
    }
    return _figure(data, layout, height=120 + 90 * len(names))


def _gains_chart(d: PlanDiff) -> dict[str, Any]:
    """Value gained (right) and lost (left) by the users with the most value changing hands."""
    top = sorted((u for u in d.users if u.changed), key=lambda u: -(u.value_gained + u.value_lost))[:GAINERS]
    names = [_label(u.user_id) for u in top]
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": "gained",
            "y": names,
            "x": [u.value_gained for u in top],
            "marker": {"color": _AFTER},
            "hovertemplate": "%{y} gains %{x:,.0f}<extra></extra>",
        },
        {
            "type": "bar",
            "orientation": "h",
            "name": "lost",
            "y": names,
            "x": [-u.value_lost for u in top],
            "marker": {"color": "#cf222e"},
            "hovertemplate": "%{y} loses %{x:,.0f}<extra></extra>",
        },
    ]
    layout = {
        "barmode": "relative",
        "yaxis": {"autorange": "reversed", "type": "category"},
        "xaxis": {"title": {"text": _label(d.value_measure)}},
    }
    return _figure(data, layout, height=140 + 22 * len(names))


def _flow_chart(moves: list[Move]) -> dict[str, Any]:
    """A Sankey of moved value from owner before to owner after.

    Only the owners with the most value moved are named and only the largest
    flows between them drawn; the rest is one group of other owners, so the
    picture stays readable for thousands of users.
    """
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
    sankey = {
        "type": "sankey",
        "node": {
            "label": [_label(u) for u in (*sources, *targets)],
            "pad": 10,
            "thickness": 14,
            "color": [_BEFORE] * len(sources) + [_AFTER] * len(targets),
        },
        "link": {
            "source": [index["from", s] for s, _ in links],
            "target": [index["to", t] for _, t in links],
            "value": [v for v, _ in links.values()],
            "color": _LINK,
            "customdata": [f"{n:,.0f} accounts" for _, n in links.values()],
            "hovertemplate": "%{source.label} → %{target.label}: %{value:,.0f} (%{customdata})<extra></extra>",
        },
    }
    return _figure([sankey], {}, height=max(360, 26 * max(len(sources), len(targets))))


def _unassigned_chart(reasons: dict[str, int]) -> dict[str, Any]:
    items = list(reasons.items())
    if len(items) > REASONS:
        items = [*items[: REASONS - 1], (f"{len(items) - REASONS + 1} other reasons", sum(n for _, n in items[REASONS - 1 :]))]
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "y": [_label(r) for r, _ in items],
            "x": [n for _, n in items],
            "marker": {"color": "#bf8700"},
            "hovertemplate": "%{y}: %{x:,} accounts<extra></extra>",
        }
    ]
    return _figure(data, {"yaxis": {"autorange": "reversed"}, "xaxis": {"title": {"text": "accounts"}}}, height=120 + 28 * len(items))


def _figure(data: list[dict[str, Any]], layout: dict[str, Any], height: int) -> dict[str, Any]:
    """The figure with the page's common layout: compact margins, legend on top, room for long labels."""
    for axis in ("xaxis", "yaxis"):
        layout.setdefault(axis, {})["automargin"] = True
        layout[axis].setdefault("gridcolor", "#eaeef2")
    common = {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        "font": {"family": "system-ui, sans-serif", "color": "#1f2328"},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
    }
    return {"data": data, "layout": {**common, **layout}}


def _label(text: str) -> str:
    """Data shown inside a chart: plotly.js reads tags such as <a href> in labels, so they are escaped to show as text."""
    return html.escape(text if text else NONE, quote=False)


def _share(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.0%}"
