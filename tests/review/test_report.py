"""report: report.html opens offline in a real headless browser, draws its charts, searches and sorts, and shows hostile data as text.

The browser is Debian's chromium driven by playwright. Without it the browser
tests are skipped on a developer's machine and fail in CI (.ci/run installs it).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assignment_engine import demo_files
from assignment_engine.batch import assign_files
from assignment_engine.review import report
from assignment_engine.review.diff import diff_plan
from assignment_engine.review.report import charts, render_report, report_available
from conftest import WEST_EAST, rules_text, write_csv

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SCRIPT = "<script>window.pwned = 1</script>"
IMAGE = '<img src=x onerror="window.pwned = 2">'
FORMULA = '=HYPERLINK("http://evil.example","click")'
LINK = '<a href="https://evil.example/">u9</a>'  # an owner before the run who is no longer a user: moved, so charted and listed


@pytest.fixture(scope="module")
def hostile_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan whose account ids and previous owners are markup, a formula and a link; one account matches no territory."""
    base = tmp_path_factory.mktemp("hostile")
    rules = base / "rules.yaml"
    rules.write_text(
        rules_text(
            WEST_EAST,
            fields="{state: string, revenue: number}",
            assignment="{hierarchy: independent, balance: [{measure: revenue, tolerance: 0.5}]}",
        ),
        encoding="utf-8",
    )
    accounts = [
        {"id": SCRIPT, "state": "CA", "revenue": 900, "owner_id": LINK},
        {"id": IMAGE, "state": "CA", "revenue": 500, "owner_id": LINK},
        {"id": FORMULA, "state": "NY", "revenue": 300, "owner_id": LINK},
        {"id": "plain-1", "state": "NY", "revenue": 700, "owner_id": "e1"},
        {"id": "plain-2", "state": "NY", "revenue": 100, "owner_id": "e1"},
        {"id": "plain-3", "state": "CA", "revenue": 200, "owner_id": "w1"},
        {"id": "nowhere", "state": "TX", "revenue": 50, "owner_id": "w2"},
    ]
    write_csv(base / "accounts.csv", accounts, ["id", "state", "revenue", "owner_id"])
    users = base / "users.csv"
    users.write_text("id\nw1\nw2\ne1\ne2\n", encoding="utf-8")
    out = base / "plan"
    assign_files(rules, base / "accounts.csv", users, out, workers=1, effort=0.5)
    (out / "report.html").write_text(render_report(out), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need {CHROMIUM} (Debian's chromium) and playwright; .ci/run installs them")
        pytest.skip(f"no {CHROMIUM} or no playwright: apt-get install chromium, pip install -e '.[test]'")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415  once the browser is known to be there

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Any, hostile_plan: Path) -> Iterator[Any]:
    """The hostile plan's report, opened from disk; ``page.requests`` lists every URL it asked for."""
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    opened.requests = []
    opened.on("request", lambda request: opened.requests.append(request.url))
    opened.add_init_script(
        "window.violations = []; document.addEventListener('securitypolicyviolation', e => window.violations.push(e.blockedURI));"
    )
    opened.goto((hostile_plan / "report.html").as_uri())
    opened.wait_for_function("Array.from(document.querySelectorAll('.js-plotly-plot')).every(plot => plot.querySelector('.main-svg'))")
    opened.wait_for_timeout(300)  # let any late request (a font, a map tile) show itself
    yield opened
    opened.close()


def test_no_request_leaves_the_page(page, hostile_plan):
    own = (hostile_plan / "report.html").as_uri()
    assert [url for url in page.requests if url != own and not url.startswith(("data:", "blob:"))] == []
    assert page.evaluate("window.violations") == []  # nothing was even attempted against the page's no-network policy


def test_the_charts_are_drawn(page):
    titles = page.locator("section.chart h2").all_inner_texts()
    assert titles == [
        "Load per user: revenue",
        "Balance bands",
        "Gained and lost: revenue",
        "Flow of accounts between owners",
        "Unassigned accounts by reason",
    ]
    assert page.locator(".js-plotly-plot").count() == len(titles)
    assert page.locator(".js-plotly-plot .main-svg").count() >= len(titles)
    assert page.locator(".js-plotly-plot .sankey-node").count() >= 2  # the flow has owners on both sides
    assert page.locator(".js-plotly-plot .point").count() > 0  # bars and markers are there, not just axes


def test_hostile_text_is_shown_as_text(page):
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 0
    assert page.locator("a").count() == 0  # neither in the tables nor as a plotly link in a chart label
    cells = page.locator("#moved tbody td").all_inner_texts()
    assert {SCRIPT, IMAGE, FORMULA, LINK} <= set(cells)
    flow = page.locator(".js-plotly-plot .sankey-node text").all_text_contents()
    assert LINK in flow  # a label in the chart, as written


def test_search_filters_the_moved_accounts(page):
    rows = page.locator("#moved tbody tr")
    total = rows.count()
    assert total >= 4
    search = page.locator('input[data-filter="moved"]')
    search.fill("hyperlink")
    assert page.locator("#moved tbody tr:not([hidden])").all_inner_texts()[0].startswith(FORMULA)
    assert page.locator("#moved tbody tr:not([hidden])").count() == 1
    assert page.locator('[data-count="moved"]').inner_text() == f"1 of {total} rows"
    search.fill("evil.example u9")  # every word must match
    assert page.locator("#moved tbody tr:not([hidden])").count() == 3
    search.fill("")
    assert page.locator("#moved tbody tr:not([hidden])").count() == total


def test_a_header_click_sorts(page):
    def column(index: int) -> list[str]:
        return page.locator(f"#moved tbody tr td:nth-child({index})").all_inner_texts()

    value = page.locator("#moved thead th").nth(4)
    value.click()
    values = [float(v.replace(",", "")) for v in column(5)]
    assert values == sorted(values, reverse=True) and value.get_attribute("aria-sort") == "descending"
    value.click()
    assert [float(v.replace(",", "")) for v in column(5)] == sorted(values)
    page.locator("#moved thead th").nth(0).click()
    assert column(1) == sorted(column(1), key=str.lower)


def test_every_chart_is_a_valid_plotly_figure(hostile_plan):
    import plotly.graph_objects as go  # noqa: PLC0415  the report extra

    drawn = charts(diff_plan(hostile_plan))
    assert len(drawn) == 5
    for chart in drawn:
        go.Figure(chart.figure)  # the page skips plotly's validation for speed; an unknown property or a bad value fails here


def test_plotly_is_inlined_once_and_every_chart_drawn_from_inline_data(hostile_plan):
    text = (hostile_plan / "report.html").read_text(encoding="utf-8")
    assert text.count("* plotly.js v") == 1
    assert text.count("Plotly.newPlot(") == text.count('<section class="chart">') == 5
    assert "<script src" not in text and "<link" not in text
    assert SCRIPT not in text and IMAGE not in text  # escaped wherever the data is written


def test_the_page_names_the_plan_where_it_lives(hostile_plan):
    assert f"· {hostile_plan}</div>" in (hostile_plan / "report.html").read_text(encoding="utf-8")
    assert "· plan/</div>" in render_report(hostile_plan, location="plan/")  # as writers.write_plan renders it in its staging directory


def test_the_moved_table_is_capped_with_a_note(hostile_plan, monkeypatch):
    monkeypatch.setattr(report, "MOVED_ROWS", 2)
    text = render_report(hostile_plan)
    assert "The 2 largest of 4 moved accounts by revenue; the other 2 are in accounts.csv." in text
    start = text.index('id="moved"')
    assert text.count("<tr><td>", start, text.index("</table>", start)) == 2


def test_report_available_needs_plotly_and_jinja2(monkeypatch):
    assert report_available()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a))
    assert not report_available()


def test_the_same_plan_gives_the_same_page(hostile_plan):
    assert render_report(hostile_plan) == render_report(hostile_plan)


def test_the_page_written_with_a_plan_is_the_page_of_the_saved_plan(hostile_plan, tmp_path):
    """A new plan's page is added up from the rows as they are written (review.Review), not read back: the same
    page, byte for byte, as the saved plan gives; on the demo (opportunities, unassigned accounts) and the hostile plan."""
    files = demo_files()
    base = hostile_plan.parent
    runs = [
        ((files["rules"], files["accounts"], files["users"]), {"opportunities": files["opportunities"]}),
        ((base / "rules.yaml", base / "accounts.csv", base / "users.csv"), {}),
    ]
    for k, (inputs, extra) in enumerate(runs):
        out = tmp_path / f"plan{k}"
        assign_files(*inputs, out, workers=1, effort=0.3, **extra)
        written = (out / "report.html").read_text(encoding="utf-8")
        assert written == render_report(out)
        assert diff_plan(out, largest=report.MOVED_ROWS).moved > 0
