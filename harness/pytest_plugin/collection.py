"""Pytest glue: which targets a test is parametrized over, decided before its items are made.

Two filters keep collection to the tests that can run, instead of making items that then skip
or are deselected:

- **What applies.** A case declares the targets it applies to with ``applies_to(predicate)``
  (``gpt_conformance.harness.core.targets``); a target the predicate rejects gets no item, as ONNX's
  backend test runner generates only the tests of an op a backend supports. A case with no
  declaration applies to every target.
- **Unselected tiers.** With ``-m EXPR``, a target whose tier marker (``cpu``, ``gpu``, ``trn1``)
  makes ``EXPR`` false gets no item: ``pytest -m cpu`` does not build the gpu and trn1 targets'
  items only to deselect them. A target is dropped only when ``EXPR`` is false for every value of
  the other markers it names (a test or one of its parameters may carry those), so the filter
  never removes an item that ``-m`` would have kept. A tier marker comes from the target only.
"""

from __future__ import annotations

import itertools
import re

import pytest

# pytest's own -m grammar: a private module, present in every pytest pyproject allows (>= 8.0)
from _pytest.mark.expression import Expression
from gpt_conformance.harness.core.targets import DEVICE_MARKERS, Target, applies_to_of

TIER_MARKERS = frozenset(DEVICE_MARKERS.values())
# A marker name called with keyword arguments, as in -m "slow(reason=1)"; "not (" is grouping.
KEYWORD_ARGUMENTS = re.compile(r"\b(?!(?:and|or|not)\b)[\w.+-]+\s*\(")
# Past this many non-tier marker names in -m, every assignment would be too many to try: no filter.
MAX_FREE_NAMES = 10



def tier_may_be_selected(markexpr: str, target: Target) -> bool:
    """Whether ``-m markexpr`` can select some test of ``target``: false only when the expression
    is false for the target's tier marker whatever the other markers it names are."""
    if not markexpr or KEYWORD_ARGUMENTS.search(markexpr):
        return True  # no -m, or marker keyword arguments (name(key=value)): leave it to pytest
    try:
        expression = Expression.compile(markexpr)
    except Exception:  # noqa: BLE001  (a bad -m is pytest's error to report, at deselection)
        return True
    names = set(re.findall(r"[\w.+-]+", markexpr)) - {"and", "or", "not"}
    free = sorted(names - TIER_MARKERS)
    if len(free) > MAX_FREE_NAMES:
        return True
    tiers = {name: name == target.marker for name in TIER_MARKERS}
    for values in itertools.product((False, True), repeat=len(free)):
        known = {**tiers, **dict(zip(free, values, strict=True))}
        if expression.evaluate(lambda name, known=known, **_kwargs: known.get(name, False)):
            return True
    return False


def targets_for(metafunc: pytest.Metafunc, targets: list[Target]) -> list[Target]:
    """The targets ``metafunc``'s test gets an item for: those it applies to, in a selected tier."""
    applies = applies_to_of(metafunc.function)
    markexpr = metafunc.config.getoption("markexpr", "") or ""
    return [t for t in targets if (applies is None or applies(t)) and tier_may_be_selected(markexpr, t)]


def without_tests(items: list[pytest.Item], empty: set[str]) -> list[pytest.Item]:
    """``items`` less those of the tests (node ids in ``empty``) whose target list came out
    empty: pytest makes one item for such a test, which would skip as "got empty parameter set",
    while no target applies to it here."""
    return [item for item in items if item.nodeid.split("[", 1)[0] not in empty]


def shared_ids(items: list[pytest.Item]) -> dict[str, list[str]]:
    """Node ids that more than one conformance item has, each with its items' target names. pytest
    joins a test's parameter ids with ``-``, so target ``a`` on case ``b-c`` and target ``a-b`` on
    case ``c`` are both ``[a-b-c]``: a serial run runs both, but pytest-xdist schedules by node id
    and runs one of them, and ``-k``, JUnit and ``--lf`` cannot tell them apart."""
    targets: dict[str, list[str]] = {}
    for item in items:
        target = getattr(item, "callspec", None) and item.callspec.params.get("target")
        if isinstance(target, Target):
            targets.setdefault(item.nodeid, []).append(target.name)
    return {nodeid: names for nodeid, names in targets.items() if len(names) > 1}
