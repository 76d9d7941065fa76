"""The HTML parity report: matrix, conflicts, trend, optional sections, escaping, CLI, and the
report every pytest run writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest
from gpt_conformance.harness.cli import main as cli_main
from gpt_conformance.harness.core.records import RecordWriter, read_records
from gpt_conformance.harness.report.matrix import build_matrix
from gpt_conformance.harness.report.records_view import anchor
from gpt_conformance.harness.report.render import render, write_report
from gpt_conformance.harness.report.trend import trend

from tests.report_records import histogram, record, write_jsonl

REPO = Path(__file__).resolve().parent.parent


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text, as a browser's parser sees them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def section(page: str, section_id: str) -> str:
    start = page.index(f'<section id="{section_id}">')
    return page[start:page.index("</section>", start)]


# --- matrix ------------------------------------------------------------------------------
def test_matrix_has_targets_as_columns_and_links_failures_to_details():
    records = [record("eager", "seed", "logits"), record("export", "seed", "logits", "fail", histogram=histogram()),
               record("export", "seed", "loss")]
    page = render(records)
    matrix = section(page, "matrix")
    assert matrix.index(">eager<") < matrix.index(">export<")
    target = anchor(("export", "seed", "logits"))
    assert f'href="#{target}"' in matrix
    assert f'id="{target}"' in section(page, "details")
    cells = re.findall(r'<td class="cell (\w+)[^"]*" title="([^"]*)"', matrix)
    assert ("fail", "export · seed · logits: fail — rmse 0.003 &gt; bound 1.800e-06") in cells
    assert sum(status == "pass" for status, _ in cells) == 2


def test_conflicting_duplicates_from_two_machines_are_shown_side_by_side():
    records = [record("export", "seed", "logits", "pass", host="machine-a"),
               record("export", "seed", "logits", "fail", host="machine-b", message="only on machine b")]
    _, rows, _ = build_matrix(records)
    (cell,) = [c for c in rows[0].cells if c is not None]
    assert cell.conflict and cell.segments == ["fail", "pass"] and len(cell.records) == 2
    page = render(records)
    detail = section(page, "details")
    assert "conflict: 2 records disagree" in detail
    assert "machine-a · run" in detail and "machine-b · run" in detail and "only on machine b" in detail


def test_property_examples_of_one_run_are_not_a_conflict_but_one_example_disagreeing_is():
    # A property check writes one record per Hypothesis example; one example passing and another
    # skipped (a vacuous causality cut) are two checks. The same example judged differently by two
    # machines is a conflict.
    examples = [{"target": "export", "model": {"seed": s}, "input": {"idx": [[1, 2]]}} for s in (1, 2)]
    one_run = [record("export", "property", "causality", "pass", example=examples[0]),
               record("export", "property", "causality", "skip", example=examples[1], message="cut at the end")]
    _, rows, details = build_matrix(one_run)
    (cell,) = rows[0].cells
    assert not cell.conflict and cell.segments == ["pass", "skip"] and not details
    assert not re.search(r'<td class="cell \w+ conflict"', section(render(one_run), "matrix"))
    two_machines = one_run + [record("export", "property", "causality", "fail", host="machine-b", example=examples[0])]
    _, rows, details = build_matrix(two_machines)
    (cell,) = rows[0].cells
    assert cell.conflict and [d.conflict for d in details] == [True]


def test_agreeing_duplicates_are_counted_not_dropped():
    records = [record("eager", "seed", "logits", host=h) for h in ("a", "b", "c")]
    _, rows, details = build_matrix(records)
    (cell,) = rows[0].cells
    assert not cell.conflict and len(cell.records) == 3 and not details


def test_skipped_target_shows_its_reason_once_at_the_column_head():
    reason = "tripy-fp32: needs an NVIDIA GPU: torch.cuda.is_available() is False"
    records = [record("eager", "seed", "logits"), record("eager", "seed", "loss")]
    records += [record("tripy-fp32", f"cases/test_parity.py::test_logits_parity[tripy-fp32-{c}]", "setup", "skip",
                       message=reason) for c in ("seed", "no-bias", "one-token")]
    columns, rows, _ = build_matrix(records)
    assert [c.skip_reason for c in columns] == [None, reason]
    assert len(rows) == 2, "setup skips make no rows"
    matrix = section(render(records), "matrix")
    head = matrix[:matrix.index("</thead>")]
    assert head.count("needs an NVIDIA GPU") == 1
    assert matrix.count("needs an NVIDIA GPU") == 1


def test_unknown_status_is_shown_as_an_error_never_a_pass():
    records = [record("export", "seed", "logits", status="passed-ish")]
    _, rows, details = build_matrix(records)
    assert rows[0].cells[0].status == "error" and details
    assert "unknown status &#39;passed-ish&#39;" in render(records)


# --- trend ---------------------------------------------------------------------------------
def test_trend_lists_new_failures_fixes_and_moved_metrics():
    before = [record("a", "seed", "logits"), record("b", "seed", "logits", "fail"),
              record("c", "seed", "logits", metrics={"rmse": 1e-7}), record("d", "seed", "logits", metrics={"rmse": 1e-7}),
              record("gone", "seed", "logits")]
    after = [record("a", "seed", "logits", "fail"), record("b", "seed", "logits"),
             record("c", "seed", "logits", metrics={"rmse": 3e-7}), record("d", "seed", "logits", metrics={"rmse": 1.2e-7}),
             record("new", "seed", "logits", "error", message="boom")]
    t = trend(after, before, threshold=0.5)
    assert [f["key"] for f in t["new_failures"]] == [("a", "seed", "logits"), ("new", "seed", "logits")]
    assert t["new_failures"][1]["before"] == "absent"
    assert [f["key"] for f in t["fixes"]] == [("b", "seed", "logits")]
    moved = {(m["key"][0], m["metric"]) for m in t["moved"]}
    assert ("c", "rmse") in moved, "tripled"
    assert ("d", "rmse") not in moved, "a 17% change is under the 50% threshold"
    assert (t["only_current"], t["only_baseline"]) == (1, 1) and t["gone_targets"] == ["gone"]
    summary = section(render(after, before), "summary")
    assert "target(s) that ran in the baseline:\n    gone." in summary
    assert "New failures (2)" in summary and "Fixed (1)" in summary and f'href="#{anchor(("a", "seed", "logits"))}"' in summary


def test_trend_counts_a_metric_turning_nan_as_moved():
    t = trend([record(metrics={"rmse": "nan"})], [record(metrics={"rmse": 1e-7})])
    assert [m["metric"] for m in t["moved"]] == ["rmse"]


# --- optional sections -------------------------------------------------------------------------
def test_greedy_texts_side_by_side_with_the_divergence_marked():
    greedy = {"first_divergence": 5, "margin": 0.3, "reference_text": "the cat sat", "target_text": "the cat ran"}
    page = render([record("export", "prompt-1", "greedy", "fail", greedy=greedy)])
    assert "the cat <mark>sat</mark>" in page and "the cat <mark>ran</mark>" in page
    assert "greedy diverges at token 5" in page


def test_error_histogram_is_inline_svg_with_the_bound_line():
    page = render([record("export", "seed", "logits", "fail", histogram=histogram(-3))])
    detail = section(page, "details")
    assert detail.count('class="hbar"') == sum(c > 0 for c in histogram(-3)["counts"]) > 5
    assert "bound 1.800e-06" in detail


def test_precision_latency_and_property_sections_light_up():
    records = [
        record("int8", "seed", "logits", precision="int8", metrics={"top1_agreement": 0.97, "kl_mean": 0.01}),
        record("int8", "prompt", "greedy", precision="int8", greedy={"first_divergence": 12}),
        record("int8", "wikitext", "quality", precision="int8",
               quality={"perplexity_ratio": 1.04, "arithmetic": "pass"}),
        record("export", "seed", "latency", latency={"median_s": 0.02, "q1_s": 0.018, "q3_s": 0.025,
                                                     "ratio_vs_eager": 1.25, "mfu": 0.31,
                                                     "time_to_first_result_s": 2.5}),
        record("export", "random-shapes", "property", "fail",
               property={"example": "batch=1, seq_len=17", "repro": "pytest 'cases/test_props.py::test_x'"}),
    ]
    page = render(records)
    precision = section(page, "precision")
    assert "0.97" in precision and "0.01" in precision and "1.04" in precision and "token 12" in precision
    assert "arithmetic=pass" in precision
    latency = section(page, "latency")
    assert "<svg" in latency and latency.count('class="whisker"') == 3 and "31%" in latency and "2.5" in latency
    details = section(page, "details")
    assert "batch=1, seq_len=17" in details and "pytest &#39;cases/test_props.py::test_x&#39;" in details


def test_decode_section_shows_each_call_beside_eager_and_names_targets_without_a_decoder():
    """Per target and case, each decode call's error beside eager fp32's with their ratio, the
    failure's localization line, and the targets whose decode records are skips, once each."""
    calls = ["prefill", "step 1", "step 2"]
    line = "decode path first diverges at step 1 of 2 (position 16); first divergence: h.1 (...)"
    records = [
        record("export", "seed", "decode", decode={"calls": calls, "max_abs": [4e-7, 5e-7, 6e-7],
                                                   "eager_max_abs": [2e-7, 5e-7, 3e-7]}),
        record("planted", "seed", "decode", "fail", decode={"calls": calls, "max_abs": [4e-7, 0.25, 0.5],
                                                            "eager_max_abs": [2e-7, 5e-7, 3e-7],
                                                            "first_diverging": line}),
        record("onnxruntime", "seed", "decode", "skip", message="target has no decoder (Capabilities.decode is None)"),
        record("onnxruntime", "scaled", "decode", "skip", message="target has no decoder (Capabilities.decode is None)"),
    ]
    decode = section(render(records), "decode")
    rows = decode.split("<tr>")[2:]  # after the header row
    assert [row.split("</td>")[0].removeprefix("<td>") for row in rows] == ["export", "planted"]
    assert "prefill: 4.000e-07 / 2.000e-07 (2x) · step 1: 5.000e-07 / 5.000e-07 (1x)" in rows[0]
    assert 'class="fail"' in rows[1] and "step 1: 0.25 / 5.000e-07 (5.000e+05x)" in rows[1]
    assert "first divergence: h.1" in rows[1]
    assert decode.count("onnxruntime") == 1 and "Without a decoder" in decode


def test_unknown_fields_still_show_as_key_value():
    page = render([record("export", "seed", "custom", "fail", weird_field={"nested": [1, 2]}, another="value-x")])
    details = section(page, "details")
    assert "weird_field" in details and "value-x" in details and "nested" in details


# --- safety ------------------------------------------------------------------------------------
PAYLOADS = ['<script>alert("x")</script>', "\"'><img src=x onerror=alert(1)>", "</textarea><svg onload=alert(2)>"]


def hostile_record(payload: str, status: str) -> dict:
    """A record with ``payload`` in every string field the report shows, including keys."""
    return record(
        target=f"t{payload}", case=f"c{payload}", check=f"k{payload}", status=status, host=f"h{payload}",
        run_id=f"r{payload}", precision=f"p{payload}", device=f"d{payload}", policy=payload, message=payload,
        seed=payload, config={payload: payload}, golden_sha256=payload,
        metrics={payload: 1.0, "rmse": payload}, baseline={payload: 2.0},
        gates=[{"metric": payload, "value": payload, "bound": payload, "baseline": payload, "passed": False,
                "min_multiplier": payload, "min_tolerance": payload, "direction": payload, "reason": payload}],
        environment={payload: payload, "hostname": f"h{payload}"}, target_environment={payload: payload},
        greedy={"first_divergence": payload, "reference_text": f"{payload}a", "target_text": f"{payload}b",
                "divergences": [{payload: payload, "step": 1}, payload], payload: payload},
        quality={"top1_agreement": payload, payload: payload},
        property={"example": payload, "repro": payload, payload: payload},
        latency={"ratio_vs_eager": payload, payload: payload}, repro=payload,
        histogram={"log10_edges": [payload], "counts": [payload]},
        **{payload: payload, "extra": [payload, {payload: payload}]},
    )


@pytest.mark.parametrize("status", ["fail", "error", "skip", "pass"])
def test_every_record_string_is_escaped(status):
    records = [hostile_record(p, status) for p in PAYLOADS] + [hostile_record(p, p) for p in PAYLOADS]
    page = render(records, baseline=[hostile_record(p, "pass" if status != "pass" else "fail") for p in PAYLOADS])
    for payload in PAYLOADS:
        assert payload not in page
    elements = Elements(page)
    assert not [t for t, _ in elements.tags if t in ("script", "img", "textarea")]
    assert not [(t, a) for t, attrs in elements.tags for a in attrs if a.lower().startswith("on")]
    text = "".join(elements.text)
    if status in ("fail", "error"):  # only these have a detail block; the others show in matrix and summary
        for payload in PAYLOADS:
            assert f"{payload}a" in text, "the payload reaches the page as text, escaped"
    assert "t" + PAYLOADS[0] in text


# --- files and command line ---------------------------------------------------------------------
def test_cli_report_and_merge_with_baseline(tmp_path, capsys):
    cpu = write_jsonl(tmp_path / "cpu" / "records-1-main.jsonl", [record("eager"), record("export", status="fail")])
    gpu = write_jsonl(tmp_path / "gpu" / "records-1-gw0.jsonl", [record("tripy-fp32", host="gpu-runner")])
    prev = write_jsonl(tmp_path / "prev" / "records-0-main.jsonl", [record("eager"), record("export")])
    out = tmp_path / "single.html"
    assert cli_main(["report", str(cpu), "-o", str(out)]) == 0
    assert "export" in out.read_text()
    merged = tmp_path / "parity.html"
    assert cli_main(["report", "merge", str(tmp_path / "cpu"), str(gpu.parent), "-o", str(merged),
                     "--baseline", str(prev.parent)]) == 0
    page = merged.read_text()
    assert "tripy-fp32" in section(page, "matrix") and "gpu-runner" in section(page, "summary")
    assert "New failures (1)" in page
    capsys.readouterr()
    assert cli_main(["report", "merge", str(tmp_path / "nope"), "-o", str(merged)]) == 2
    assert "no such record file or directory" in capsys.readouterr().err


def test_corrupt_record_line_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "records.jsonl"
    bad.write_text('{"target": "eager"}\n{not json\n')
    with pytest.raises(ValueError, match=r"records\.jsonl:2"):
        write_report([bad], tmp_path / "out.html")


def test_real_records_round_trip_through_the_writer(tmp_path):
    writer = RecordWriter(tmp_path / "records-x-main.jsonl", "x")
    writer.write(record("export", status="fail", histogram=histogram(), metrics={"rmse": float("nan")}))
    out = write_report([tmp_path], tmp_path / "parity.html")
    assert read_records([tmp_path])[0]["metrics"]["rmse"] == "nan"
    assert "rmse" in out.read_text()


def test_failing_parity_record_carries_an_error_histogram(tmp_path):
    from gpt_conformance.harness.api import registry
    from gpt_conformance.harness.checks.session import ConformanceSession, Options
    from gpt_conformance.reference.cases import named_case

    from tests.planted import LayerNormEps

    writer = RecordWriter(tmp_path / "records-h-main.jsonl", "h")
    session = ConformanceSession(registry, writer, Options(report_dir=tmp_path))
    verdict = session.check_named_parity(LayerNormEps(), named_case("one-token"), "logits")
    assert verdict.status == "fail"
    (rec,) = read_records([writer.path])
    counts = rec["histogram"]["counts"]
    assert len(rec["histogram"]["log10_edges"]) == len(counts) + 1
    assert sum(counts) == rec["metrics"]["numel"]


INNER_TEST = textwrap.dedent("""
    import pytest

    @pytest.mark.parametrize("n", range({n}))
    def test_writes_a_record(conformance, n):
        conformance.writer.write({{"target": "inner-target", "case": f"case-{{n}}", "check": "logits",
                                   "status": "fail" if n == 0 else "pass", "message": "planted"}})
""")


def run_inner_pytest(tmp_path: Path, *args: str, n: int = 2) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER_TEST.format(n=n))
    env = {k: v for k, v in os.environ.items() if k not in ("GPT_CONFORMANCE_RUN_ID", "PYTEST_XDIST_WORKER")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gpt_conformance.harness.pytest_plugin.plugin", "-p", "no:cacheprovider",
                           f"--report-dir={tmp_path / 'reports'}", "test_inner.py", *args],
                          check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_every_pytest_run_writes_parity_html(tmp_path):
    result = run_inner_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    page = tmp_path / "reports" / "parity.html"
    assert f"parity report: {page.relative_to(tmp_path)}" in result.stdout or f"parity report: {page}" in result.stdout
    html_text = page.read_text()
    assert "case-0" in html_text and "case-1" in html_text and "planted" in html_text


@pytest.mark.slow
def test_xdist_controller_merges_every_workers_records(tmp_path):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install -e '.[test]')")
    result = run_inner_pytest(tmp_path, "-n", "2", n=6)
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted((tmp_path / "reports").glob("records-*.jsonl"))
    assert len(files) == 2 and all("-gw" in f.name for f in files)
    html_text = (tmp_path / "reports" / "parity.html").read_text()
    assert all(f"case-{n}" in html_text for n in range(6))


def test_quantization_and_latency_records_in_their_helpers_shapes():
    """Shapes as cases/test_precision.py and harness/checks/latency.py write them: quality metrics in
    ``metrics`` with a top-level greedy divergence index; the ratio's own quartiles."""
    records = [
        record("int4-wo", "seed", "arithmetic", "pass", precision="int4-wo", level="arithmetic"),
        record("int4-wo", "seed", "quality", "fail", precision="int4-wo", level="quality",
               metrics={"top1_agreement": 0.83, "kl_mean": 0.2, "ppl_ratio": 1.3}, greedy_divergence_index=4.0,
               greedy_steps=16.0),
        record("int4-wo", "no-bias", "quality", "pass", precision="int4-wo",
               metrics={"top1_agreement": 0.9, "kl_mean": 0.1, "ppl_ratio": 1.1}, greedy_divergence_index=16.0,
               greedy_steps=16.0),
        record("export", "small", "latency-forward", message="1.2x eager",
               latency={"median_s": 0.01, "ratio_vs_eager": 1.2, "ratio_q1": 1.1, "ratio_q3": 1.5,
                        "eager": {"median_s": 0.008}, "mfu": None, "time_to_first_result_s": 0.4}),
    ]
    page = render(records)
    precision = section(page, "precision")
    for shown in ("0.83", "0.2", "1.3", "token 4", "1 arithmetic pass", "1 quality fail", "1 quality pass"):
        assert shown in precision, shown
    latency = section(page, "latency")
    assert "1.1 – 1.5" in latency and "export · small · latency-forward" in latency


def test_failures_past_max_details_are_listed_one_line_each_never_dropped():
    records = [record("export", f"case-{i}", "logits", "fail") for i in range(5)]
    page = render(records, max_details=2)
    details = section(page, "details")
    assert details.count('<article class="detail') == 2
    assert "3 more failures, errors and conflicts" in details
    for i in range(5):
        assert f'id="{anchor(("export", f"case-{i}", "logits"))}"' in details
