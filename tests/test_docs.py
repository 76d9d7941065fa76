"""The documentation's code and generated tables, held to the code: the target snippet of
docs/plugins.md runs as pasted, and the generated family tables are what the code generates."""

from __future__ import annotations

import importlib.util
import re

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
    page = PLUGINS_PAGE.read_text()
    assert page == hook.replace_generated(page), "docs/plugins.md is stale: run python docs/hooks/families.py"
    assert "`lm_head.weight`: tied, the same tensor as `transformer.wte.weight`" in page
    assert "`transformer.h.{i}.attn.bias`" in page.split("not in the state dict")[1]
