"""mkdocs hook: generate docs/policies.md's tables from the registered tolerance policies.

The page holds the generated tables between ``<!-- policies:begin -->`` and
``<!-- policies:end -->``: every policy the project itself registers (the core's and its built-in
targets'), committed so that the page also reads on GitHub. ``python docs/hooks/policies.py``
rewrites them, and tests/test_docs.py fails when they differ from what the code generates. On
every ``mkdocs build``, ``on_page_markdown`` regenerates them with every registered policy,
third-party ones installed in the building environment included: the site cannot disagree with
the code.

Registered in mkdocs.yml under ``hooks:``. Needs the project importable (``pip install -e .``).
"""

from __future__ import annotations

import sys
from pathlib import Path

BEGIN, END = "<!-- policies:begin -->", "<!-- policies:end -->"
PAGE = Path(__file__).resolve().parent.parent / "policies.md"


def _load_policies() -> dict:
    """Every registered TolerancePolicy by name. Importing the targets registers their policies.

    The only place that knows where the harness keeps its registry and its policies."""
    from gpt_conformance.harness.api import registry

    errors = registry.load_entry_points()
    if errors:
        raise RuntimeError(f"the policies page needs every target's policy; failed to load: {errors}")
    from gpt_conformance.harness.core.policies import POLICIES

    return dict(POLICIES)


# Per level: (which field of the policy, what the multiplier multiplies, what floor_rel multiplies).
LEVELS = (
    ("logits", "logit_gates", "eager_fp32_err", "max|truth|"),
    ("loss", "loss_gates", "eager_fp32_err", "|truth loss|"),
    ("arithmetic", "arithmetic_gates", "same_weights_ref_err", "max|truth|"),
    ("arithmetic loss", "arithmetic_loss_gates", "same_weights_ref_err", "|truth loss|"),
    ("quality", "quality_gates", "", ""),
)


def _num(x: float) -> str:
    return f"{x:.4g}"


def bound_formula(gate, baseline: str, scale: str) -> str:
    """The bound a gate puts on its metric, written out from the Gate's fields."""
    if gate.direction == "min":
        return f"value >= {_num(gate.floor_abs)}"
    terms = []
    if gate.multiplier:
        terms.append(f"{_num(gate.multiplier)} x {baseline}")
    if gate.floor_abs:
        terms.append(_num(gate.floor_abs))
    if gate.floor_rel:
        terms.append(f"{_num(gate.floor_rel)} x {scale}")
    return "value <= " + (" + ".join(terms) if terms else "0")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def policy_markdown(policy) -> str:
    lines = [f"## `{policy.name}`", ""]
    if policy.description:
        lines += [policy.description, ""]
    lines += [
        "| level | metric | bound | min_numel | reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    for level, field, baseline, scale in LEVELS:
        for gate in getattr(policy, field, ()) or ():
            numel = str(gate.min_numel) if gate.min_numel else ""
            # Python-Markdown keeps a pipe inside a code span in its cell: the formula stays unescaped.
            lines.append(f"| {level} | `{gate.metric}` | `{bound_formula(gate, baseline, scale)}` "
                         f"| {numel} | {_cell(gate.reason)} |")
    if not policy.loss_gates:
        lines.append("| loss | | none: the loss is measured and `recorded`, not judged | | |")
    margin = getattr(policy, "greedy_margin", 0.0)
    lines += ["", f"**greedy_margin**: {_num(margin)}"
              + (" (no greedy flip is accepted)" if not margin else ""), ""]
    if policy.parity_on_init_weights_only:
        lines += ["**Truth parity (logits, loss) is judged on nanoGPT-init cases only**; on trained and rescaled "
                  "weights it is `recorded` and the arithmetic level judges (see "
                  "[What a verdict means](verdicts.md#when-a-check-is-recorded)).", ""]
    return "\n".join(lines)


def policies_markdown(policies: dict) -> str:
    return "\n".join(policy_markdown(policy) for policy in policies.values())  # registration order


def builtin_policies() -> dict:
    """The policies of the core and of the project's own targets (its own entry points), without
    any plugin's."""
    from importlib import metadata

    from gpt_conformance.harness.core.policies import POLICIES
    from gpt_conformance.harness.core.targets import ENTRY_POINT_GROUP, OWN_DISTRIBUTION

    for entry_point in metadata.distribution(OWN_DISTRIBUTION).entry_points.select(group=ENTRY_POINT_GROUP):
        entry_point.load()
    return dict(POLICIES)


def replace_generated(markdown: str, policies: dict) -> str:
    if BEGIN not in markdown:
        return markdown
    head, rest = markdown.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{policies_markdown(policies)}{END}{tail}"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if BEGIN not in markdown:
        return markdown
    return replace_generated(markdown, _load_policies())


if __name__ == "__main__":
    # --print: the generated page on stdout (what tests/test_docs.py compares); else rewrite it.
    text = replace_generated(PAGE.read_text(), builtin_policies())
    if sys.argv[1:] == ["--print"]:
        sys.stdout.write(text)
    else:
        PAGE.write_text(text)
