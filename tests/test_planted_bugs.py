"""Proof that the parity cases catch bugs: every planted-bug target fails, correct targets pass.

Runs the real conformance cases in a subprocess, exactly as ``pytest -m cpu`` would, with the
planted targets of ``tests/planted.py`` registered through the plugin hook.
"""

import pytest
from gpt_conformance.harness.checks.discrimination import has_init_weights
from gpt_conformance.reference.cases import ALL_CASES

from tests.planted import PLANTED
from tests.planted_nanochat import PLANTED_NANOCHAT
from tests.runner import run_pytest, shares_one_run, statuses

pytestmark = shares_one_run(__name__)

CORRECT = ["eager", "export", "export-strict", "export-serdes"]
FAST = {family: [s.name for s in ALL_CASES if not s.slow and s.family == family] for family in ("nanogpt", "nanochat")}
# Where a bug's math makes it invisible: a causal-mask bug or a wrong attention scale with one
# token (softmax over one score); kv heads repeated in the wrong order when nothing (n_kv_head ==
# n_head) or one head (n_kv_head == 1) is repeated; a dropped bias where nanoGPT's init makes every
# bias 0 (the rescaled and trained cases exist to show it); tanh GELU moves the logits but not the
# loss beyond fp32's loss gate on near-uniform init models.
INIT_CASES = {s.name for s in ALL_CASES if not s.slow and s.family == "nanogpt" and has_init_weights(s)}
INVISIBLE = {("planted-mask-off-by-one", check): {"one-token"} for check in ("logits", "loss")}
INVISIBLE |= {("planted-attention-scale", check): {"one-token"} for check in ("logits", "loss")}
INVISIBLE |= {("planted-nanochat-kv-order", check): {"nanochat-seed", "nanochat-mqa"} for check in ("logits", "loss")}
INVISIBLE |= {(bug, check): INIT_CASES for bug in ("planted-dropped-layernorm-bias", "planted-dropped-linear-bias")
              for check in ("logits", "loss")}
INVISIBLE[("planted-tanh-gelu", "loss")] = INIT_CASES


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("records")
    args = ["-p", "tests.planted", "-p", "tests.planted_nanochat", "cases/test_parity.py", "-m", "not slow"]
    for name in CORRECT + [t.name for t in PLANTED + PLANTED_NANOCHAT]:
        args += ["--target", name]
    return run_pytest(*args, report_dir=report_dir)


@pytest.mark.parametrize("check", ["logits", "loss"])
def test_correct_targets_pass_every_named_case(planted_run, check):
    records = planted_run.records
    got = statuses(records, check)
    for target in CORRECT:
        for case in FAST["nanogpt"] + FAST["nanochat"]:
            assert got[(target, case)] == "pass", f"{target} on {case} ({check}): {got[(target, case)]}"


@pytest.mark.parametrize("planted", PLANTED + PLANTED_NANOCHAT, ids=lambda t: t.name)
@pytest.mark.parametrize("check", ["logits", "loss"])
def test_planted_bug_is_flagged(planted_run, planted, check):
    proc, records, _ = planted_run
    got = statuses(records, check)
    (family,) = planted.capabilities.families
    cases = FAST[family]
    failing = {case for case in cases if got[(planted.name, case)] == "fail"}
    expected = set(cases) - INVISIBLE.get((planted.name, check), set())
    assert failing == expected, f"{planted.name} ({planted.description}) slipped through {expected - failing}"
    assert f"test_{check}_parity[{planted.name}-{cases[-1]}]" in proc.stdout


def test_planted_targets_skip_other_families(planted_run):
    records = planted_run.records
    got = statuses(records, "family")
    assert got[("planted-layernorm-eps", "nanochat-seed")] == "skip"
    assert got[("planted-nanochat-rotary-sign", "seed")] == "skip"


def test_failing_records_say_how_far_off(planted_run):
    records = planted_run.records
    record = next(r for r in records if r["target"] == "planted-layernorm-eps" and r["case"] == "seed"
                  and r["check"] == "logits")
    assert record["message"].startswith("out of tolerance")
    for gate in record["gates"]:
        assert gate["value"] > gate["bound"] and gate["min_multiplier"] > 2.0
    for key in ("config", "input_shape", "seed", "policy", "duration_s", "environment"):
        assert record[key] is not None, key
    assert record["environment"]["torch"] and record["input_shape"] == [64, 32]


# Where each bug is, as bisection must name it (these targets return logits only): the LayerNorm
# bugs (eps, dropped bias) are in every norm, the final one included, so they show with no block
# at all; the others are in every block (or block 0 only), so block 0 is the first to break.
WHERE = {"planted-mask-off-by-one": "h.0", "planted-transposed-weight": "h.0",
         "planted-layernorm-eps": "embeddings or head", "planted-dropped-layernorm-bias": "embeddings or head",
         "planted-dropped-linear-bias": "h.0", "planted-tanh-gelu": "h.0", "planted-attention-scale": "h.0",
         "planted-nanochat-rotary-sign": "h.0", "planted-nanochat-kv-order": "h.0"}


def test_failing_records_say_where(planted_run):
    failing = [r for r in planted_run.records if r["check"] in ("logits", "loss") and r["status"] == "fail"]
    assert {r["target"] for r in failing} == set(WHERE)
    for r in failing:
        assert r["localization"]["first_divergence"] == WHERE[r["target"]], (r["target"], r["case"], r["check"])
