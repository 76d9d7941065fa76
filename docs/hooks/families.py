"""mkdocs hook: generate each model family's config fields and state-dict keys from the code.

docs/plugins.md holds the generated text between ``<!-- families:begin -->`` and
``<!-- families:end -->``, so that it also reads on GitHub; ``on_page_markdown`` regenerates it on
every ``mkdocs build``, and tests/test_docs.py fails when the committed text differs from what the
code generates. ``python docs/hooks/families.py`` rewrites the committed text.

Registered in mkdocs.yml under ``hooks:``. Needs the project importable (``pip install -e .``).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- families:begin -->", "<!-- families:end -->"
PAGE = Path(__file__).resolve().parent.parent / "plugins.md"
# A model small enough to build in a millisecond, with two blocks so the per-block keys show.
SMALL = {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 8, "vocab_size": 11}


def _small_model(family):
    fields = {f.name for f in dataclasses.fields(family.config_type)}
    config = family.config_type(**{k: v for k, v in SMALL.items() if k in fields},
                                **{family.length_field: 4})
    return family.build(config, seed=0)


def _block_pattern(name: str) -> str:
    return re.sub(r"\.h\.\d+\.", ".h.{i}.", name)


def family_markdown(family) -> str:
    lines = [f"### `{family.name}`: `{family.config_type.__name__}`", "",
             "| config field | type | default |", "| --- | --- | --- |"]
    for field in dataclasses.fields(family.config_type):
        lines.append(f"| `{field.name}` | `{field.type}` | `{field.default!r}` |")
    model = _small_model(family)
    state = model.state_dict()
    tied = dict(family.tied_weights)
    keys = list(dict.fromkeys(_block_pattern(name) for name in state))
    lines += ["", "State-dict keys (`{i}` is the block, 0 to `n_layer - 1`):", ""]
    for key in keys:
        partner = tied.get(key) or next((k for k, v in tied.items() if v == key), None)
        note = f": tied, the same tensor as `{partner}` (one tensor under both keys)" if partner else ""
        lines.append(f"- `{key}`{note}")
    persistent = set(state)
    buffers = sorted({_block_pattern(name) for name, _ in model.named_buffers() if name not in persistent})
    if buffers:
        lines += ["", "Buffers that are not in the state dict (rebuild them from the config): "
                  + ", ".join(f"`{name}`" for name in buffers) + "."]
    return "\n".join(lines) + "\n"


def families_markdown() -> str:
    from gpt_conformance.reference.families import FAMILIES

    return "\n".join(family_markdown(family) for family in FAMILIES.values())


def replace_generated(markdown: str) -> str:
    if BEGIN not in markdown:
        return markdown
    head, rest = markdown.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{families_markdown()}{END}{tail}"


def on_page_markdown(markdown: str, page, config, files) -> str:
    return replace_generated(markdown)


if __name__ == "__main__":
    PAGE.write_text(replace_generated(PAGE.read_text()))
    sys.exit(0)
