"""``python -m gpt_conformance`` as users meet it: one-line errors and documented exit codes, the generate
command's limit, progress line and Ctrl-C, and the precision table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from gpt_conformance.harness import cli
from gpt_conformance.harness.api import Target
from gpt_conformance.harness.checks import decode
from gpt_conformance.harness.core.targets import registry

from tests.report_records import record, write_jsonl
from tests.runner import ROOT


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python -m gpt_conformance ARGV``, in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse's own errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, text: str) -> None:
    assert len(err.splitlines()) == 1 and text in err and "Traceback" not in err, err


def test_exit_codes_are_documented(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "exit codes: 0 ok; 1 generate --compare rejected a divergence; 2 bad input;" in " ".join(out.split())


def test_empty_prompt_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_registry", lambda: pytest.fail("loaded targets before checking the prompt"))
    code, out, err = run_cli(capsys, "generate", "--prompt", "")
    assert code == cli.EXIT_USAGE and not out
    assert_one_error_line(err, "error: --prompt: prompt is empty")


@pytest.mark.parametrize("value, says", [("-1", "-1: give 1 to 1024 tokens"), ("0", "0: give 1 to 1024 tokens"),
                                         ("100000", "100000: give 1 to 1024 tokens"),
                                         ("many", "'many' is not a whole number")])
def test_max_new_tokens_out_of_range_is_a_usage_error(capsys, value, says):
    code, _, err = run_cli(capsys, "generate", "--prompt", "Beautiful", "--max-new-tokens", value)
    assert code == cli.EXIT_USAGE
    assert_one_error_line(err, f"python -m gpt_conformance generate: error: argument --max-new-tokens: {says}")


def test_argparse_errors_are_one_line(capsys):
    code, _, err = run_cli(capsys, "generate")
    assert code == cli.EXIT_USAGE
    assert_one_error_line(err, "the following arguments are required: --prompt")


def test_compare_beyond_one_context_is_refused_before_decoding(capsys, monkeypatch):
    monkeypatch.setattr(decode, "greedy_tokens", lambda *a, **k: pytest.fail("decoded before refusing"))
    code, _, err = run_cli(capsys, "generate", "--prompt", "Beautiful", "--max-new-tokens", "100", "--compare")
    assert code == cli.EXIT_USAGE
    assert_one_error_line(err, "exceeds the model's block_size 64")


def test_ctrl_c_prints_the_text_so_far_and_exits_130(capsys, monkeypatch):
    def three_tokens_then_ctrl_c(*args, **kwargs):
        yield from [1, 30, 38]  # " is" in the Zen model's characters
        raise KeyboardInterrupt

    monkeypatch.setattr(decode, "greedy_tokens", three_tokens_then_ctrl_c)
    code, out, err = run_cli(capsys, "generate", "--prompt", "Beautiful", "--max-new-tokens", "50")
    assert code == cli.EXIT_INTERRUPTED
    assert out == "Beautiful is\n"
    assert_one_error_line(err, "interrupted after 3 of 50 tokens")


class CrashingTarget(Target):
    name = "crashing"

    def prepare(self, model, config):
        def run(idx, targets=None):
            raise RuntimeError("kernel launch failed")
        return run


def test_a_crashing_target_is_one_line_and_exit_3(capsys, monkeypatch):
    monkeypatch.setattr(registry, "get", lambda name: CrashingTarget())
    code, out, err = run_cli(capsys, "generate", "--prompt", "Beautiful", "--target", "crashing")
    assert code == cli.EXIT_TARGET_ERROR and not out
    assert_one_error_line(err, "error: target crashing at token 1: RuntimeError: kernel launch failed")


def test_progress_line_shows_tokens_per_second(monkeypatch):
    class Stream:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return False

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    now = [100.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    stream = Stream()
    progress = cli.Progress(1000, stream, after_s=2.0, every_s=10.0)
    for done, at in [(10, 101.0), (50, 105.0), (60, 106.0), (200, 116.0)]:
        now[0] = at
        progress.update(done)
    progress.close()
    # Nothing in the first 2 s; then a line, and the next only 10 s later.
    assert stream.text == "generate: 50/1000 tokens, 10.0 tokens/s\ngenerate: 200/1000 tokens, 12.5 tokens/s\n"


# The generate command with each token held back 10 ms, so that 1024 tokens take at least 10 s on
# any machine: on a fast one the real model finished all 1024 in under the 2 s that the progress
# line waits for, and the test, which waits for that line, saw only the end of stderr.
# It also puts back Python's Ctrl-C handler: a process started in the background (`cmd &`, as CI
# runners may start pytest) inherits SIGINT ignored, and a terminal's Ctrl-C is what is tested.
SLOWED_GENERATE = """
import signal, sys, time
from gpt_conformance.harness import cli
from gpt_conformance.harness.checks import decode

signal.signal(signal.SIGINT, signal.default_int_handler)

unslowed = decode.greedy_tokens

def slowed(*args):
    for token in unslowed(*args):
        time.sleep(0.01)
        yield token

decode.greedy_tokens = slowed
sys.exit(cli.main(sys.argv[1:]))
"""


def test_generate_ctrl_c_in_a_real_process_is_quiet(tmp_path):
    # A long run: the progress line comes on stderr after 2 s; SIGINT then ends it with exit
    # code 130, the text so far on stdout, and no traceback.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOWED_GENERATE, "generate", "--prompt", "Beautiful is",
                             "--max-new-tokens", "1024"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline()]
        while not lines[-1].startswith("generate: ") and lines[-1] and len(lines) < 50:  # after any warnings
            lines.append(proc.stderr.readline())
        assert "/1024 tokens, " in lines[-1] and lines[-1].endswith(" tokens/s\n"), lines
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert out.startswith("Beautiful is") and len(out) > len("Beautiful is\n")
    assert "Traceback" not in err and "interrupted after" in err


# --- precision ---------------------------------------------------------------------------
def test_precision_of_a_missing_path_is_a_usage_error(capsys):
    code, out, err = run_cli(capsys, "precision", "/nonexistent")
    assert code == cli.EXIT_USAGE and not out
    assert_one_error_line(err, "error: no such record file or directory: /nonexistent")


def test_precision_without_quality_records_is_a_usage_error(capsys, tmp_path):
    path = write_jsonl(tmp_path / "records.jsonl", [record("eager", "seed", "logits")])
    code, _, err = run_cli(capsys, "precision", str(path))
    assert code == cli.EXIT_USAGE
    assert_one_error_line(err, "no quality records in")


def test_precision_table_says_what_the_docs_say(capsys, tmp_path):
    # The docs (docs/precision.md) name the columns; a status is the record's own, recorded
    # (measured, not gated) included, and an unknown one is shown, never turned into fail.
    quality = [
        record("eager-fp16", "seed", "quality", "pass", precision="fp16",
               metrics={"max_rel": 4.9e-4, "top1_agreement": 1.0, "kl_mean": 6.7e-9, "ppl_ratio": 1.001}),
        record("modelopt-int4-wo", "gpt2-124m-shape", "quality", "recorded", precision="int4-wo",
               metrics={"max_rel": 0.2, "top1_agreement": 0.56, "kl_mean": 0.011, "ppl_ratio": None}),
        record("modelopt-int4-wo", "gpt2-124m-shape", "arithmetic", "pass", precision="int4-wo"),
        record("modelopt-int8-wo", "seed", "quality", "measured-later", precision="int8-wo", metrics={}),
    ]
    code, out, _ = run_cli(capsys, "precision", str(write_jsonl(tmp_path / "records.jsonl", quality)))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split("  ")[0] == "target" and "max error / range" in header and "max_rel" not in header
    assert [h.strip() for h in header.split("  ") if h.strip()][4:] == [
        "max error / range", "top-1", "mean KL", "PPL ratio", "greedy divergence index"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["eager-fp16"][1:5] == ["seed", "-", "pass", "0.00049"]
    assert cells["modelopt-int4-wo"][1:4] == ["gpt2-124m-shape", "pass", "recorded"]
    assert cells["modelopt-int8-wo"][1:4] == ["seed", "-", "measured-later"]
    assert "fail" not in out and "None" not in out
