"""The Neuron pipeline (targets/neuron.py, targets/static_shapes.py) checked on CPU.

``torchscript-trace`` runs the same NeuronStep, buckets, padding, artifact cache and decode loop
as the Neuron targets with ``torch.jit.trace`` as the compiler; a fake ``torch_neuronx`` stands in
for the Neuron compiler seam. Logits, loss and greedy parity of ``torchscript-trace`` come from
``cases/`` (it is a registered CPU target); this file covers what those cases cannot see.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from gpt_conformance.harness.api import TargetRegistry
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts
from gpt_conformance.harness.checks.decode import StaticWindow, choose_window, greedy_decode
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.probes import probe_package
from gpt_conformance.harness.core.records import RecordWriter, read_records
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.decode import ReferenceDecoder, pad_ragged
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.reference.train import load_zen_model
from gpt_conformance.targets import neuron
from gpt_conformance.targets.neuron import (
    JitTraceCompiler,
    NeuronStep,
    StaticShapeTarget,
    StepTraceError,
    assign_worker_cores,
    trace_checked,
    worker_visible_cores,
)
from gpt_conformance.targets.static_shapes import (
    ArtifactCache,
    ArtifactCacheWarning,
    BucketError,
    parse_buckets,
    select_bucket,
)

from tests.planted_neuron import planted_targets
from tests.runner import run_pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, n_embd=8)
# Ops that would mean a token-value check (or any value-dependent branch) was traced into the graph.
VALUE_CHECK_OPS = {"aten::min", "aten::max", "aten::lt", "aten::ge", "aten::gt", "aten::any", "aten::all",
                   "aten::item", "aten::Bool", "prim::RaiseException", "aten::nonzero"}


def tiny_model(seed: int = 0, config: GPTConfig = TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def cpu_target(cache_dir: Path, compiler=None, buckets=((1, 8), (4, 8), (2, 16))) -> StaticShapeTarget:
    return StaticShapeTarget("torchscript-trace", "fp32", "test", compiler or JitTraceCompiler(), device="cpu",
                             buckets=buckets, cache_dir=cache_dir)


class CountingCompiler(JitTraceCompiler):
    def __init__(self, allowed: bool = True):
        self.calls = 0
        self.allowed = allowed

    def trace(self, step, example, workdir):
        assert self.allowed, "recompiled although a valid artifact was cached"
        self.calls += 1
        return super().trace(step, example, workdir)


class TestStep:
    @pytest.mark.parametrize("config", [
        TINY,
        GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=8, bias=False, gelu="tanh", attn_impl="manual"),
    ], ids=["sdpa", "manual-nobias-tanh"])
    def test_step_computes_the_reference_forward_bit_for_bit(self, config):
        model = tiny_model(config=config)
        idx = torch.randint(0, config.vocab_size, (3, 16))
        with torch.no_grad():
            assert torch.equal(NeuronStep(model, 16)(idx), model(idx, full_logits=True)[0])

    def test_trace_has_no_tracer_warnings_and_no_value_checks(self, tmp_path):
        step = NeuronStep(tiny_model(), 8).eval()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traced, kept = trace_checked(JitTraceCompiler(), step, (torch.zeros(4, 8, dtype=torch.long),), tmp_path)
        assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)] and kept == []
        ops = set(re.findall(r"(aten::\w+|prim::\w+)", str(traced.inlined_graph)))
        assert "aten::linear" in ops and "aten::embedding" in ops, ops  # the graph is really there
        assert not ops & VALUE_CHECK_OPS, ops & VALUE_CHECK_OPS

    def test_tracing_the_reference_forward_itself_is_caught(self, tmp_path):
        """GPT.forward's input checks compare traced sizes: the vetting must flag that, not hide it."""

        class WholeForward(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, idx):
                return self.model(idx, full_logits=True)[0]

        with pytest.raises(StepTraceError, match=r"reference/model\.py"):
            trace_checked(JitTraceCompiler(), WholeForward(tiny_model()), (torch.zeros(2, 8, dtype=torch.long),), tmp_path)

    def test_step_longer_than_block_size_is_refused(self):
        with pytest.raises(ValueError, match="exceeds the model's block_size 16"):
            NeuronStep(tiny_model(), 32)


class TestBuckets:
    BUCKETS = ((1, 32), (8, 32), (64, 32), (1, 128), (2, 128))

    @pytest.mark.parametrize("shape, block_size, expected", [
        ((1, 5), 1024, (1, 32)),
        ((2, 5), 1024, (8, 32)),
        ((8, 1), 1024, (8, 32)),
        ((9, 32), 1024, (64, 32)),
        ((1, 33), 1024, (1, 128)),
        ((2, 33), 1024, (2, 128)),
        ((2, 20), 24, (2, 24)),  # buckets are cut to the model's block_size
        ((1, 10), 16, (1, 16)),
    ])
    def test_smallest_fitting_bucket(self, shape, block_size, expected):
        assert select_bucket(self.BUCKETS, *shape, block_size) == expected

    @pytest.mark.parametrize("shape", [(1, 129), (65, 1), (3, 128)])
    def test_input_fitting_no_bucket_names_the_largest(self, shape):
        with pytest.raises(BucketError, match=r"fits no shape bucket: the largest bucket is 2x128"):
            select_bucket(self.BUCKETS, *shape, 1024)

    def test_parse_buckets(self):
        assert parse_buckets("1x32, 8X64") == ((1, 32), (8, 64))
        with pytest.raises(ValueError, match="'8by32' is not BATCHxSEQ_LEN"):
            parse_buckets("1x32,8by32")
        with pytest.raises(ValueError, match="must be >= 1"):
            parse_buckets("0x32")

    def test_over_long_input_is_rejected_by_the_target(self, tmp_path):
        model = tiny_model(config=GPTConfig(block_size=64, vocab_size=11, n_layer=1, n_head=2, n_embd=8))
        run = cpu_target(tmp_path).prepare(model, model.config)
        with pytest.raises(BucketError, match=r"batch 1, seq_len 40 fits no shape bucket: the largest bucket is 2x16"):
            run(torch.zeros(1, 40, dtype=torch.long))
        with pytest.raises(BucketError, match=r"batch 5, seq_len 8"):
            run(torch.zeros(5, 8, dtype=torch.long))

    def test_padded_rows_and_positions_are_cut_and_the_loss_uses_real_positions_only(self, tmp_path):
        model = tiny_model()
        run = cpu_target(tmp_path).prepare(model, model.config)
        idx = torch.randint(0, TINY.vocab_size, (3, 5))  # padded to the 4x8 bucket
        targets = torch.randint(0, TINY.vocab_size, (3, 5))
        targets[0, 0] = -1  # ignored, as in the reference
        logits, loss = run(idx, targets)
        with torch.no_grad():
            ref_logits, ref_loss = model(idx, targets)
        assert logits.shape == (3, 5, TINY.vocab_size)
        # torch.testing's float32 defaults (rtol 1.3e-6, atol 1e-5): the padded graph multiplies
        # different shapes, so summation order may differ; measured max |diff| <= 1.5e-8, loss equal.
        # (tests/planted_neuron.py's loss-over-pads target shows a loss over pads is caught.)
        torch.testing.assert_close(logits, ref_logits)
        torch.testing.assert_close(loss, ref_loss)

    def test_token_ids_are_validated_on_the_host(self, tmp_path):
        """The compiled graph checks nothing (an XLA gather clamps an out-of-range id)."""
        run = cpu_target(tmp_path).prepare(tiny_model(), TINY)
        with pytest.raises(ValueError, match=r"token id 11 outside \[0, vocab_size=11\)"):
            run(torch.full((1, 8), 11))


def test_greedy_decode_crops_from_the_left_once_the_bucket_is_full(tmp_path):
    """Zen greedy through one 1x8 bucket: 30 tokens fed, so the window is cropped from the left;
    the compiled graph must pick the same tokens as the eager model fed the same windows."""
    model, tokenizer = load_zen_model()
    target = cpu_target(tmp_path, buckets=((1, 8),))
    run = target.prepare(model, model.config)
    block = model.config.block_size
    window = choose_window(target.capabilities, 30, block)
    assert window == StaticWindow(1, 8)
    prompt = tokenizer.encode("Beautiful is")
    got = greedy_decode(lambda idx: run(idx)[0], prompt, 18, block, window)
    with torch.no_grad():
        want = greedy_decode(lambda idx: model(idx, full_logits=True)[0], prompt, 18, block, window)
    assert got == want and target.stats.per_bucket == {"1x8": {"hit": 0, "miss": 1, "rebuilt": 0}}


def judge_in_session(target: StaticShapeTarget, report_dir: Path, case: str, check: str = "logits"):
    """Judge one named case in a fresh session, as a pytest run does: (verdict, its record)."""
    registry = TargetRegistry()
    registry.register(target)
    session = ConformanceSession(registry, RecordWriter(report_dir / "records.jsonl", "test"),
                                 Options(report_dir=report_dir))
    verdict = session.check_named_parity(target, named_case(case), check)
    return verdict, read_records([report_dir / "records.jsonl"])[-1]


def parity_in_session(target: StaticShapeTarget, report_dir: Path, case: str = "no-bias") -> dict:
    verdict, record = judge_in_session(target, report_dir, case)
    assert verdict.passed, verdict.explain()
    return record


@pytest.mark.parametrize("name, check", [("planted-left-padding", "logits"), ("planted-loss-over-pads", "loss")])
def test_planted_padding_bugs_fail_where_inputs_are_padded(tmp_path, name, check):
    """``one-token`` (8x1) is padded to 8x32 and must fail; ``seed`` fills its 64x32 bucket
    exactly, so the same target passes there: the failure is the padding bug, nothing else."""
    (target,) = [t for t in planted_targets(cache_dir=tmp_path / "cache") if t.name == name]
    padded, _ = judge_in_session(target, tmp_path / "padded", "one-token", check)
    assert padded.status == "fail", padded.explain()
    exact, _ = judge_in_session(target, tmp_path / "exact", "seed", check)
    assert exact.passed, exact.explain()


def test_planted_cache_key_without_weights_is_caught(tmp_path):
    """Two models, one config, one bucket: with the weights left out of the key the second model
    silently runs the first one's graph, and the parity verdict fails; the real key passes."""
    (planted,) = [t for t in planted_targets(cache_dir=tmp_path) if t.name == "planted-weightless-cache-key"]
    first, second = tiny_model(0), tiny_model(1)
    idx = torch.randint(0, TINY.vocab_size, (4, 8))
    with torch.no_grad():
        truth = Truth(copy.deepcopy(second).double()(idx, full_logits=True)[0], None,
                      second(idx, full_logits=True)[0], None)
    for target, should_pass in ((planted, False), (cpu_target(tmp_path), True)):
        target.prepare(first, first.config)(idx)
        logits, _ = target.prepare(second, second.config)(idx)
        verdict, _ = parity_verdicts(target, truth, logits, None)
        assert verdict.passed is should_pass, (target.name, verdict.explain())


# --- the decode path: a context-encoding graph and a token-generation graph -----------------------

STEP_TOKENS = ([3, 4, 5], [6, 7, 8], [1, 1, 1], [2, 9, 10])


def decode_logits(decoder, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The prefill's logits and those of the four steps of STEP_TOKENS, side by side on dim 1."""
    logits, state = decoder.prefill(idx, lengths)
    calls = [logits]
    for tokens in STEP_TOKENS:
        logits, state = decoder.step(state, torch.tensor(tokens)[:, None])
        calls.append(logits)
    return torch.cat(calls, dim=1)


def test_decode_compiles_one_graph_per_phase_and_bucket_and_decodes_as_the_reference(tmp_path):
    """NxDI's pair over a static cache: a ragged prompt batch of 3 rows (bucket 4x8) and four steps
    compile one context-encoding and one token-generation graph, which every step reuses, cached
    on disk (a second runner compiles nothing), and decode what the reference decoder decodes:
    within 8 fp32 ulps of the logit range, the bucket's padded shapes reordering sums (measured
    1.5e-8 on logits of about 1)."""
    model, compiler = tiny_model(), CountingCompiler()
    runner = cpu_target(tmp_path, compiler).prepare(model, model.config)
    idx, lengths = pad_ragged([torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8]), torch.tensor([9, 10, 1, 2])],
                              "right")
    ours, reference = decode_logits(runner, idx, lengths), decode_logits(ReferenceDecoder(model), idx, lengths)
    ulps = 8 * torch.finfo(torch.float32).eps * float(reference.abs().max())
    torch.testing.assert_close(ours, reference, rtol=0, atol=ulps)
    assert set(runner.decode_graphs) == {("context", (4, 8)), ("token", (4, 1))} and compiler.calls == 2
    again = cpu_target(tmp_path, CountingCompiler(allowed=False)).prepare(model, model.config)
    assert torch.equal(decode_logits(again, idx, lengths), ours)


def test_decode_step_beyond_every_bucket_batch_is_refused(tmp_path):
    runner = cpu_target(tmp_path).prepare(tiny_model(), TINY)
    with pytest.raises(BucketError, match="a decode step of batch 5 fits no shape bucket: the largest batch is 4"):
        runner.decoder.run_step(torch.zeros(5, 1, dtype=torch.long), None, None, None, None)


def test_planted_left_padding_breaks_the_context_encoding_graph_and_the_decode_checks_say_so(tmp_path):
    """The planted pipeline pads every call up to its bucket on the left, its prefill too: the
    prompt lands in the wrong slots, and decode parity fails at the prefill on a prompt shorter
    than its bucket (``seed``: 16 tokens in a 2x32 bucket); the real pipeline passes."""
    run = run_pytest("-p", "tests.planted_neuron", "cases/test_decode_path.py", "-k", "test_decode_parity and seed",
                     "--target", "torchscript-trace", "--target", "planted-left-padding", report_dir=tmp_path / "r")
    verdicts = {r["target"]: r for r in run.records if r["check"] == "decode" and r["case"] == "seed"}
    assert verdicts["torchscript-trace"]["status"] == "pass", verdicts["torchscript-trace"]["message"]
    planted = verdicts["planted-left-padding"]
    assert planted["status"] == "fail" and "first diverges at the prefill" in planted["decode"]["first_diverging"]


class TestArtifactCache:
    def test_second_run_loads_without_recompiling_and_the_record_says_so(self, tmp_path):
        cache = tmp_path / "cache"
        first = parity_in_session(cpu_target(cache, CountingCompiler(), neuron.DEFAULT_BUCKETS), tmp_path / "r1")
        env = first["target_environment"]
        assert env["cache"]["per_bucket"] == {"8x32": {"hit": 0, "miss": 1, "rebuilt": 0}}
        assert env["cache"]["compiles"] == 1 and env["cache_dir"] == str(cache) and env["compiler"] == "torch.jit.trace"
        second = parity_in_session(cpu_target(cache, CountingCompiler(allowed=False), neuron.DEFAULT_BUCKETS), tmp_path / "r2")
        env = second["target_environment"]["cache"]
        assert env["per_bucket"] == {"8x32": {"hit": 1, "miss": 0, "rebuilt": 0}} and env["compiles"] == 0
        assert env["last"]["status"] == "hit" and Path(env["last"]["path"]).exists()

    @pytest.mark.parametrize("corrupt, reason", [
        (lambda pt, js: pt.write_bytes(b"not a torchscript archive"), "sha256 .* \\(corrupt\\)"),
        (lambda pt, js: pt.write_bytes(pt.read_bytes()[:-100]), "sha256 .* \\(corrupt\\)"),
        (lambda pt, js: pt.unlink(), "missing"),
        (lambda pt, js: js.write_text("{truncated"), "unreadable"),
        (lambda pt, js: js.write_text(json.dumps({**json.loads(js.read_text()), "key": "0" * 64})), "mismatched"),
        (lambda pt, js: (pt.write_bytes(b"garbage"), js.write_text(json.dumps(
            {**json.loads(js.read_text()), "artifact_sha256": hashlib.sha256(b"garbage").hexdigest()}))),
         r"torch\.jit\.load"),
    ], ids=["garbage", "truncated", "deleted", "sidecar-not-json", "sidecar-key", "valid-sha-of-garbage"])
    def test_corrupt_artifact_is_reported_and_rebuilt(self, tmp_path, corrupt, reason):
        cache = tmp_path / "cache"
        model = tiny_model()
        idx = torch.randint(0, TINY.vocab_size, (4, 8))
        expected = cpu_target(cache).prepare(model, model.config)(idx)[0]
        (pt,) = cache.glob("*.pt")
        corrupt(pt, pt.with_suffix(".json"))
        target = cpu_target(cache, CountingCompiler())
        with pytest.warns(ArtifactCacheWarning, match=reason):
            logits = target.prepare(model, model.config)(idx)[0]
        assert torch.equal(logits, expected)
        assert target.stats.per_bucket == {"4x8": {"hit": 0, "miss": 0, "rebuilt": 1}}
        recorded = target.environment()["cache"]  # what every record of this target carries
        assert recorded["last"]["status"] == "rebuilt" and re.search(reason, recorded["last"]["reason"])
        again = cpu_target(cache, CountingCompiler(allowed=False))
        assert torch.equal(again.prepare(model, model.config)(idx)[0], expected)  # the rebuilt artifact is good
        assert again.stats.per_bucket["4x8"]["hit"] == 1

    def test_models_with_other_weights_do_not_collide(self, tmp_path):
        idx = torch.randint(0, TINY.vocab_size, (1, 8))
        target = cpu_target(tmp_path)
        for seed in (0, 1):
            model = tiny_model(seed)
            logits, _ = target.prepare(model, model.config)(idx)
            assert torch.equal(logits, model(idx, full_logits=True)[0])
        assert len(list(tmp_path.glob("*.pt"))) == 2 and target.stats.per_bucket["1x8"]["miss"] == 2

    def test_cache_is_bounded_least_recently_used_first(self, tmp_path):
        target = StaticShapeTarget("torchscript-trace", "fp32", "test", JitTraceCompiler(), device="cpu",
                                   buckets=((1, 8),), cache_dir=tmp_path, cache_max_mb=0)
        for seed in (0, 1):
            model = tiny_model(seed)
            target.prepare(model, model.config)(torch.zeros(1, 8, dtype=torch.long))
        assert len(list(tmp_path.glob("*.pt"))) == 1  # only the newest survives a 0 MB bound

    def test_default_cache_dir_is_under_the_user_cache(self, monkeypatch, tmp_path):
        monkeypatch.delenv(neuron.CACHE_ENV, raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert neuron.default_cache_dir() == tmp_path / "gpt-conformance" / "neuron"
        monkeypatch.setenv(neuron.CACHE_ENV, str(tmp_path / "elsewhere"))
        assert cpu_target(None).cache_dir == tmp_path / "elsewhere"


def fake_torch_neuronx(calls: list) -> types.ModuleType:
    """Stands in for the compiler seam: records the call and traces with torch.jit.trace."""

    def trace(*args, **kwargs):
        calls.append((args, dict(kwargs), Path(kwargs["compiler_workdir"]).is_dir()))
        return torch.jit.trace(args[0], kwargs["example_inputs"], check_trace=False)

    module = types.ModuleType("torch_neuronx")
    module.trace = trace
    return module


class TestNeuronSeam:
    @pytest.mark.parametrize("name, args", [
        ("neuron", ["--auto-cast", "none"]),
        ("neuron-bf16", ["--auto-cast", "all", "--auto-cast-type", "bf16"]),
    ])
    def test_torch_neuronx_trace_gets_keywords_and_pinned_precision(self, monkeypatch, tmp_path, name, args):
        calls: list = []
        monkeypatch.setitem(sys.modules, "torch_neuronx", fake_torch_neuronx(calls))
        monkeypatch.setenv(neuron.VISIBLE_CORES_ENV, "0")  # keeps os.environ as it was under xdist too
        monkeypatch.delenv(neuron.NEURON_CC_FLAGS_ENV, raising=False)
        monkeypatch.setenv(neuron.CACHE_ENV, str(tmp_path))
        target = next(t for t in neuron.build_targets() if t.name == name)
        model = tiny_model()
        idx = torch.randint(0, TINY.vocab_size, (2, 7))
        logits, _ = target.prepare(model, model.config)(idx)
        torch.testing.assert_close(logits, model(idx, full_logits=True)[0])  # padded 2x7 -> 2x16: fp32 defaults
        ((positional, kwargs, workdir_existed),) = calls
        assert len(positional) == 1 and isinstance(positional[0], NeuronStep)
        assert set(kwargs) == {"example_inputs", "compiler_args", "compiler_workdir"}
        assert kwargs["compiler_args"] == args and workdir_existed
        assert not Path(kwargs["compiler_workdir"]).exists()  # removed after a successful compile
        assert kwargs["example_inputs"][0].shape == (2, 16)  # the 2x128 bucket cut to block_size 16
        env = target.environment()
        assert env["compiler"] == "torch_neuronx.trace" and env["compiler_args"] == args
        assert {"torch", "torch-neuronx", "neuronx-cc"} <= set(env["versions"])
        (sidecar,) = tmp_path.glob("*.json")
        assert json.loads(sidecar.read_text())["fields"]["compiler_args"] == args

        # A second run loads the artifact, after importing torch_neuronx (its ops must be registered).
        events: list[str] = []
        real_import, real_load = neuron.import_torch_neuronx, ArtifactCache.load
        monkeypatch.setattr(neuron, "import_torch_neuronx", lambda: events.append("import") or real_import())
        monkeypatch.setattr(ArtifactCache, "load", lambda *a: events.append("load") or real_load(*a))
        again = next(t for t in neuron.build_targets() if t.name == name)
        assert torch.equal(again.prepare(model, model.config)(idx)[0], logits) and len(calls) == 1
        assert events == ["import", "load"] and again.stats.per_bucket == {"2x16": {"hit": 1, "miss": 0, "rebuilt": 0}}

    def test_neuron_cc_flags_overriding_the_precision_are_refused(self, monkeypatch):
        monkeypatch.setenv(neuron.NEURON_CC_FLAGS_ENV, "-O1 --auto-cast=matmult")
        target = next(t for t in neuron.build_targets() if t.name == "neuron")
        with pytest.raises(ValueError, match="NEURON_CC_FLAGS sets \\['--auto-cast=matmult'\\]"):
            target.prepare(tiny_model(), TINY)

    @pytest.mark.parametrize("worker, per_worker, expected", [
        ("gw0", 1, "0"), ("gw3", 1, "3"), ("gw1", 2, "2-3"), ("gw2", 4, "8-11"), (None, 1, None), ("main", 1, None),
    ])
    def test_one_core_range_per_xdist_worker(self, worker, per_worker, expected):
        assert worker_visible_cores(worker, per_worker) == expected

    def test_worker_cores_are_set_once_and_a_user_setting_wins(self):
        env = {"PYTEST_XDIST_WORKER": "gw2", neuron.CORES_PER_WORKER_ENV: "2"}
        assert assign_worker_cores(env) == "4-5" and env[neuron.VISIBLE_CORES_ENV] == "4-5"
        user = {"PYTEST_XDIST_WORKER": "gw2", neuron.VISIBLE_CORES_ENV: "7"}
        assert assign_worker_cores(user) == "7"


PLACEHOLDER = 'raise ImportError("WRONG PACKAGE. Please install the package from Neuron Repository")\n'


@pytest.fixture
def placeholder_path(tmp_path) -> Path:
    """A directory holding a package shaped like PyPI's torch-neuronx placeholder, which also
    appends the stack that imported it to ``imported-by.txt`` in ``tmp_path``."""
    package = tmp_path / "site" / "torch_neuronx"
    package.mkdir(parents=True)
    stack_file = tmp_path / "imported-by.txt"
    (package / "__init__.py").write_text(
        f"import traceback\nopen({str(stack_file)!r}, 'a').write('\\x1e' + ''.join(traceback.format_stack()))\n"
        + PLACEHOLDER)
    return package.parent


def test_probe_names_the_placeholder_and_the_missing_device(monkeypatch, placeholder_path):
    monkeypatch.syspath_prepend(str(placeholder_path))
    monkeypatch.setenv(neuron.VISIBLE_CORES_ENV, "0")  # keeps os.environ as it was under xdist too
    monkeypatch.setattr("gpt_conformance.harness.core.probes.glob.glob", lambda pattern: [])
    probe_package.cache_clear()
    try:
        reason = neuron.probe_neuron().reason
        assert "no Neuron device: /dev/neuron* does not exist" in reason
        assert "package 'torch_neuronx' is PyPI's placeholder, not the real one: WRONG PACKAGE" in reason
        monkeypatch.setattr("gpt_conformance.harness.core.probes.glob.glob", lambda pattern: ["/dev/neuron0"])
        assert neuron.probe_neuron().reason.startswith("package 'torch_neuronx' is PyPI's placeholder")
    finally:
        probe_package.cache_clear()


def test_trn1_tier_without_neuron_skips_everything_with_the_reason_and_exits_0(tmp_path, placeholder_path):
    """``pytest -m trn1`` as a user runs it, with PyPI's placeholder installed: every test skips,
    the reason names both problems, the exit code is 0, and torch_neuronx is first imported by a
    probe when a test is set up, never while collecting."""
    if neuron.probe_neuron_device():
        pytest.skip("this machine has a Neuron device; the tier runs for real here")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(placeholder_path), str(ROOT)]),
           neuron.CACHE_ENV: str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-m", "trn1", f"--rootdir={ROOT}",
           f"--report-dir={tmp_path / 'reports'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert "skipped" in last and "passed" not in last and "failed" not in last, last
    assert "neuron-bf16: no Neuron device: /dev/neuron* does not exist" in proc.stdout
    assert "PyPI's placeholder, not the real one: WRONG PACKAGE" in proc.stdout
    imports = (tmp_path / "imported-by.txt").read_text().split("\x1e")[1:]
    assert imports and all("pytest_runtest_setup" in stack for stack in imports), imports


@pytest.mark.trn1
@pytest.mark.parametrize("name", ["neuron", "neuron-bf16"])
def test_neuron_artifact_reloads_on_device(tmp_path, name):
    """On Trainium: compile once, then a fresh target loads the saved NEFF and computes the same logits."""
    availability = neuron.probe_neuron()
    if not availability:
        pytest.skip(f"{name}: {availability.reason}")

    def fresh():
        target = next(t for t in neuron.build_targets() if t.name == name)
        return StaticShapeTarget(name, target.precision, "test", target.compiler, "neuron",
                                 buckets=((1, 8),), cache_dir=tmp_path)

    model = tiny_model()
    idx = torch.randint(0, TINY.vocab_size, (1, 8))
    first = fresh()
    logits, _ = first.prepare(model, model.config)(idx)
    second = fresh()
    again, _ = second.prepare(model, model.config)(idx)
    assert first.stats.per_bucket["1x8"]["miss"] == 1 and second.stats.per_bucket["1x8"]["hit"] == 1
    assert torch.equal(logits, again)
