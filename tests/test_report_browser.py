"""Headless-browser smoke test of the parity report, with Debian's Chromium (``apt-get install
chromium``): the page loads with no console message at all (it has no script, so any message is
an error such as a blocked fetch) and its matrix is laid out visibly."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest
from gpt_conformance.harness.report.render import render

from tests.report_records import histogram, record
from tests.test_report import hostile_record

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=1", "--window-size=1280,900"]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")

# Runs only in the test's own copy of the page (the report itself has no script and a CSP that
# forbids any): lays out the page and writes what it finds onto <body> for --dump-dom to show.
PROBE = """<script>
const m = document.querySelector("table.matrix");
const cell = m && m.querySelector("td.cell");
if (cell) cell.scrollIntoView({block: "center", inline: "center"});
const r = cell ? cell.getBoundingClientRect() : null;
const hit = r ? document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) : null;
const s = m ? getComputedStyle(m) : null;
document.body.dataset.probe = JSON.stringify({
  matrix: !!m, width: m ? m.getBoundingClientRect().width : 0, height: m ? m.getBoundingClientRect().height : 0,
  display: s && s.display, visibility: s && s.visibility, cells: m ? m.querySelectorAll("td.cell").length : 0,
  cellOnTop: !!(hit && cell && (hit === cell || cell.contains(hit)))});
</script>"""


def sample_page() -> str:
    return render([
        record("eager", "seed", "logits"), record("export", "seed", "logits", "fail", histogram=histogram()),
        record("export", "seed", "loss", "pass", host="a"), record("export", "seed", "loss", "fail", host="b"),
        record("export", "prompt", "greedy", "fail", greedy={"first_divergence": 3, "reference_text": "abc d",
                                                             "target_text": "abc e"}),
        record("export", "seed", "latency", latency={"median_s": 0.02, "q1_s": 0.019, "q3_s": 0.023,
                                                     "ratio_vs_eager": 1.2, "mfu": 0.2}),
        record("tripy-fp32", "x", "setup", "skip", message="needs an NVIDIA GPU"),
        hostile_record('<script>console.error("escaped?")</script>', "fail"),
    ], baseline=[record("export", "seed", "logits")])


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{page.stem}"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          check=False, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for line in stderr.splitlines() if (m := CONSOLE.search(line))]


def test_console_detector_sees_a_planted_console_error(tmp_path):
    page = tmp_path / "planted.html"
    page.write_text('<html><body><script>console.error("planted-error")</script></body></html>')
    result = chromium(tmp_path, page, "--dump-dom")
    assert any("planted-error" in m for m in console_messages(result.stderr)), result.stderr[-2000:]


def test_report_loads_without_console_errors(tmp_path):
    page = tmp_path / "parity.html"
    page.write_text(sample_page(), encoding="utf-8")
    result = chromium(tmp_path, page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'class="matrix"' in result.stdout
    assert console_messages(result.stderr) == []


def test_matrix_is_visible(tmp_path):
    page_text = sample_page()
    page_text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page_text)
    page = tmp_path / "probe.html"
    page.write_text(page_text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = chromium(tmp_path, page, "--dump-dom")
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["matrix"] and probe["display"] == "table" and probe["visibility"] == "visible"
    assert probe["width"] > 200 and probe["height"] > 40 and probe["cells"] >= 5
    assert probe["cellOnTop"], "the first matrix cell is covered by something"
