"""The documentation's code and generated tables, held to the code: the target snippet of
docs/plugins.md runs as pasted, and the generated family tables are what the code generates."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

from tests.runner import ROOT, run_pytest

PLUGINS_PAGE = ROOT / "docs" / "plugins.md"
SNIPPET_MARK = "<!-- snippet:target -->"


def snippet() -> str:
    """The python block that follows the snippet's marker in docs/plugins.md."""
    after = PLUGINS_PAGE.read_text().split(SNIPPET_MARK, 1)[1]
    found = re.match(r"\s*```python\n(.*?)\n```", after, re.S)
    assert found, f"no python block after {SNIPPET_MARK} in {PLUGINS_PAGE}"
    return found.group(1)


def test_the_snippet_pasted_into_a_plugin_passes_named_parity_in_both_families(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "my_backend.py").write_text(snippet())
    proc, records, outcomes = run_pytest("cases/test_parity.py", "-m", "not slow", "-p", "my_backend",
                                         "--target", "my-backend", pythonpath=(outside,),
                                         report_dir=tmp_path / "reports")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes and set(outcomes.values()) == {"passed"}, outcomes
    assert records and {r["status"] for r in records} == {"pass"}, records
    cases = {r["case"] for r in records}
    assert "seed" in cases and "nanochat-seed" in cases, cases


def _families_hook():
    spec = importlib.util.spec_from_file_location("families_hook", ROOT / "docs" / "hooks" / "families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_family_tables_are_what_the_code_generates():
    hook = _families_hook()
    for name in hook.GENERATED:
        text = (ROOT / "docs" / name).read_text()
        assert text == hook.replace_generated(text, name), f"docs/{name} is stale: run python docs/hooks/families.py"
    page = PLUGINS_PAGE.read_text()
    assert "`lm_head.weight`: tied, the same tensor as `transformer.wte.weight`" in page
    assert "`transformer.h.{i}.attn.bias`" in page.split("not in the state dict")[1]
    assert "| `scaled` | nanogpt |" in (ROOT / "docs" / "families.md").read_text()


def test_the_committed_policy_tables_are_what_the_code_generates():
    generated = subprocess.run([sys.executable, str(ROOT / "docs" / "hooks" / "policies.py"), "--print"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300, check=True).stdout
    assert (ROOT / "docs" / "policies.md").read_text() == generated, \
        "docs/policies.md is stale: run python docs/hooks/policies.py"
    assert "## `fp32`" in generated and "## `int4-wo`" in generated


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_the_documented_help_outputs_match_the_options_page():
    options = (ROOT / "docs" / "options.md").read_text()
    pytest_help = run("-m", "pytest", "--help", "-p", "no:cacheprovider")
    assert pytest_help.returncode == 0, pytest_help.stderr
    for group in ("GPT conformance harness:", "GPT conformance latency tier (marker `latency`):"):
        assert group in pytest_help.stdout, group
        assert group in options.replace("\n  ", " "), f"docs/options.md does not name the pytest --help group {group!r}"
    for option in re.findall(r"^  (--[a-z-]+)", pytest_help.stdout.split("GPT conformance harness:")[1], re.M):
        if option.startswith("--benchmark"):
            break
        assert f"`{option}" in options, f"docs/options.md does not document {option}"
    cli = run("-m", "gpt_conformance", "--help")
    assert cli.returncode == 0, cli.stderr
    commands = re.search(r"\{([a-z,]+)\}", cli.stdout).group(1).split(",")
    for command in commands:
        sub = run("-m", "gpt_conformance", command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)
        assert f"`python -m gpt_conformance {command}" in options, f"docs/options.md does not document {command}"


def test_the_documented_localize_command_runs_on_the_shipped_example(tmp_path):
    page = (ROOT / "docs" / "reading-a-failure.md").read_text()
    command = re.search(r"^\$ python (-m gpt_conformance localize .*--repro-file \S+)$", page, re.M).group(1)
    result = run(*command.split(), "--report-dir", str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr  # 1: it fails, and is localized
    assert "first divergence: h.2 (the model cut after it" in result.stdout, result.stdout
    shown = page.split(command, 1)[1]
    # Its figures are fp32 rounding errors, which differ in their last digits from CPU to CPU (the
    # page's 1.45e-06 printed 1.42e-06 on an AVX-512 machine): the command's line, figures aside.
    assert without_figures(result.stdout.splitlines()[3]) in without_figures(shown), \
        "the page's output is not what the command prints"


def without_figures(text: str) -> str:
    return re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", text)
