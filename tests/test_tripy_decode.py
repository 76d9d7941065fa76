"""The Tripy targets' decode path, run on CPU through the nvtripy stand-in and judged by the
harness's own decode checks (``gpt_conformance.harness.checks.decode_checks``, docs/decode.md).

``targets/tripy_gpt.py`` compiles a prefill engine and a step engine per prepared model
(``GPT.prefill``, ``GPT.step``); ``targets/tripy_decode.py`` keeps the static cache, the positions
and the masks on the host. Here the real adapter runs with ``tests/nvtripy_standin`` as nvtripy
(``load_adapter``), so what is proved is the engines' graphs, their inputs and outputs and the
host bookkeeping; not TensorRT's numerics (only a GPU run shows those).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpt_conformance.harness.api import TargetRegistry
from gpt_conformance.harness.checks.decode_checks import DecodeChecks
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.errors import UnsupportedHere
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.decode import CacheOps, ReferenceDecoder, pad_ragged
from gpt_conformance.reference.model import GPT
from gpt_conformance.targets import tripy, tripy_decode

from tests import nvtripy_standin
from tests.planted_decode import AttendsUnwrittenSlots, PaddingLeaks, PositionNotAdvanced, SlotOffByOne
from tests.test_tripy_standin import ADAPTER, MODES, TINY, load_adapter

NANOGPT_DECODE_CASES = ("seed", "scaled", "zen", "full-block")
STATEFUL_CASES = ("scaled", "zen")
# Decode parity verdicts that the harness records instead of judging, by its own rules (the same
# as for these modes' forward parity): the low-precision policies' truth-parity bounds are
# calibrated on nanoGPT-init weights only (scaled, zen are rescaled and trained), and int4-wo's
# gates do not reject the unrelated models by 3x on seed and full-block. Every other is judged.
RECORDED = {("tripy-fp16", "scaled"), ("tripy-fp16", "zen"), ("tripy-int8-wo", "scaled"), ("tripy-int8-wo", "zen"),
            ("tripy-int4-wo", "seed"), ("tripy-int4-wo", "scaled"), ("tripy-int4-wo", "zen"),
            ("tripy-int4-wo", "full-block"), ("tripy-int4-wo", "full-block:full")}


def decode_checks(target: tripy.TripyTarget, report_dir: Path) -> DecodeChecks:
    registry = TargetRegistry()
    registry.register(target)
    session = ConformanceSession(registry, RecordWriter(report_dir / "records.jsonl", "test"),
                                 Options(report_dir=report_dir))
    return DecodeChecks(session)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_tripy_decoder_passes_the_decode_checks(mode, monkeypatch, tmp_path):
    """Every decode check of cases/test_decode_path.py on the nanoGPT cases, as a GPU session runs
    them: parity against the fp64 truth under the mode's policy (eager fp32's own decode error the
    yardstick), decoding to the last slot of the block, the steps against the target's own forward
    pass, a left-padded ragged batch against each row alone and a reused state against a fresh one."""
    load_adapter(monkeypatch)
    target = tripy.TripyTarget(MODES[mode])
    checks = decode_checks(target, tmp_path)
    verdicts = {}
    for case in NANOGPT_DECODE_CASES:
        verdicts[case] = checks.check_parity(target, named_case(case))
        verdicts[f"{case}:forward"] = checks.check_against_forward(target, named_case(case))
    verdicts["full-block:full"] = checks.check_parity(target, named_case("full-block"), full=True)
    for case in STATEFUL_CASES:
        verdicts[f"{case}:ragged"] = checks.check_ragged(target, named_case(case))
        verdicts[f"{case}:reuse"] = checks.check_reuse(target, named_case(case))
    statuses = {name: v.status for name, v in verdicts.items()}
    expected = {name: "recorded" if (mode, name) in RECORDED else "pass" for name in verdicts}
    assert statuses == expected, "\n".join(v.explain() for v in verdicts.values() if not v.passed)


def test_tripy_decoder_greedy_through_the_cache(monkeypatch, tmp_path):
    """The tie-aware greedy check on the shipped Zen model, its tokens made by the prefill engine and
    then the step engine (cases/test_decode_path.py's test_zen_greedy_through_cache)."""
    from gpt_conformance.harness.checks.decode import reference_greedy
    from gpt_conformance.reference.train import load_zen_model

    load_adapter(monkeypatch)
    model, tokenizer = load_zen_model()
    model64, _ = load_zen_model(dtype=torch.float64)
    prompt = "Beautiful is"
    reference = reference_greedy(model64, tokenizer.encode(prompt), len(" better than ugly."))
    checks = decode_checks(tripy.TRIPY_FP32, tmp_path)
    verdict = checks.check_greedy(tripy.TRIPY_FP32, model, reference, f"zen-greedy-cached:{prompt}", tokenizer.decode)
    assert verdict.passed, verdict.explain()


def test_each_engine_is_compiled_once_and_serves_every_call(monkeypatch):
    """One prefill engine and one step engine per prepared model: two sequences of different
    batches and prompt lengths, with a reused state, compile nothing more, every step runs the
    same step engine, and the decode logits equal the reference decoder's (fp32, within 4 fp32
    ulps of the largest logit: the stand-in computes as torch does, in another order of ops)."""
    load_adapter(monkeypatch)
    compiled: list[str] = []
    calls: dict[str, int] = {}  # engine -> how many times it ran
    real_compile = nvtripy_standin.compile

    def counting_compile(func, optimization_level=3, *, args=(), kwargs=None):
        name = getattr(func, "__name__", type(func).__name__)
        compiled.append(name)
        executable = real_compile(func, optimization_level, args=args)
        inner = executable._func

        def counted(*inputs):
            calls[name] = calls.get(name, 0) + 1
            return inner(*inputs)

        executable._func = counted
        return executable

    monkeypatch.setattr(nvtripy_standin, "compile", counting_compile)
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    runner = tripy.TRIPY_FP32.prepare(model, TINY)
    reference = ReferenceDecoder(model, padding=tripy_decode.PADDING)
    idx = torch.randint(0, TINY.vocab_size, (3, TINY.block_size))
    state = None
    for batch, prompt in ((3, 5), (2, 9)):
        for decoder in (runner, reference):
            logits, decoder_state = decoder.prefill(idx[:batch, :prompt], None,
                                                    state if decoder is runner else None)
            outs = [logits]
            for position in range(prompt, TINY.block_size):
                logits, decoder_state = decoder.step(decoder_state, idx[:batch, position:position + 1])
                outs.append(logits)
            if decoder is runner:
                got, state = torch.cat(outs, 1), decoder_state
            else:
                want = torch.cat(outs, 1)
        assert (got - want).abs().max() <= 4 * torch.finfo(torch.float32).eps * want.abs().max()
    assert compiled == ["prefill", "step"]
    steps = (TINY.block_size - 5) + (TINY.block_size - 9)
    assert calls == {"prefill": 2, "step": steps}
    too_many = runner.decoder.empty_state(tripy.MAX_BATCH + 1)
    with pytest.raises(UnsupportedHere, match="outside the step engine's bounds"):
        runner.step(too_many, torch.zeros(tripy.MAX_BATCH + 1, 1, dtype=torch.long))


def test_host_masks_are_the_reference_mask_less_the_unwritten_own_slot():
    """The step's mask: the reference's visible slots but its own (not yet written), then itself;
    the prefill's: the reference's mask over the prompt's slots. Left-padded row 1 (first slot 2)."""
    slots, first = torch.tensor([[4], [4]]), torch.tensor([0, 2])
    step = tripy_decode.step_visible(CacheOps(), slots, first, 6)
    assert step.shape == (2, 1, 1, 7)
    assert step[0, 0, 0].tolist() == [True, True, True, True, False, False, True]
    assert step[1, 0, 0].tolist() == [False, False, True, True, False, False, True]
    prompt = torch.arange(3)[None].expand(2, 3)
    prefill = tripy_decode.prefill_visible(CacheOps(), prompt, torch.tensor([0, 2]))
    assert prefill[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert prefill[1, 0].tolist() == [[True, False, False], [False, True, False], [False, False, True]]


def test_left_padded_ragged_batch_decodes_as_each_row_alone(monkeypatch):
    """The declared padding (left): a ragged batch's rows equal the same rows decoded alone."""
    load_adapter(monkeypatch)
    torch.manual_seed(1)
    model = GPT(TINY).eval()
    runner = tripy.TRIPY_FP32.prepare(model, TINY)
    rows = [torch.randint(0, TINY.vocab_size, (n + 3,)) for n in (7, 4, 1)]
    idx, lengths = pad_ragged([row[:-3] for row in rows], "left")
    logits, state = runner.prefill(idx, lengths)
    batch_logits = [[logits[b, -len(row) + 3:]] for b, row in enumerate(rows)]
    for i in range(3):
        logits, state = runner.step(state, torch.stack([row[len(row) - 3 + i] for row in rows])[:, None])
        for b in range(len(rows)):
            batch_logits[b].append(logits[b])
    for b, row in enumerate(rows):
        alone, alone_state = runner.prefill(row[None, :-3])
        outs = [alone[0]]
        for i in range(3):
            step_logits, alone_state = runner.step(alone_state, row[None, len(row) - 3 + i:len(row) - 2 + i])
            outs.append(step_logits[0])
        # The same engines on the same row, in a batch or alone: the batch and the masked pads may
        # change only the order of fp32 sums, so 4 fp32 ulps of the largest logit.
        got, want = torch.cat(batch_logits[b]), torch.cat(outs)
        assert (got - want).abs().max() <= 4 * torch.finfo(torch.float32).eps * want.abs().max(), b


# --- planted decode bugs in the Tripy path ---------------------------------------------------------
class PlantedHostOps(tripy.TripyTarget):
    """A Tripy target whose host bookkeeping computes one thing wrong (``tests/planted_decode.py``'s
    cache operations): the engines are right, what the host feeds them or writes is not."""

    def __init__(self, ops: CacheOps, prefill: bool = False):
        super().__init__(tripy.MODES[0])
        self.name = f"planted-tripy-{type(ops).__name__}"
        self.ops, self.planted_prefill = ops, prefill

    def prepare(self, model, config):
        runner = super().prepare(model, config)
        runner.decoder.step_ops = self.ops
        if self.planted_prefill:
            runner.decoder.ops = self.ops
        return runner


STEP_1 = "first diverges at step 1 "
HOST_BUGS = {
    # A step's position stays at 0: the wrong row of the position embedding.
    "position-not-advanced": (lambda: PlantedHostOps(PositionNotAdvanced()), "decode", STEP_1),
    # A step's k/v written one slot late: step 1 attends to its own k/v (from the engine), so it is
    # right; step 2 reads step 1's slot, still empty.
    "slot-off-by-one": (lambda: PlantedHostOps(SlotOffByOne()), "decode", "first diverges at step 2 "),
    # The step's mask lets it see every slot of its row, unwritten (zero) ones included.
    "attends-unwritten-slots": (lambda: PlantedHostOps(AttendsUnwrittenSlots()), "decode", STEP_1),
    # A left-padded row's tokens attend to its pads at the prefill.
    "padding-leaks": (lambda: PlantedHostOps(PaddingLeaks(), prefill=True), "decode-ragged",
                      "first diverges at the prefill"),
}


@pytest.mark.parametrize("bug", sorted(HOST_BUGS))
def test_planted_host_bug_fails_at_its_call(bug, monkeypatch, tmp_path):
    load_adapter(monkeypatch)
    make, check, where = HOST_BUGS[bug]
    target = make()
    checks = decode_checks(target, tmp_path)
    spec = named_case("scaled")
    verdict = checks.check_ragged(target, spec) if check == "decode-ragged" else checks.check_parity(target, spec)
    assert verdict.status == "fail", verdict.explain()
    assert where in verdict.localization, verdict.localization


# Source edits of the step engine's graph (targets/tripy_gpt.py): each still compiles and runs.
# (old, new, the block the decode bisection names: a position is read before any block, the
# cache of block 1 is the first one read wrongly).
GRAPH_BUGS = {
    # The step engine reads position 0 whatever the host sends (the prefill is right).
    "step-position-ignored": ("return self.decode(tokens, positions, visible, k_cache, v_cache)",
                              "return self.decode(tokens, positions * 0, visible, k_cache, v_cache)",
                              "first divergence: embeddings or head "),
    # Every layer of the step attends over layer 0's cache.
    "step-reads-layer-0-cache": ("layer_k = None if k_cache is None else k_cache[i]",
                                 "layer_k = None if k_cache is None else k_cache[0]",
                                 "first divergence: h.1 "),
}


@pytest.mark.parametrize("bug", sorted(GRAPH_BUGS))
def test_planted_step_graph_bug_fails_at_step_1(bug, monkeypatch, tmp_path):
    old, new, block = GRAPH_BUGS[bug]
    source = ADAPTER.read_text()
    assert source.count(old) == 1, f"the adapter no longer contains {old!r}: update the planted bug"
    load_adapter(monkeypatch, source.replace(old, new))
    checks = decode_checks(tripy.TRIPY_FP32, tmp_path)
    verdict = checks.check_parity(tripy.TRIPY_FP32, named_case("scaled"))
    assert verdict.status == "fail", verdict.explain()
    assert STEP_1 in verdict.localization and block in verdict.localization, verdict.localization
