"""Where a localization shows: pytest's failure message, the record, the report's failure detail
and ``python -m gpt_conformance localize``. Every planted bug of ``tests/planted_localize.py`` is run
through the real parity cases, as a user would, and must name its place in all of them."""

from __future__ import annotations

import html
import json
import re

import pytest
from gpt_conformance.harness.cli import main as cli_main
from gpt_conformance.harness.report.render import render
from gpt_conformance.reference.cases import ALL_CASES

from tests.planted_localize import BLACK_BOXES, PLANTED, PLANTED_PLACES
from tests.report_records import histogram, record
from tests.runner import run_pytest, shares_one_run

pytestmark = shares_one_run(__name__)

FAST = [s for s in ALL_CASES if not s.slow]
# Where a planted bug cannot show: an attention bug with one token (it attends to itself alone),
# and the block-2 black boxes on the named cases, whose models have two blocks.
HIDDEN = {t.name: {"one-token"} for t in PLANTED_PLACES if t.where.endswith(".attn")}
HIDDEN.update({t.name: {s.name for s in FAST} for t in BLACK_BOXES if t.where == "h.2"})


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("records")
    args = ["-p", "tests.planted_localize", "cases/test_parity.py", "-m", "not slow", "--target", "eager"]
    for target in PLANTED:
        args += ["--target", target.name]
    return run_pytest(*args, report_dir=report_dir), report_dir


def expected_failures():
    for target in PLANTED:
        for spec in FAST:
            if spec.family in target.capabilities.families and spec.name not in HIDDEN.get(target.name, ()):
                yield target, spec.name


def test_every_planted_bug_names_its_place_in_pytest_records_and_report(planted_run):
    (proc, records, outcomes), report_dir = planted_run
    page = html.unescape((report_dir / "parity.html").read_text())
    logits = {(r["target"], r["case"]): r for r in records if r["check"] == "logits"}
    for target, case in expected_failures():
        rec = logits[(target.name, case)]
        assert rec["status"] == "fail", (target.name, case)
        line = f"first divergence: {target.where} ("
        assert rec["localization"]["first_divergence"] == target.where, (target.name, case, rec["localization"])
        assert rec["localization"]["summary"].startswith(line)
        assert outcomes[f"test_logits_parity[{target.name}-{case}]"] == "failure"
        printed = failure_section(proc.stdout, f"test_logits_parity[{target.name}-{case}]")
        assert printed.count(line) == 1, printed  # once: the message is not repeated as a chained exception
        assert rec["localization"]["summary"] in page
    assert page.count('aria-label="per-layer error"') >= len(list(expected_failures()))


def test_no_pass_is_located_and_no_verdict_changes(planted_run):
    (proc, records, outcomes), _ = planted_run
    parity = [r for r in records if r["check"] in ("logits", "loss")]
    assert {r["status"] for r in parity} <= {"pass", "fail", "skip"}
    for r in parity:
        assert ("localization" in r) == (r["status"] == "fail"), (r["target"], r["case"], r["check"])
    eager = [r for r in parity if r["target"] == "eager"]
    assert eager and all(r["status"] == "pass" for r in eager)
    for target in BLACK_BOXES:  # no block 2 in a two-block model: it is the reference, and passes
        if target.where == "h.2":
            assert all(r["status"] in ("pass", "skip") for r in parity if r["target"] == target.name)


def failure_section(stdout: str, test_id: str) -> str:
    """The text pytest prints under ``____ test_id ____``, up to the next such header."""
    match = re.search(rf"_+ {re.escape(test_id)} _+\n(.*?)(?=\n_{{3,}} |\n=+ )", stdout, re.S)
    assert match, f"no failure section for {test_id}"
    return match.group(1)


# --- the report ------------------------------------------------------------------------------------
def localized_record(points: list[dict], **localization) -> dict:
    loc = {"method": "intermediates", "summary": "first divergence: h.1.attn (max_abs 0.00055 = 4.7e+04x eager "
           "fp32's error there); blocks before it conform", "first_divergence": "h.1.attn", "depth_independent": False,
           "points": points, "skipped": "", "notes": [], **localization}
    return record("planted", "seed", "logits", "fail", histogram=histogram(), localization=loc)


def test_report_draws_the_per_layer_chart_beside_the_histogram():
    points = [{"name": n, "status": s, "metric": "max_abs", "value": v, "eager": 1e-8, "bound": 1e-7}
              for n, s, v in [("embed", "pass", 0.0), ("h.0.attn", "pass", 1e-8), ("h.1.attn", "fail", 5e-4),
                              ("logits", "fail", "nan")]]
    points[2]["first"] = True
    page = render([localized_record(points)])
    detail = page[page.index('<section id="details">'):]
    figures = detail[detail.index('<div class="figures">'):]
    assert figures.index('aria-label="histogram of absolute error"') < figures.index('aria-label="per-layer error"')
    assert html.unescape(localized_record([])["localization"]["summary"]) in html.unescape(detail)
    chart = figures[figures.index('aria-label="per-layer error"'):figures.index("</svg>", figures.index("per-layer"))]
    assert chart.count("<circle") == 3  # NaN is not drawn as a point; 0 (eager exact) sits on the floor
    assert 'class="dot fail"' in chart and 'class="dot pass"' in chart and "first divergence" in chart
    assert "localization: every point" in detail
    assert "first divergence: h.1.attn" in page[page.index('id="matrix"'):page.index('id="precision"')]  # cell hover


def test_report_escapes_localization_strings_and_survives_odd_points():
    hostile = "<script>alert(1)</script>"
    rec = localized_record([{"name": hostile, "status": "fail", "value": "x"}, "not a point"], summary=hostile)
    page = render([rec])
    assert hostile not in page and html.escape(hostile) in page
    assert render([localized_record([])]).count('aria-label="per-layer error"') == 0


# --- the command line ------------------------------------------------------------------------------
def test_cli_localizes_a_named_case(tmp_path, capsys):
    rc = cli_main(["localize", "-p", "tests.planted_localize", "--target", "planted-at-h0-mlp", "--case", "seed",
                   "--report-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "first divergence: h.0.mlp (" in out
    assert re.search(r"^> h\.0\.mlp +fail", out, re.M)  # the table marks the first divergence
    (records,) = tmp_path.glob("records-localize-*.jsonl")
    assert [json.loads(line)["check"] for line in records.read_text().splitlines()] == ["logits", "loss"]


def test_cli_bisects_a_black_box_on_a_four_block_repro_example(tmp_path, capsys):
    example = {"target": "planted-blackbox-h2-mlp",
               "model": {"config": {"block_size": 16, "vocab_size": 29, "n_layer": 4, "n_head": 2, "n_embd": 16,
                                    "dropout": 0.0, "bias": True, "gelu": "erf", "attn_impl": "sdpa",
                                    "layer_norm_eps": 1e-05}, "seed": 3, "weight_std": 0.2},
               "input": {"idx": [[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 28, 11]],
                         "targets": [[5, 9, 2, 7, 3, 6], [4, 8, 0, 28, 11, -1]]}}
    path = tmp_path / "example.json"
    path.write_text(json.dumps(example))
    rc = cli_main(["localize", "-p", "tests.planted_localize", "--repro-file", str(path), "--report-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1 and "first divergence: h.2 (the model cut after it: " in out
    assert re.search(r"^  2 blocks +pass", out, re.M) and re.search(r"^> 3 blocks +fail", out, re.M)


def test_cli_says_when_there_is_nothing_to_localize_and_rejects_bad_input(tmp_path, capsys):
    assert cli_main(["localize", "--target", "eager", "--case", "seed", "--report-dir", str(tmp_path)]) == 0
    assert "it conforms: nothing to localize" in capsys.readouterr().out
    assert cli_main(["localize", "--target", "eager", "--case", "no-such-case", "--report-dir", str(tmp_path)]) == 2
    assert "no named case 'no-such-case'" in capsys.readouterr().err
    assert cli_main(["localize", "-p", "json", "--target", "eager", "--case", "seed"]) == 2
    assert "defines no pytest_gpt_conformance_register" in capsys.readouterr().err
    assert cli_main(["localize", "--case", "seed"]) == 2
    assert "--case needs --target NAME" in capsys.readouterr().err
