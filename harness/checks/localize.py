"""Checks layer: where a failing target first diverges from the reference, black boxes included.

It runs only after a parity failure, only on the failing case (``ConformanceSession``), and it
never changes a verdict: it adds one line to the failure's message and a ``localization`` field
to its record. Two ways:

- **Per-layer errors**, when the target's runnable returns the named intermediates
  (``Capabilities(returns_intermediates=True)``, names from ``gpt_conformance.reference.intermediates``): one run.
  Each intermediate is judged against the fp64 reference's by the target's own policy gates, with
  eager fp32's error *at that point* as the baseline and that point's range as the scale: a
  correct backend's error is within its policy's multiple of eager's wherever it is measured, so
  the first point over that budget is where the target stops computing the reference. Hidden
  states are judged by the policy's elementwise gates (a hidden state has no top-1 or KL), the
  logits by all of its gates, as the parity check judges them.
- **Bisection**, for black boxes (logits only), or when the per-layer errors are unusable: the
  target is prepared, through the session (so a crash is recorded as anywhere else), on truncated
  reference models (``gpt_conformance.reference.truncate``: the first k blocks, then the final norm and the head,
  sharing the weights), each judged exactly like the failing check against the same truncated
  model in fp64. With k blocks conforming and k + 1 failing, block k is the first divergence; the
  failing case is k = n, so ~log2(n_layer) prepares find it. When one block already fails, the
  model whose block adds exactly zero (``without_blocks``) tells the embeddings and head, where
  the failure does not depend on depth, from block 0. Bisection assumes that once a block breaks
  parity, deeper models stay broken (an error propagates); it stops at its budget, or at a step
  the target cannot run, and then says where the divergence may still be and what it did not run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts
from gpt_conformance.harness.core.errors import CheckError, UnsupportedHere
from gpt_conformance.harness.core.metrics import elementwise_metrics, logit_metrics
from gpt_conformance.harness.core.policies import Verdict, get_policy, judge_logits
from gpt_conformance.harness.core.targets import Target
from gpt_conformance.reference.goldens import reference_outputs
from gpt_conformance.reference.intermediates import (
    EMBED,
    FINAL_NORM,
    LOGITS,
    block_of,
    intermediate_names,
    intermediates_of,
    ordered,
)
from gpt_conformance.reference.truncate import truncated, without_blocks

# The gates that mean something for any activation: the rest (top-1, KL) need a distribution.
ELEMENTWISE = frozenset({"max_abs", "rmse", "max_rel"})
LOCALIZE_CHECK = "localize"


@dataclass(frozen=True)
class Budget:
    """What a bisection may spend: truncated models prepared, and seconds in all. The defaults
    cover a bisection of 128 blocks (7 prepares) plus the no-block model; the seconds bound what
    slow compilers (minutes per prepare) cost one failure."""

    max_prepares: int = 8
    max_seconds: float = 300.0


@dataclass
class Localization:
    method: str  # "intermediates" | "bisection"
    summary: str  # the one line that the failure message ends with
    first_divergence: str | None  # "h.1.attn", "h.2", "embeddings or head", "loss", or None when not found
    depth_independent: bool = False
    points: list[dict] = field(default_factory=list)  # per intermediate, or per truncated model tried
    skipped: str = ""  # what the budget (or a step the target could not run) left out
    notes: list[str] = field(default_factory=list)

    def to_record(self) -> dict:
        return asdict(self)


class IntermediatesUnusable(Exception):
    """The target's intermediates cannot locate this failure (it raised, returned garbage, or its
    policy has no elementwise gate); bisection is used instead."""


def localize(session: Any, target: Target, model: torch.nn.Module, idx: torch.Tensor,
             targets: torch.Tensor | None, failed: Verdict, case_id: str, budget: Budget = Budget()) -> Localization:
    """Where ``target`` first diverges on ``model`` and ``idx``, given its failing ``logits`` or
    ``loss`` verdict ``failed``. ``session`` is the run's ``ConformanceSession``."""
    notes = []
    if target.capabilities.returns_intermediates:
        try:
            found = by_intermediates(session, target, model, idx, failed.check, case_id)
        except IntermediatesUnusable as exc:
            found = None
            notes.append(f"per-layer errors unusable, bisected instead: {exc}")
        else:
            if found is None:
                notes.append("the run with intermediates conforms everywhere (the failure did not reproduce "
                             "there), bisected instead")
        if found is not None:
            return found
    found = by_bisection(session, target, model, idx, targets, failed, case_id, budget)
    found.notes = notes + found.notes
    return found


# --- per-layer errors ----------------------------------------------------------------------------
def by_intermediates(session: Any, target: Target, model: torch.nn.Module, idx: torch.Tensor, check: str,
                     case_id: str) -> Localization | None:
    """The first intermediate over budget; None when every one conforms and the logits failed."""
    runnable = session.prepare(target, model, case_id).runnable
    got = checked_intermediates(runnable, model, idx)
    truth = intermediates_of(copy.deepcopy(model).double(), idx)
    eager = intermediates_of(model, idx)
    judged = judge_intermediates(target, got, truth, eager)
    points = [point(name, verdict) for name, verdict in judged]
    first = next(((name, verdict) for name, verdict in judged if not verdict.passed), None)
    if first is None:
        if check != "loss" or LOGITS not in got:
            return None
        return Localization("intermediates", "first divergence: the loss (every intermediate conforms, logits "
                            "included: the loss is not the cross-entropy of these logits)", "loss", points=points)
    name, verdict = first
    points[[n for n, _ in judged].index(name)]["first"] = True
    summary = f"first divergence: {name} ({cite(verdict)}); {context(name)}"
    return Localization("intermediates", summary, name, depth_independent=block_of(name) is None, points=points)


def checked_intermediates(runnable: Any, model: torch.nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The target's intermediates, validated: known names, tensors of the reference's shapes."""
    config = model.config
    try:
        with torch.no_grad():
            got = runnable.intermediates(idx)
    except Exception as exc:  # a target's crash here must not hide the verdict it is explaining
        raise IntermediatesUnusable(f"intermediates() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(got, dict) or not got:
        raise IntermediatesUnusable(f"intermediates() returned {type(got).__name__}, expected a non-empty dict")
    unknown = sorted(set(got) - set(intermediate_names(config.n_layer)))
    if unknown:
        raise IntermediatesUnusable(f"intermediates() returned unknown names {unknown}")
    batch, seq_len = idx.shape
    for name, value in got.items():
        width = config.vocab_size if name == LOGITS else config.n_embd
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch, seq_len, width):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise IntermediatesUnusable(f"intermediate {name} is {shape}, expected {(batch, seq_len, width)}")
    return ordered(got, config.n_layer)


def judge_intermediates(target: Target, got: dict[str, torch.Tensor], truth: dict[str, torch.Tensor],
                        eager: dict[str, torch.Tensor]) -> list[tuple[str, Verdict]]:
    """Each intermediate's verdict under the target's policy, in forward order."""
    policy = get_policy(target.precision)
    gates = tuple(g for g in policy.logit_gates if g.metric in ELEMENTWISE)
    if not gates:
        raise IntermediatesUnusable(f"policy {policy.name!r} has no elementwise gate ({', '.join(sorted(ELEMENTWISE))})")
    hidden = replace(policy, logit_gates=gates)
    judged = []
    for name, value in got.items():
        scale = float(truth[name].abs().max())
        if name == LOGITS:
            verdict = judge_logits(policy, logit_metrics(value, truth[name]), logit_metrics(eager[name], truth[name]),
                                   scale, check=name)
        else:
            verdict = judge_logits(hidden, elementwise_metrics(value, truth[name]),
                                   elementwise_metrics(eager[name], truth[name]), scale, check=name)
        judged.append((name, verdict))
    return judged


def context(name: str) -> str:
    """What conforms before ``name``, the first intermediate over budget."""
    if name == EMBED:
        return "the embeddings diverge before any block: the failure does not depend on depth"
    if name == FINAL_NORM:
        return "every block conforms, the final norm does not: the failure does not depend on depth"
    if name == LOGITS:
        return "every block and the final norm conform, the head does not: the failure does not depend on depth"
    i, part = block_of(name)
    before = "blocks before it" if i else "the embeddings"
    return {"attn": f"{before} conform",
            "attn_residual": "its attention output conforms, the residual add does not",
            "mlp": f"{before} and its attention conform",
            "mlp_residual": "its MLP output conforms, the residual add does not"}[part]


# --- bisection -----------------------------------------------------------------------------------
def by_bisection(session: Any, target: Target, model: torch.nn.Module, idx: torch.Tensor,
                 targets: torch.Tensor | None, failed: Verdict, case_id: str, budget: Budget,
                 judge: Callable[[torch.nn.Module, int], dict] | None = None) -> Localization:
    """Bisect the blocks of ``model``. ``judge(cut, blocks)`` prepares and judges the target on a
    truncated model (default: ``judge_truncated``, a forward pass judged like the failing check;
    the decode path passes its own) and returns ``{"verdict": ..., "point": ...}``."""
    if judge is None:
        def judge(cut: torch.nn.Module, blocks: int) -> dict:
            return judge_truncated(session, target, cut, blocks, idx, targets, failed.check, case_id)
    n = model.config.n_layer
    lo, hi = 0, n  # lo blocks conform (0: assumed until the no-block model says otherwise); hi fail
    steps: list[dict] = []
    verdicts: dict[int, Verdict] = {n: failed}
    start = time.perf_counter()
    stop = ""

    def spent() -> str:
        elapsed = time.perf_counter() - start
        if len(steps) >= budget.max_prepares or elapsed >= budget.max_seconds:
            return (f"budget spent: {len(steps)} of {budget.max_prepares} prepares, "
                    f"{elapsed:.0f} of {budget.max_seconds:g} s")
        return ""

    def attempt(blocks: int) -> str:
        cut = truncated(model, blocks) if blocks else without_blocks(model)
        step = judge(cut, blocks)
        steps.append(step["point"])
        if step["verdict"] is not None:
            verdicts[blocks] = step["verdict"]
        return step["point"]["status"]

    while hi - lo > 1 and not (stop := spent()):
        mid = (lo + hi) // 2
        status = attempt(mid)
        if status == "pass":
            lo = mid
        elif status == "fail":
            hi = mid
        else:
            stop = f"the {mid}-block model gave {status}: {steps[-1]['message'][:200]}"
            break
    probe = None
    if hi == 1 and not stop and not (stop := spent()):
        probe = attempt(0)
        if probe not in ("pass", "fail"):
            stop = f"the no-block model gave {probe}: {steps[-1]['message'][:200]}"
    case = point(f"{n} blocks (the case)", failed)
    case.update(blocks=n, seconds=None)
    points = sorted([*steps, case], key=lambda p: p["blocks"])

    def found(summary: str, where: str | None, at: int | None, **kwargs) -> Localization:
        if at is not None:  # the model that first fails: the chart marks it
            points[[p["blocks"] for p in points].index(at)]["first"] = True
        return Localization("bisection", f"first divergence: {summary}", where, points=points, **kwargs)

    done = f"bisection, {len(steps)} prepares"
    if stop:
        candidates = f"h.{lo}" if hi - lo == 1 else f"h.{lo}..h.{hi - 1}"
        if lo == 0:
            candidates = f"the embeddings, the head or {candidates}"
        skipped = not_run(lo, hi, probe is None)
        return found(f"one of {candidates} (bisection stopped, {stop}; {skipped})", None, None, skipped=skipped)
    if probe == "fail" and verdicts[0].metrics.get("nonfinite"):  # a zeroed block may have tripped the target
        return found(f"the embeddings, the head or h.0 (the no-block model gives {cite(verdicts[0])}) ({done})",
                     None, None)
    if probe == "fail":
        return found(f"embeddings or head (with no block at all: {cite(verdicts[0])}); the failure does not depend "
                     f"on depth ({done})", "embeddings or head", 0, depth_independent=True)
    before = "blocks before it conform" if lo else "without blocks the target conforms"
    return found(f"h.{lo} (the model cut after it: {cite(verdicts[hi])}); {before} ({done})", f"h.{lo}", hi)


def not_run(lo: int, hi: int, probe_left: bool) -> str:
    """What a stopped bisection left out, with ``lo`` blocks known to conform and ``hi`` to fail."""
    parts = []
    if hi - lo > 1:
        sizes = f"{lo + 1}" if hi - lo == 2 else f"{lo + 1}..{hi - 1}"
        parts.append(f"{math.ceil(math.log2(hi - lo))} more truncated model(s), of {sizes} blocks")
    if lo == 0 and probe_left:
        parts.append("the no-block model")
    return "not run: " + (" and ".join(parts) or "nothing else")


def truncated_name(blocks: int) -> str:
    return {0: "no block", 1: "1 block"}.get(blocks, f"{blocks} blocks")


def judge_truncated(session: Any, target: Target, cut: torch.nn.Module, blocks: int, idx: torch.Tensor,
                    targets: torch.Tensor | None, check: str, case_id: str) -> dict:
    """Prepare and run ``target`` on a truncated model and judge it like the failing ``check``."""
    name = truncated_name(blocks)
    start = time.perf_counter()
    try:
        logits, loss, _ = session.run(target, cut, idx, targets, f"{case_id} · {name}", check=LOCALIZE_CHECK)
    except (CheckError, UnsupportedHere) as exc:  # already recorded by the session
        status = "skip" if isinstance(exc, UnsupportedHere) else "error"
        return {"verdict": None, "point": {"name": name, "blocks": blocks, "status": status, "message": str(exc),
                                           "seconds": time.perf_counter() - start}}
    finally:
        session.prepared.forget(target, cut)
    logits_verdict, loss_verdict = parity_verdicts(target, Truth(*reference_outputs(cut, idx, targets)), logits, loss)
    verdict = loss_verdict if check == "loss" else logits_verdict
    entry = point(name, verdict)
    entry.update(blocks=blocks, seconds=time.perf_counter() - start)
    return {"verdict": verdict, "point": entry}


# --- reading verdicts ----------------------------------------------------------------------------
def point(name: str, verdict: Verdict) -> dict:
    """One point of the localization chart: a verdict's errors, eager's, and the max_abs bound."""
    bound = next((g.bound for g in verdict.gates if g.metric == "max_abs"), None)
    metric = "loss_abs" if verdict.check == "loss" else "max_abs"
    return {"name": name, "status": verdict.status, "metric": metric, "value": verdict.metrics.get(metric),
            "eager": verdict.baseline.get(metric), "bound": bound if metric == "max_abs" else None,
            "message": verdict.message}


def cite(verdict: Verdict) -> str:
    """The failing gate furthest past its bound, relative to eager fp32's error at that point."""
    if verdict.metrics.get("nonfinite"):
        return f"{int(verdict.metrics['nonfinite'])} non-finite values"
    failed = [g for g in verdict.gates if not g.passed]
    if not failed:
        return verdict.message or verdict.status

    def over(g) -> float:
        ratio = (g.value / g.bound if g.bound else math.inf) if g.direction == "max" else (g.bound / g.value if g.value else math.inf)
        return math.inf if math.isnan(ratio) else ratio

    gate = max(failed, key=over)
    eager = verdict.baseline.get(gate.metric)
    if gate.direction != "max" or eager is None:
        return f"{gate.metric} {gate.value:.2g}, bound {gate.bound:.2g}"
    if eager == 0:
        return f"{gate.metric} {gate.value:.2g}, where eager fp32 is exact"
    return f"{gate.metric} {gate.value:.2g} = {gate.value / eager:.2g}x eager fp32's error there"
