"""mkdocs hook: generate each model family's config fields and state-dict keys, and the table of
named cases, from the code.

docs/plugins.md holds the generated family text between ``<!-- families:begin -->`` and
``<!-- families:end -->``, docs/families.md the case table between ``<!-- cases:begin -->`` and
``<!-- cases:end -->``, so that they also read on GitHub; ``on_page_markdown`` regenerates them on
every ``mkdocs build``, and tests/test_docs.py fails when the committed text differs from what the
code generates. ``python docs/hooks/families.py`` rewrites the committed text.

Registered in mkdocs.yml under ``hooks:``. Needs the project importable (``pip install -e .``).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
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


def _config_summary(spec) -> str:
    config = spec.config
    heads = f"{config.n_head} head{'s' if config.n_head > 1 else ''}"
    heads += f" ({config.n_kv_head} kv)" if hasattr(config, "n_kv_head") else ""
    parts = [f"{config.n_layer} layers", heads, f"{config.n_embd} wide", f"vocab {config.vocab_size}"]
    if getattr(config, "bias", True) is False:
        parts.append("no bias")
    if spec.checkpoint:
        parts.append(f"trained weights (`{spec.checkpoint}`)")
    elif spec.weight_std != 0.02:
        parts.append(f"weights at std {spec.weight_std}")
    return ", ".join(parts)


def cases_markdown() -> str:
    from gpt_conformance.reference.cases import ALL_CASES

    lines = ["| case | family | model | batch x seq_len | what it is for |", "| --- | --- | --- | --- | --- |"]
    for spec in ALL_CASES:
        name = f"`{spec.name}`" + (" (slow)" if spec.slow else "")
        notes = spec.notes.replace("|", "\\|")
        lines.append(f"| {name} | {spec.family} | {_config_summary(spec)} | {spec.batch} x {spec.seq_len} | {notes} |")
    return "\n".join(lines) + "\n"


# page -> (marker name, generator) pairs.
GENERATED = {"plugins.md": (("families", families_markdown),), "families.md": (("cases", cases_markdown),)}


def replace_generated(markdown: str, page_name: str) -> str:
    for name, generate in GENERATED.get(page_name, ()):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in markdown:
            continue
        head, rest = markdown.split(begin, 1)
        _, tail = rest.split(end, 1)
        markdown = f"{head}{begin}\n{generate()}{end}{tail}"
    return markdown


def on_page_markdown(markdown: str, page, config, files) -> str:
    return replace_generated(markdown, Path(page.file.src_path).name)


if __name__ == "__main__":
    for page_name in GENERATED:
        page = DOCS / page_name
        page.write_text(replace_generated(page.read_text(), page_name))
    sys.exit(0)
