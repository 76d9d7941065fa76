"""Proof that the decode checks catch decode bugs: every planted decode bug fails where its math
shows, is located at its call (the prefill or the first step) and, on decode parity, in its block,
and the reference decoder passes.

Runs cases/test_decode_path.py in a subprocess, as ``pytest -m cpu`` would, with the targets of
``tests/planted_decode.py``, on the cases where the bugs differ: nanoGPT (``scaled``), one kv head
(``nanochat-mqa``) and grouped-query attention (``nanochat-gqa``).
"""

import pytest

from tests.planted_decode import PLANTED_DECODE
from tests.runner import run_pytest, shares_one_run

pytestmark = shares_one_run(__name__)

CASES = ("scaled", "nanochat-mqa", "nanochat-gqa")
STEP = "first diverges at step 1 "
# (check, case) -> where the failure starts, for each bug. A bug of the step's graph breaks the
# first step wherever the step computes something else: parity, the full-length decode (its steps
# end at the block's last slot) and the target's own forward pass. A slot written late or attending
# to unwritten slots also breaks a ragged batch: a step then reads a slot that holds a right pad in
# the batch and zeros in a row decoded alone. Reversed kv heads are invisible with one kv head. A
# bfloat16 cache rounds a batch and its rows alike. The no-reset bug shows only in a reused state,
# the padding leak only in a left-padded ragged batch, both at the prefill.
STEP_CHECKS = {("decode", c): STEP for c in CASES} | {("decode-forward", c): STEP for c in CASES}
STEP_CHECKS[("decode-full", "nanochat-gqa")] = STEP
RAGGED_STEP = {("decode-ragged", c): STEP for c in ("scaled", "nanochat-gqa")}
EXPECTED = {
    "planted-decode-position": STEP_CHECKS,
    "planted-decode-slot-off-by-one": STEP_CHECKS | RAGGED_STEP,
    "planted-decode-unwritten-slots": STEP_CHECKS | RAGGED_STEP,
    "planted-decode-bf16-cache": STEP_CHECKS,
    "planted-decode-gqa-order": {k: v for k, v in STEP_CHECKS.items() if k[1] == "nanochat-gqa"},
    "planted-decode-no-reset": {("decode-reuse", c): "first diverges at the prefill" for c in ("scaled", "nanochat-gqa")},
    "planted-decode-padding-leak": {("decode-ragged", c): "first diverges at the prefill"
                                    for c in ("scaled", "nanochat-gqa")},
    "planted-decode-stale-layer": STEP_CHECKS,
}
# Where decode parity's block bisection puts each step bug. Every bug but one is in the cache
# operations that every block shares, so block 0 is the first to break; a position embedding
# that does not advance breaks nanoGPT with no block at all; the stale weights are in block 1.
BLOCK = {name: {c: "first divergence: h.0 " for c in CASES} for name in EXPECTED}
BLOCK["planted-decode-position"]["scaled"] = "first divergence: embeddings or head "
BLOCK["planted-decode-stale-layer"] = {c: "first divergence: h.1 " for c in CASES}


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    args = ["-p", "tests.planted_decode", "cases/test_decode_path.py", "-k", " or ".join(CASES), "--target", "eager"]
    for target in PLANTED_DECODE:
        args += ["--target", target.name]
    return run_pytest(*args, report_dir=tmp_path_factory.mktemp("records"))


def test_the_reference_decoder_passes_every_decode_check(planted_run):
    eager = [r for r in planted_run.records if r["target"] == "eager"]
    assert eager and {r["status"] for r in eager} == {"pass"}, [(r["case"], r["check"], r["status"]) for r in eager]


@pytest.mark.parametrize("planted", PLANTED_DECODE, ids=lambda t: t.name)
def test_planted_decode_bug_fails_at_its_call(planted_run, planted):
    records = [r for r in planted_run.records if r["target"] == planted.name and r["check"].startswith("decode")]
    failing = {(r["check"], r["case"]): r for r in records if r["status"] != "pass"}
    expected = EXPECTED[planted.name]
    assert set(failing) == set(expected), f"{planted.name} ({planted.description})"
    for key, where in expected.items():
        record = failing[key]
        assert record["status"] == "fail", (key, record["message"])
        assert where in record["decode"]["first_diverging"], (key, record["decode"]["first_diverging"])
        if key[0] == "decode":
            block = BLOCK[planted.name][key[1]]
            assert block in record["decode"]["first_diverging"], (key, record["decode"]["first_diverging"])
            assert record["localization"]["method"] == "bisection", record["localization"]
