"""qledger report: what the HTML file says, and what headless Chromium shows of it.

The browser tests need ``chromium`` (``apt-get install chromium``; ``.ci/run``
installs it) and are skipped, with that reason, without it.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import sqlite3
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from campaign_fixture import (
    FAILED,
    IMG_MESSAGE,
    RETRIED,
    SCRIPT_LABEL,
    Campaign,
    add_raw_rows,
    make_campaign,
    status_counts,
)
from click.testing import CliRunner, Result

from ledger import Ledger
from ledger.campaign import build_report, draw_lineage
from ledger.central import ingest, lineage
from ledger.cli import main
from ledger.testing import run_pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)
#: The viewport the browser tests use: a laptop screen.
SCREEN = (1280, 900)


def run(*args: str | Path) -> Result:
    """Invoke qledger in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="qledger")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    """The test campaign: two failures (one retried), hostile labels and messages."""
    return make_campaign(tmp_path_factory.mktemp("campaign"))


@pytest.fixture(scope="module")
def central(campaign: Campaign, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The campaign in a central SQLite ledger."""
    target = str(tmp_path_factory.mktemp("central") / "central.sqlite")
    assert ingest(target, campaign.sources).ok
    return target


@pytest.fixture(scope="module")
def report_file(central: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``qledger report CENTRAL -o report.html``, with its default lineage."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run("report", central, "-o", out)
    assert result.exit_code == 0, result.output
    return out


# --- reading the HTML back -----------------------------------------------------------


class _Tables(HTMLParser):
    """Per-task counts (``tr[data-task] td[data-count]``) and elements by class, from HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, dict[str, int]] = {}
        self._task: str | None = None
        self._count: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-task") is not None:
            self._task = found["data-task"]
            self.counts[str(self._task)] = {}
        elif tag == "td" and self._task is not None and found.get("data-count"):
            self._count = found["data-count"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._task = None
        if tag == "td":
            self._count = None

    def handle_data(self, data: str) -> None:
        if self._task is not None and self._count is not None and data.strip():
            self.counts[self._task][self._count] = int(data)


def task_counts(html: str) -> dict[str, dict[str, int]]:
    """The status table of a report, as task -> status (and retried) -> count."""
    parser = _Tables()
    parser.feed(html)
    return {t: {k: v for k, v in c.items() if k != "total"} for t, c in parser.counts.items()}


# --- without a browser ----------------------------------------------------------------------


def test_report_counts_per_task_match_quantum_status(report_file: Path, central: str) -> None:
    """The status table has one row per task with the view's counts and the retried quanta."""
    assert task_counts(report_file.read_text()) == status_counts(central)


def test_report_has_no_script_and_no_network_reference(report_file: Path) -> None:
    """The file is self-contained: no script, no link, no URL, and hostile text is escaped."""
    html = report_file.read_text()
    assert "<script" not in html.lower()  # the hostile label is in the file, escaped
    assert "&lt;script&gt;document.body.setAttribute(&#34;data-pwned&#34;" in html
    assert "<img" not in html.lower()
    assert not re.search(r"(?i)(https?:|//[a-z]|<link|@import|url\((?!#))", html)
    assert "Content-Security-Policy" in html


def test_report_lists_failures_with_tracebacks_and_retries(central: str) -> None:
    """Failed quanta carry their traceback; the retried one lists its failed and good attempt."""
    with Ledger.open(central) as led:
        report = build_report(led)
    failed = {(f.task_label, f.data_id.get("visit"), f.data_id.get("detector")): f
              for f in report.failed}  # fmt: skip
    assert set(failed) == {FAILED, (SCRIPT_LABEL, 8, 0)}
    assert failed[FAILED].traceback is not None
    assert "Traceback (most recent call last)" in failed[FAILED].traceback
    assert "calibrate failed on purpose" in failed[FAILED].traceback
    assert failed[(SCRIPT_LABEL, 8, 0)].error_message == IMG_MESSAGE
    (retried,) = report.retried
    assert (retried.task_label, retried.data_id["visit"], retried.data_id["detector"]) == RETRIED
    assert [(a.attempt, a.outcome) for a in retried.attempts] == [(1, "failed"), (2, "succeeded")]
    assert retried.attempts[0].error_message == "calibrate failed on purpose"
    assert [q.task_label for q in report.interrupted] == [SCRIPT_LABEL]


def test_report_default_lineage_is_a_final_output_and_says_so(central: str) -> None:
    """By default the picture traces a deepCoadd (never read by a quantum) and says why."""
    with Ledger.open(central) as led:
        report = build_report(led)
    assert report.lineage is not None
    assert report.picture is not None
    assert report.lineage.dataset_type == "deepCoadd"
    assert "final output" in report.lineage.reason
    assert "--lineage" in report.lineage.reason
    kinds = {n.title for n in report.picture.nodes}
    assert kinds == {"deepCoadd", "coadd", "calexp", "calibrate", "postISRCCD", "isr", "raw",
                     "bias"}  # fmt: skip
    assert report.picture.n_shown == report.picture.n_nodes


def test_report_shows_edited_rows_as_text(central: str, tmp_path: Path) -> None:
    """Rows no recorder writes (a number for a label, junk JSON, text for an attempt) render."""
    target = tmp_path / "edited.sqlite"
    shutil.copy(central, target)
    qid = "0badc0de-0000-4000-8000-000000000000"
    at = "2030-01-01T00:00:00.000000+00:00"
    add_raw_rows(
        target,
        [(qid, 42, "{not json", None, at, "h", 1, "u", "3", "0", None)],
        [(qid, 1, 1, 1, "quantum_started", None, "ok", None, None, None, at, None, "1" * 64),
         (qid, 2, 2, "x", "quantum_failed", None, "error", 7, "</pre><script>x()</script>",
          '{"traceback": ["<b>"]}', at, "1" * 64, "2" * 64)],
    )  # fmt: skip
    out = tmp_path / "r.html"
    result = run("report", target, "-o", out)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    # SQLite compares the text "x" above any number: the view counts it as a retry.
    assert task_counts(html)["42"] == {"succeeded": 0, "failed": 1, "interrupted": 0, "retried": 1}
    assert "<script" not in html
    assert "&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;" in html
    assert "{not json" in html


def test_report_never_trusts_the_files_own_status_view(central: str, tmp_path: Path) -> None:
    """A central ledger whose quantum_status calls everything succeeded still reports failures."""
    target = tmp_path / "lying.sqlite"
    shutil.copy(central, target)
    conn = sqlite3.connect(target, isolation_level=None)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'quantum_status'").fetchone()
    conn.execute("DROP VIEW quantum_status")
    conn.execute(sql[: sql.index("CASE WHEN")] + "'succeeded' " + sql[sql.index("AS status") :])
    conn.close()
    with Ledger.open(target) as led:
        lying = {s for (s,) in led.rows("SELECT DISTINCT status FROM quantum_status")}
        report = build_report(led)
    assert lying == {"succeeded"}
    assert report.totals == {"succeeded": 13, "failed": 2, "interrupted": 1}
    assert len(report.failed) == 2


def test_report_lineage_option_takes_an_id_prefix(
    central: str, campaign: Campaign, tmp_path: Path
) -> None:
    """--lineage with the first characters of an id draws that dataset, named in the summary."""
    calexp = campaign.run.refs["calexp"][0]
    out = tmp_path / "r.html"
    result = run("report", central, "-o", out, "--lineage", str(calexp.id)[:8], "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["lineage"]["dataset_id"] == str(calexp.id)
    assert summary["lineage"]["reason"] == "chosen with --lineage"
    assert summary["totals"] == {"succeeded": 13, "failed": 2, "interrupted": 1}
    assert str(calexp.id) in out.read_text()


def test_report_bad_input_is_one_line_exit_2(
    central: str, campaign: Campaign, tmp_path: Path
) -> None:
    """A folder, an unknown dataset and a missing ledger each give one error line, exit 2."""
    for args, expected in [
        ((campaign.ledgers,), "is a folder: report reads one ledger database"),
        ((central, "--lineage", "ffffffff"), "holds no dataset whose id starts with ffffffff"),
        ((tmp_path / "nope.sqlite",), "no ledger at"),
    ]:
        result = run("report", *args, "-o", tmp_path / "x.html")
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("qledger: error: "), line
        assert expected in line, line
    assert not (tmp_path / "x.html").exists()


def test_report_on_postgresql_matches_sqlite(
    campaign: Campaign, central: str, postgres_url: str
) -> None:
    """The same campaign ingested into PostgreSQL gives the same report data."""
    assert ingest(postgres_url, campaign.sources).ok
    with Ledger.open(central) as led:
        on_sqlite = build_report(led)
    with Ledger.open(postgres_url) as led:
        on_postgres = build_report(led)
    skip = {"source", "generated_at"}
    assert on_postgres.model_dump(exclude=skip) == on_sqlite.model_dump(exclude=skip)


def test_large_lineage_is_cut_to_the_nearest_nodes_and_says_so(tmp_path: Path) -> None:
    """A lineage over max_nodes keeps the nearest ones, marks cut neighbours, and says what."""
    made = run_pipeline(tmp_path / "repo", tmp_path / "ledgers", visits=6, detectors=1)
    target = str(tmp_path / "central.sqlite")
    assert ingest(target, [str(p) for p in made.ledgers]).ok
    with Ledger.open(target) as led:
        graph = lineage(led, made.refs["deepCoadd"][0].id)
    total = len(graph.datasets) + len(graph.quanta)
    picture = draw_lineage(graph, max_nodes=15)
    assert (picture.n_shown, picture.n_nodes) == (15, total)
    assert len(picture.nodes) == 15
    assert any(f"showing the 15 nodes nearest the dataset out of {total}" in n
               for n in picture.notes)  # fmt: skip
    assert sum(n.hidden for n in picture.nodes) > 0
    assert {n.title for n in picture.nodes} >= {"deepCoadd", "coadd", "calexp"}
    kept = {n.id: n for n in picture.nodes}
    assert all(e.source in kept and e.target in kept for e in picture.edges)
    # Edges run left to right, the dataset is rightmost, and each type keeps one column
    # (layers count back from the dataset, so a cut does not shift a branch).
    assert all(kept[e.source].x + kept[e.source].width < kept[e.target].x for e in picture.edges)
    (start,) = [n for n in picture.nodes if n.start]
    assert start.x == max(n.x for n in picture.nodes)
    columns: dict[str, set[float]] = {}
    for n in picture.nodes:
        columns.setdefault(n.title, set()).add(round(n.x + n.width / 2))
    assert all(len(centres) == 1 for centres in columns.values()), columns


# --- in a browser ---------------------------------------------------------------------------

#: Appended to a copy of the report (whose policy forbids scripts, so it is taken out of the
#: copy): it measures what the browser laid out and writes it into a data attribute.
PROBE = """<script>
(function () {
  const svg = document.getElementById("lineage-svg");
  const s = svg.getBoundingClientRect();
  const nodes = [...svg.querySelectorAll("g.node")].map((g) => {
    const box = g.querySelector("rect").getBoundingClientRect();
    return {
      texts: [...g.querySelectorAll("text")].map((t) => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent, left: r.left, right: r.right, top: r.top,
                bottom: r.bottom, height: r.height};
      }),
      box: {left: box.left, right: box.right, top: box.top, bottom: box.bottom},
    };
  });
  const failures = [...document.querySelectorAll("details.failure")].map((d) => ({
    open: d.open,
    traceback_shown: (d.querySelector("pre.tb") || {offsetHeight: 0}).offsetHeight > 0,
  }));
  document.body.setAttribute("data-probe", JSON.stringify({
    viewport: document.documentElement.clientWidth,
    svg: {left: s.left, right: s.right, width: s.width},
    nodes: nodes,
    failures: failures,
    shown_text: document.body.innerText,
    pwned: document.body.getAttribute("data-pwned"),
  }));
})();
</script>"""

#: The mark a hostile label or message would leave if the browser ran it.
_PWNED = re.compile(r"<body[^>]*\bdata-pwned=")
_CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium (its own profile under ``cwd``) and wait for it."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={cwd / 'profile'}", f"--window-size={SCREEN[0]},{SCREEN[1]}", *args],
        capture_output=True, text=True, timeout=180, cwd=cwd, check=True,
    )  # fmt: skip


def dump_dom(page: Path) -> str:
    """The DOM of a page after its scripts ran."""
    return chromium("--dump-dom", page.as_uri(), cwd=page.parent).stdout


def probed(report: Path) -> tuple[dict[str, Any], str]:
    """What the browser shows of a report: the probe's measures, and the DOM."""
    copy = report.with_name("probed.html")
    html = report.read_text()
    assert _CSP.search(html)
    copy.write_text(_CSP.sub("", html).replace("</body>", PROBE + "</body>"))
    dom = dump_dom(copy)
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[:2000]
    return json.loads(html_lib.unescape(found.group(1))), dom


@needs_chromium
def test_browser_shows_counts_traceback_and_readable_lineage(
    report_file: Path, central: str
) -> None:
    """Chromium shows the counts, an open failure's traceback, and every label inside its box."""
    probe, dom = probed(report_file)
    shown = probe["shown_text"]
    assert task_counts(dom) == status_counts(central)
    assert "Traceback (most recent call last)" in shown  # shown, not only present
    assert "_InjectedFailureError: calibrate failed on purpose" in shown
    assert all(f["open"] and f["traceback_shown"] for f in probe["failures"])
    # The picture fits the screen's width and every label sits inside its box, readable.
    assert probe["svg"]["left"] >= 0
    assert probe["svg"]["right"] <= probe["viewport"]
    labels = set()
    for node in probe["nodes"]:
        box = node["box"]
        for t in node["texts"]:
            labels.add(t["text"])
            assert box["left"] <= t["left"], (t, box)
            assert t["right"] <= box["right"] + 0.5, (t, box)
            assert box["top"] <= t["top"], (t, box)
            assert t["bottom"] <= box["bottom"] + 0.5, (t, box)
            assert t["height"] >= 11, t  # not shrunk below a readable size
    assert {"deepCoadd", "coadd", "calexp", "calibrate", "isr", "raw", "bias"} <= labels
    assert {"visit=1", "visit=3", "visit=0"} <= labels  # short data IDs, shared keys said once


@needs_chromium
def test_browser_runs_no_script_from_the_ledger(report_file: Path) -> None:
    """A task label and an error message holding markup show as text and run nothing."""
    probe, dom = probed(report_file)  # the copy has no CSP: escaping alone must hold
    assert probe["pwned"] is None
    assert not _PWNED.search(dom)
    assert SCRIPT_LABEL in probe["shown_text"]
    assert IMG_MESSAGE in probe["shown_text"]
    # And the report as written (with its policy) neither runs nor loads anything.
    assert not _PWNED.search(dump_dom(report_file))


@needs_chromium
def test_browser_screenshot_of_the_report(report_file: Path) -> None:
    """The report renders to a screenshot of the screen's width (looked at by a person too)."""
    shot = report_file.with_name("report.png")
    chromium(f"--screenshot={shot}", report_file.as_uri(), cwd=report_file.parent)
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == SCREEN
