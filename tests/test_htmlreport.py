import datetime as dt
import html.parser
import re

import pytest
from browser import dump_dom, find_chromium, screenshot
from click.testing import CliRunner
from dashboard_data import NOW, build

import agentmetrics
from agentmetrics.cli import cli
from agentmetrics.outputs.htmlreport import render_report, write_report

CONFIG = {"costs": {"default_hourly_rate": 6.0}}
SECTIONS = [
    "health",
    "alerts",
    "regressions",
    "performance",
    "trends",
    "failures",
    "failed-runs",
    "running",
    "costs",
]
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (CI installs Debian's chromium package)"
)


class Outline(html.parser.HTMLParser):
    """Tags, section ids and text of a page, parsed by the standard library."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.ids: list[str] = []
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        attrs = dict(attrs)
        if "id" in attrs and tag == "section":
            self.ids.append(attrs["id"])
        for name in ("src", "href"):
            if name in attrs:
                self.urls.append(attrs[name])

    def handle_data(self, data):
        self.text.append(data)


def outline(page: str) -> Outline:
    parser = Outline()
    parser.feed(page)
    return parser


@pytest.fixture
def data_path(db_path):
    build(db_path)
    return db_path


@pytest.fixture
def page(data_path):
    return render_report(data_path, since="2026-03-01", until=NOW, config=CONFIG)


def test_sections_tables_and_charts(page):
    parsed = outline(page)
    assert parsed.ids == SECTIONS
    # performance, failure patterns, running, stale (empty here? no: s-3 and a-6), costs
    assert parsed.tags["table"] >= 5
    # trends (2 figures), failures, costs, and the timeline of s-2 (failed; s-1 completed)
    assert parsed.tags["svg"] == 5
    assert parsed.tags["details"] == 1
    assert "script" not in parsed.tags


def test_self_contained(page):
    # No stylesheet, script, image or font is fetched: only inline CSS and SVG.
    assert outline(page).urls == []
    # url(#id) inside the SVG charts refers to the same document (clip paths).
    assert not re.search(r"url\((?!#)|@import|<link|<img|<script", page)


def test_numbers(page):
    text = " ".join(outline(page).text)
    # Health over [2026-03-01, NOW]: s-1, s-2 and s-3; all seven executions started.
    assert re.search(r"Orchestrations\s+3\b", text)
    assert re.search(r"Success rate\s+80\.0%", text)  # 4 completed of 5 finished
    # Costs at 6 USD/hour: 60s + 120s + 30s + 600s, plus 0.25 recorded.
    assert "Total $1.60." in text
    assert "Long job" in text  # running and stale
    assert "TimeoutError: too slow" in text


def test_costs_in_one_usd_format(page):
    costs = page.split('<section id="costs">', 1)[1].split("</section>", 1)[0]
    amounts = re.findall(r"<?\$[^\s<]*", re.sub(r"<svg.*?</svg>", "", costs, flags=re.S))
    assert all(re.fullmatch(r"\$\d[\d,]*\.\d\d\.?|<\$0\.01", a) for a in amounts), amounts
    # The reviewer's 120 s at 6 USD/hour is $0.20 (was $0.2000 next to $0.00 and $1.15).
    assert {"$0.20", "$0.25", "$0.00", "$1.15"} <= set(amounts)


def test_escaping(data_path, tmp_path):
    # A minute ago, so the rows are inside the window that ends at the report's "now".
    minute_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    monitor = agentmetrics.Monitor(data_path, clock=lambda: minute_ago)
    monitor.start_agent_execution("evil", "<script>alert(1)</script>")
    monitor.complete_agent_execution("evil", "failed", error_message='<b>bold</b> & "quoted"')
    monitor.start_orchestration("<s>", "Fix <i>it</i> & test")
    page = render_report(data_path, since="2026-03-01", config=CONFIG)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in page
    assert "<td>&lt;s&gt;</td><td>Fix &lt;i&gt;it&lt;/i&gt; &amp; test</td>" in page


def test_alert_rules_section(data_path, tmp_path):
    (tmp_path / "agentmetrics.toml").write_text(
        '[costs]\ndefault_hourly_rate = 6.0\n\n[[rules]]\nname = "spend"\n'
        'metric = "cost_usd"\nwindow = "30d"\nwarn = 1.5\n'
    )
    page = render_report(data_path, until=NOW)
    alerts = page[page.index('id="alerts"') : page.index('id="regressions"')]
    assert '<td class="status status-warn">warn</td>' in alerts
    assert "<td>spend</td>" in alerts
    assert "$1.60" in alerts


def test_without_rules(page):
    alerts = page[page.index('id="alerts"') : page.index('id="regressions"')]
    assert "No alert rules configured" in alerts


def test_empty_database(db):
    page = render_report(db, config=CONFIG)
    parsed = outline(page)
    assert parsed.ids == SECTIONS
    assert "svg" not in parsed.tags
    assert "No executions in this window." in page
    assert "Nothing is running." in page


def test_bad_window(data_path):
    with pytest.raises(ValueError, match="must be before until"):
        render_report(data_path, since="2026-03-02", until="2026-03-01", config=CONFIG)


def test_cli_report(data_path, tmp_path):
    out = tmp_path / "out.html"
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            str(data_path),
            "report",
            "-o",
            str(out),
            "--since",
            "2026-03-01",
            "--until",
            NOW.isoformat(),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert result.output == f"Wrote {out}\n"
    assert outline(out.read_text()).ids == SECTIONS


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["--since", "2026-03-02", "--until", "2026-03-01"], "Error: since (2026-03-02T00:00", 1),
        (
            ["--since", "last week"],
            "Error: Invalid value for '--since': not a time: 'last week'"
            " (use a timestamp such as 2026-11-01 or a span back such as 6h, 7d, 2w)",
            2,
        ),
        (["-o", "missing/r.html"], "Error: Cannot write missing/r.html", 1),
        (["--rules", "nope.toml"], "Error: Config file nope.toml not found", 2),
    ],
)
def test_cli_report_errors(data_path, args, message, code):
    result = CliRunner().invoke(cli, ["--db", str(data_path), "report", *args])
    assert result.exit_code == code  # usage and configuration errors exit 2
    assert result.output.startswith(message)
    assert "Traceback" not in result.output


def test_cli_report_missing_database(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "no.db"), "report"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: No database found")


@needs_chromium
def test_console_capture_detects_errors(tmp_path):
    # The check below is only worth something if a broken page is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<p>x</p><script>console.error('boom'); missing();</script>")
    _, messages = dump_dom(CHROMIUM, bad)
    assert any("boom" in m for m in messages)
    assert any("missing is not defined" in m for m in messages)


@needs_chromium
def test_renders_in_chromium(data_path, tmp_path):
    from PIL import Image

    page = write_report(
        data_path, tmp_path / "report.html", since="2026-03-01", until=NOW, config=CONFIG
    )
    dom, messages = dump_dom(CHROMIUM, page)
    assert messages == []
    parsed = outline(dom)
    assert parsed.ids == SECTIONS
    assert parsed.tags["svg"] == 5
    assert parsed.tags["table"] >= 5
    assert parsed.tags["tr"] > 10
    png = tmp_path / "report.png"
    assert screenshot(CHROMIUM, page, png, height=1600) == []
    with Image.open(png) as image:
        assert image.size == (1280, 1600)
        # A rendered page, not a blank one: text, borders and chart colours.
        colors = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colors) > 50
