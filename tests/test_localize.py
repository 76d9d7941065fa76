"""Proof that a failure is located where it was planted, for white boxes (per-layer errors) and
black boxes (bisection of truncated models), and that localization never touches a pass.

The planted targets are in ``tests/planted_localize.py``; each names the place that must be
found first (``where``). Every check here goes through ``ConformanceSession``, as a pytest run does.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace

import gpt_conformance.harness.checks.session as session_module
import pytest
import torch
from gpt_conformance.harness.api import Capabilities, Target, registry
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts
from gpt_conformance.harness.checks.localize import Budget
from gpt_conformance.harness.checks.session import ConformanceSession, Options, assert_verdict
from gpt_conformance.harness.core.errors import CheckFailed
from gpt_conformance.harness.core.records import RecordWriter, read_records
from gpt_conformance.harness.core.targets import TargetRegistry
from gpt_conformance.harness.report.render import render
from gpt_conformance.reference.cases import ALL_CASES, NANOCHAT_SEED_CONFIG, SEED_CONFIG, named_case
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.goldens import reference_outputs

from tests.planted_localize import BLACK_BOXES, PLANTED_PLACES, BlackBox, ReluMLP

FAST = {family: [s.name for s in ALL_CASES if not s.slow and s.family == family] for family in ("nanogpt", "nanochat")}
# One token attends to itself alone, whatever the scores: an attention bug cannot show there.
INVISIBLE = {"h.1.attn": {"one-token"}, "h.0.attn": {"one-token"}}
WHITE_BOX_CASES = [(t, case) for t in PLANTED_PLACES for case in FAST[next(iter(t.capabilities.families))]
                   if case not in INVISIBLE.get(t.where, ())]


@pytest.fixture(scope="module", autouse=True)
def builtin_targets():
    if "export" not in registry:
        registry.load_entry_points()


def new_session(tmp_path, budget: Budget | None = None) -> ConformanceSession:
    budget = budget or Budget()
    writer = RecordWriter(tmp_path / "records.jsonl", "test")
    return ConformanceSession(TargetRegistry(), writer, Options(report_dir=tmp_path, localize_budget=budget))


def last_record(session: ConformanceSession, **match) -> dict:
    records = [r for r in read_records([session.writer.path]) if all(r.get(k) == v for k, v in match.items())]
    return records[-1]


@pytest.mark.parametrize("planted, case", WHITE_BOX_CASES, ids=lambda x: getattr(x, "name", x))
def test_white_box_bug_is_located_exactly(tmp_path, planted, case):
    session = new_session(tmp_path)
    verdict = session.check_named_parity(planted, named_case(case), "logits")
    assert verdict.status == "fail", verdict.explain()
    assert verdict.localization.startswith(f"first divergence: {planted.where} ("), verdict.localization
    with pytest.raises(CheckFailed) as failure:  # what pytest prints: the gates, then where
        assert_verdict(verdict)
    assert str(failure.value).splitlines()[-1] == verdict.localization
    localization = last_record(session, check="logits")["localization"]
    assert localization["method"] == "intermediates" and localization["first_divergence"] == planted.where
    names = [p["name"] for p in localization["points"]]
    first = names.index(planted.where)
    assert all(p["status"] == "pass" for p in localization["points"][:first]), localization["points"]
    assert localization["points"][first]["status"] == "fail" and localization["points"][first]["first"]


@pytest.mark.parametrize("planted", BLACK_BOXES[:2], ids=lambda t: t.name)
def test_black_box_bug_in_block_2_of_4_is_found_by_bisection(tmp_path, planted):
    session = new_session(tmp_path)
    model, idx, targets = four_block_case(planted)
    prepares = session.prepared.prepare_count
    verdict = judge(session, planted, model, idx, targets)
    assert verdict.status == "fail"
    assert verdict.localization.startswith("first divergence: h.2 ("), verdict.localization
    assert "blocks before it conform (bisection, 2 prepares)" in verdict.localization
    localization = last_record(session, check="logits")["localization"]
    steps = {p["name"]: p["status"] for p in localization["points"]}
    assert steps == {"2 blocks": "pass", "3 blocks": "fail", "4 blocks (the case)": "fail"}
    with pytest.raises(CheckFailed, match=re.escape(verdict.localization)):  # what pytest prints
        assert_verdict(verdict)
    page = html.unescape(render(read_records([session.writer.path])))
    assert verdict.localization in page and 'aria-label="per-layer error"' in page
    # The truncated models went through the session's prepare, and left its cache afterwards.
    assert session.prepared.prepare_count - prepares == 3
    assert len(session.prepared._cache) == 1


def test_black_box_bug_in_the_head_does_not_depend_on_depth(tmp_path):
    planted = BLACK_BOXES[2]
    session = new_session(tmp_path)
    verdict = session.check_named_parity(planted, named_case("seed"), "logits")
    assert verdict.localization.startswith("first divergence: embeddings or head (with no block at all: ")
    assert "the failure does not depend on depth" in verdict.localization
    localization = last_record(session, check="logits")["localization"]
    assert localization["depth_independent"] and localization["first_divergence"] == "embeddings or head"
    assert [p["status"] for p in localization["points"]] == ["fail", "fail", "fail"]  # no block, 1, 2 (the case)


@pytest.mark.parametrize("budget, expected", [
    (Budget(max_prepares=1), "one of h.2..h.3 (bisection stopped, budget spent: 1 of 1 prepares"),
    (Budget(max_prepares=0), "one of the embeddings, the head or h.0..h.3 (bisection stopped, budget spent: 0 of 0"),
    (Budget(max_seconds=0), "one of the embeddings, the head or h.0..h.3 (bisection stopped, budget spent: 0 of 8 "
                            "prepares, 0 of 0 s; not run: 2 more truncated model(s), of 1..3 blocks and the no-block "
                            "model)"),
])
def test_a_spent_budget_says_where_it_may_still_be_and_what_it_skipped(tmp_path, budget, expected):
    planted = BLACK_BOXES[0]
    session = new_session(tmp_path, budget)
    verdict = judge(session, planted, *four_block_case(planted))
    assert verdict.status == "fail"
    assert verdict.localization.startswith("first divergence: " + expected), verdict.localization
    localization = last_record(session, check="logits")["localization"]
    assert localization["first_divergence"] is None and localization["skipped"].startswith("not run: ")
    assert localization["skipped"] in verdict.localization


class CrashesOnTruncatedModels(BlackBox):
    def prepare(self, model, config):
        if config.n_layer < 4:
            raise RuntimeError("cannot compile a model this shallow")
        return super().prepare(model, config)


def test_a_truncated_model_the_target_cannot_prepare_stops_bisection_and_is_recorded(tmp_path):
    planted = CrashesOnTruncatedModels("planted-crashes-shallow", ReluMLP("", "ReLU in block 2", block=2), "h.2")
    session = new_session(tmp_path)
    verdict = judge(session, planted, *four_block_case(planted))
    assert verdict.status == "fail"  # the failure it explains is unchanged
    assert "bisection stopped, the 2-block model gave error: " in verdict.localization
    assert "cannot compile a model this shallow" in verdict.localization
    error = last_record(session, check="prepare")
    assert error["status"] == "error" and error["case"] == "four-blocks · 2 blocks"


class GarbledIntermediates(BlackBox):
    """Claims intermediates but names them wrongly: the per-layer errors cannot be used."""

    def __init__(self):
        super().__init__("planted-garbled-intermediates", ReluMLP("", "ReLU in block 0", block=0), "h.0")
        self.capabilities = replace(self.capabilities, returns_intermediates=True)

    def prepare(self, model, config):
        run = super().prepare(model, config)
        run.intermediates = lambda idx: {"block0": torch.zeros(1)}
        return run


def test_unusable_intermediates_fall_back_to_bisection(tmp_path):
    session = new_session(tmp_path)
    verdict = session.check_named_parity(GarbledIntermediates(), named_case("seed"), "logits")
    assert verdict.localization.startswith("first divergence: h.0 ("), verdict.localization
    localization = last_record(session, check="logits")["localization"]
    assert localization["method"] == "bisection"
    assert localization["notes"] == ["per-layer errors unusable, bisected instead: intermediates() returned "
                                     "unknown names ['block0']"]


@pytest.mark.parametrize("name", ["eager", "export", "torchscript-trace", "eager-fp16"])
def test_a_correct_target_is_never_located(tmp_path, monkeypatch, name):
    def must_not_run(*args, **kwargs):
        raise AssertionError("localization ran on a pass")

    monkeypatch.setattr(session_module, "localize", must_not_run)
    session = new_session(tmp_path)
    target = registry.get(name)
    for spec in ALL_CASES:
        if spec.slow or spec.family not in target.capabilities.families:
            continue
        for check in ("logits", "loss"):
            assert session.check_named_parity(target, spec, check).status in ("pass", "recorded"), (spec.name, check)
    assert not [r for r in read_records([session.writer.path]) if "localization" in r]


def test_a_localization_that_crashes_leaves_the_verdict_as_it_was(tmp_path, monkeypatch):
    planted = PLANTED_PLACES[0]
    expected = new_session(tmp_path / "a").check_named_parity(planted, named_case("seed"), "logits")

    def crash(*args, **kwargs):
        raise ZeroDivisionError("a bug in the localizer")

    monkeypatch.setattr(session_module, "localize", crash)
    verdict = new_session(tmp_path / "b").check_named_parity(planted, named_case("seed"), "logits")
    assert verdict.localization == "localization could not run: ZeroDivisionError: a bug in the localizer"
    assert replace(verdict, localization="") == replace(expected, localization="")


def test_a_loss_that_fails_alone_is_located_after_the_logits(tmp_path):
    """Every intermediate conforms, logits included: the loss computation is what diverges."""

    class WrongLoss(Target):
        name, precision = "planted-wrong-loss", "fp32"
        capabilities = Capabilities(returns_intermediates=True)

        def prepare(self, model, config):
            inner = registry.get("eager").prepare(model, config)

            class Run:
                intermediates = staticmethod(inner.intermediates)

                def __call__(self, idx, targets=None):
                    logits, loss = inner(idx, targets)
                    return logits, None if loss is None else loss * 1.01

            return Run()

    session = new_session(tmp_path)
    assert session.check_named_parity(WrongLoss(), named_case("seed"), "logits").status == "pass"
    verdict = session.check_named_parity(WrongLoss(), named_case("seed"), "loss")
    assert verdict.status == "fail"
    assert verdict.localization.startswith("first divergence: the loss (every intermediate conforms, logits included")


# --- helpers --------------------------------------------------------------------------------------
def four_block_case(planted: Target) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A 4-block model of the planted target's family, built here (no golden needed): the fp64
    truth is computed from it, as for a property example."""
    config = SEED_CONFIG if "nanogpt" in planted.capabilities.families else NANOCHAT_SEED_CONFIG
    config = replace(config, n_layer=4)
    model = family_of(config).build(config, seed=7)
    idx = torch.randint(0, config.vocab_size, (8, 32))
    return model, idx, torch.randint(0, config.vocab_size, (8, 32))


def judge(session, target, model, idx, targets):
    truth = Truth(*reference_outputs(model, idx, targets))
    outputs = session.run(target, model, idx, targets, "four-blocks")
    verdicts = parity_verdicts(target, truth, *outputs[:2])
    return session.judge_parity(target, model, idx, targets, truth, outputs, verdicts, "logits", "four-blocks", 7)

