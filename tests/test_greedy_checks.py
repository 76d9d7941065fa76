"""The greedy-text check end to end: it catches a planted bug, passes correct targets (dynamic and
static-shape), records what it found, and runs GPT-2-style checkpoints from a local directory."""

import json

import pytest
import torch
from gpt_conformance.harness.api import Capabilities, Target, TargetRegistry
from gpt_conformance.harness.checks.decode import reference_greedy
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.errors import CheckError, UnsupportedHere
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.reference.checkpoint import from_pretrained
from gpt_conformance.reference.tokenizers import gpt2_tokenizer
from gpt_conformance.reference.train import load_zen_model
from gpt_conformance.targets.eager import EagerTarget

from tests.planted_greedy import SwappedEmbeddingRows

PROMPT, EXPECTED = "Beautiful is", " better than ugly."


@pytest.fixture
def session(tmp_path):
    writer = RecordWriter(tmp_path / "records.jsonl", run_id="test")
    return ConformanceSession(TargetRegistry(), writer, Options(report_dir=tmp_path))


def records(session):
    return [json.loads(line) for line in session.writer.path.read_text().splitlines()]


@pytest.fixture(scope="module")
def zen():
    model, tokenizer = load_zen_model()
    model64, _ = load_zen_model(dtype=torch.float64)
    return model, tokenizer, reference_greedy(model64, tokenizer.encode(PROMPT), len(EXPECTED))


class StaticEager(Target):
    """A Neuron-style target on CPU: the reference, but only for one (batch, seq_len) shape."""

    precision = "fp32"

    def __init__(self, batch, seq_len):
        self.name = f"fake-static-{batch}x{seq_len}"
        self.capabilities = Capabilities(dynamic_shapes=False, static_shapes=((batch, seq_len),))
        self.shapes_seen = set()

    def prepare(self, model, config):
        def run(idx, targets=None):
            assert (idx.size(0), idx.size(1)) in self.capabilities.static_shapes, f"wrong shape {tuple(idx.shape)}"
            self.shapes_seen.add(tuple(idx.shape))
            return model(idx, targets, full_logits=True)
        return run


def test_planted_swapped_embedding_fails_the_zen_greedy_check(session, zen):
    model, tokenizer, reference = zen
    verdict = session.check_greedy(SwappedEmbeddingRows(), model, reference, "zen", tokenizer.decode)
    assert not verdict.passed and "REJECTED" in verdict.message
    greedy = records(session)[-1]["greedy"]
    assert greedy["accepted"] is False and greedy["first_divergence"] == 0
    assert greedy["margin_at_first_divergence"] > 1.0  # the reference was nowhere near a tie
    assert greedy["reference_text"] == EXPECTED and greedy["target_text"] != EXPECTED


@pytest.mark.parametrize("correct", [EagerTarget(), StaticEager(2, 64), StaticEager(1, 40)], ids=lambda t: t.name)
def test_correct_targets_pass_the_zen_greedy_check(session, zen, correct):
    model, tokenizer, reference = zen
    target = correct
    verdict = session.check_greedy(target, model, reference, "zen", tokenizer.decode)
    assert verdict.passed, verdict.explain()
    record = records(session)[-1]
    assert record["status"] == "pass" and record["check"] == "greedy"
    assert record["greedy"]["tokens_checked"] == len(EXPECTED) and record["greedy"]["first_divergence"] is None
    assert record["greedy"]["target_text"] == EXPECTED
    if isinstance(target, StaticEager):
        assert target.shapes_seen == set(target.capabilities.static_shapes)


def test_static_window_too_short_for_the_check_skips_with_the_reason(session, zen):
    model, tokenizer, reference = zen
    with pytest.raises(UnsupportedHere, match="feeds 29 tokens; the target takes at most 16"):
        session.check_greedy(StaticEager(1, 16), model, reference, "zen", tokenizer.decode)
    assert records(session)[-1]["status"] == "skip"


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny random Hugging Face GPT-2 with GPT-2's real vocabulary, saved like a real one."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random init gives logits of ~0.1; widen them so greedy steps are decided
        model.lm_head.weight.mul_(20.0)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def test_gpt2_greedy_from_a_local_checkpoint(session, tiny_gpt2_dir):
    path, hf = tiny_gpt2_dir
    tokenizer = gpt2_tokenizer()
    prompt = tokenizer.encode("What is the answer to life, the universe, and everything?")
    reference = reference_greedy(from_pretrained(path, dtype=torch.float64), prompt, 12)
    # An independent oracle for the loader and the reference decode: Hugging Face's own greedy
    # generate, in float64 too.
    hf_tokens = hf.double().generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                     pad_token_id=tokenizer.eot_token)[0, len(prompt):].tolist()
    assert reference.tokens == hf_tokens
    assert min(reference.margin(i) for i in range(12)) > 1e-3
    verdict = session.check_greedy(EagerTarget(), from_pretrained(path), reference, "gpt2", tokenizer.decode)
    assert verdict.passed, verdict.explain()
    assert records(session)[-1]["greedy"]["reference_text"] == tokenizer.decode(hf_tokens)


def test_generate_command_on_the_zen_model(capsys):
    from gpt_conformance.harness.cli import main

    assert main(["generate", "--target", "eager", "--prompt", PROMPT, "--max-new-tokens", str(len(EXPECTED)),
                 "--compare"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(PROMPT + EXPECTED + "\n") and "0 divergence(s)" in out
    assert main(["generate", "--prompt", "Beautiful é"]) == 2
    assert "character 'é' at position 10" in capsys.readouterr().err


def test_generate_command_with_a_gpt2_dir(capsys, tiny_gpt2_dir):
    from gpt_conformance.harness.cli import main

    path, _ = tiny_gpt2_dir
    assert main(["generate", "--gpt2-dir", str(path), "--prompt", "Hello, my name is", "--max-new-tokens", "6",
                 "--compare"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Hello, my name is") and "6 greedy tokens checked" in out


@pytest.mark.slow
def test_gpt2_cases_follow_the_environment_variable(tiny_gpt2_dir, tmp_path):
    import os
    import subprocess
    import sys

    path, _ = tiny_gpt2_dir
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "cases/test_greedy.py", "-k", "gpt2",
               "--target", "eager", "--slow", f"--report-dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k != "GPT_CONFORMANCE_GPT2_DIR"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    without = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    assert without.returncode == 0 and "4 skipped" in without.stdout
    assert "--gpt2-dir=PATH or $GPT_CONFORMANCE_GPT2_DIR" in without.stdout
    with_dir = subprocess.run(command, env={**env, "GPT_CONFORMANCE_GPT2_DIR": str(path)}, cwd=root,
                              capture_output=True, text=True, check=False)
    assert with_dir.returncode == 0 and "4 passed" in with_dir.stdout, with_dir.stdout[-3000:]


class NaNAtStep(Target):
    """Returns NaN logits once the sequence reaches a given length: must never pass."""

    name = "nan-at-step"
    precision = "fp32"

    def prepare(self, model, config):
        def run(idx, targets=None):
            logits, loss = model(idx, targets, full_logits=True)
            return (logits * float("nan"), loss) if idx.size(1) >= 15 else (logits, loss)
        return run


def test_nan_logits_are_an_error_not_a_token(session, zen):
    model, tokenizer, reference = zen
    with pytest.raises(CheckError, match="non-finite logit"):
        session.check_greedy(NaNAtStep(), model, reference, "zen", tokenizer.decode)
    assert records(session)[-1]["status"] == "error"
