"""Every model family everywhere: a target is handed models of the families it declares, and of
those only, in every check (named parity, property searches, pinned and found examples,
``--repro``, greedy text); a quantized target is drawn widths its weight blocks tile.

Each run is a separate pytest process, as in CI."""

from __future__ import annotations

import json
from collections import Counter

from gpt_conformance.harness.checks.strategies import named_example
from gpt_conformance.reference.cases import named_case

from tests.runner import ROOT, run_pytest

EXAMPLE_SRC = ROOT / "examples" / "gpt-conformance-example-target" / "src"
NANOCHAT_TARGET = "example-nanochat-numpy"
NANOGPT_ONLY = "target supports model families ['nanochat'], not 'nanogpt'"


def test_nanochat_only_target_gets_every_check_in_its_family_and_never_a_nanogpt_model(tmp_path):
    """The example target's ``prepare`` raises on any model but nanochat's, so a nanoGPT model
    handed to it anywhere would be an ``error`` record here."""
    run = run_pytest("cases/test_parity.py", "cases/test_properties.py", "cases/test_greedy.py", "-m", "not slow",
                     "-p", "gpt_conformance_example.plugin", "--target", NANOCHAT_TARGET,
                     pythonpath=(EXAMPLE_SRC,), report_dir=tmp_path / "reports")
    assert run.proc.returncode == 0, run.proc.stdout[-3000:] + run.proc.stderr[-3000:]
    bad = [(r["test_id"], r["check"], r["message"][:200]) for r in run.records if r["status"] in ("fail", "error")]
    assert not bad, bad
    passes = Counter(r["test_id"].split("::")[1].split("[")[0] for r in run.records if r["status"] == "pass")
    for test in ("test_logits_parity", "test_loss_parity", "test_properties", "test_named_properties",
                 "test_zen_greedy"):
        assert passes[test] > 0, (test, passes)
    # Every nanoGPT check skipped, saying why, before its model reached the target.
    skipped = {r["message"] for r in run.records if r["status"] == "skip" and r["check"] == "family"}
    assert skipped == {NANOGPT_ONLY}, skipped


def test_repro_of_another_family_skips_before_prepare(tmp_path):
    model_case, inp = named_example(named_case("seed"))
    example = {"target": NANOCHAT_TARGET, "model": model_case.to_dict(), "input": inp.to_dict()}
    repro = json.dumps(example)
    run = run_pytest("cases/test_properties.py::test_property_repro", "-p", "gpt_conformance_example.plugin",
                     "--target", NANOCHAT_TARGET, f"--repro={repro}", pythonpath=(EXAMPLE_SRC,),
                     report_dir=tmp_path / "reports")
    assert run.proc.returncode == 0, run.proc.stdout[-3000:] + run.proc.stderr[-3000:]
    assert [(r["check"], r["status"], r["message"]) for r in run.records] == [("family", "skip", NANOGPT_ONLY)]
    assert json.loads(repro)["model"]["family"] == "nanogpt"


def test_found_examples_whose_widths_the_blocks_cannot_tile_skip_before_prepare(tmp_path):
    """int4 with blocks of 16: the pinned nightly examples have n_embd 115, 175 and 200."""
    run = run_pytest("cases/test_properties.py", "-k", "test_found_example", "-p", "tests.planted_quant",
                     "--target", "fake-quant-int4-wo", report_dir=tmp_path / "reports")
    assert run.proc.returncode == 0, run.proc.stdout[-3000:] + run.proc.stderr[-3000:]
    checks = Counter((r["check"], r["status"]) for r in run.records)
    assert checks == {("width", "skip"): 3}, checks
    assert all("is not a multiple of the target's weight block size 16" in r["message"] for r in run.records)
