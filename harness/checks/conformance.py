"""Checks layer: running targets and judging them: the part every case shares.

``PreparedTargets`` prepares each (target, model) pair once and reuses the runnable across inputs
(Hypothesis examples, named cases), so no backend recompiles because only the input changed.
``run_checked`` validates what a target returns; ``parity_verdicts`` judges logits and loss
against the fp64 truth under the target's tolerance policy.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
from gpt_conformance.harness.core.metrics import logit_metrics, loss_metrics
from gpt_conformance.harness.core.policies import Verdict, get_policy, judge_logits, judge_loss
from gpt_conformance.harness.core.shared_model import ModelSnapshot, ModelStamp, SharedModelChanged, changed_message
from gpt_conformance.harness.core.targets import Runnable, Target
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.model import check_inputs


class TargetOutputError(RuntimeError):
    """A target returned something that is not (logits [B, T, V], loss)."""


@dataclass
class Prepared:
    runnable: Runnable
    model: torch.nn.Module  # kept alive so its id() is never reused while cached
    prepare_seconds: float
    uses: int = 0


class PreparedTargets:
    """Cache of prepared runnables keyed by (target name, model object), least recently used
    first out. Keying by the model object (not its config) is what lets weight-dependent
    backends stay correct; weight-independent ones (export) cache programs per config inside.

    It also guards the models it hands out (``gpt_conformance.harness.core.shared_model``): each is
    stamped before its first ``prepare``, and ``check_unchanged`` compares it after every call; a
    changed model is put back, so only the target that changed it gets the error."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, int], Prepared] = OrderedDict()
        self.prepare_count = 0
        self._stamps: weakref.WeakKeyDictionary[torch.nn.Module, tuple[ModelStamp, ModelSnapshot]] = \
            weakref.WeakKeyDictionary()

    def get(self, target: Target, model: torch.nn.Module) -> Prepared:
        key = (target.name, id(model))
        hit = self._cache.get(key)
        if hit is not None and hit.model is model:
            self._cache.move_to_end(key)
            hit.uses += 1
            return hit
        if model not in self._stamps:
            self._stamps[model] = (ModelStamp.of(model), ModelSnapshot(model))
        start = time.perf_counter()
        try:
            runnable = target.prepare(model, getattr(model, "config", None))
        finally:
            self.check_unchanged(target, model, "prepare")
        prepared = Prepared(runnable, model, time.perf_counter() - start, uses=1)
        self.prepare_count += 1
        self._cache[key] = prepared
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return prepared

    def check_unchanged(self, target: Target, model: torch.nn.Module, during: str) -> None:
        """Raise ``SharedModelChanged``, naming ``target``, when ``model`` differs from its stamp,
        after putting it back as it was (and dropping the target's runnable of it)."""
        if model not in self._stamps:
            return
        stamp, snapshot = self._stamps[model]
        changes = stamp.changes(model)
        if changes:
            snapshot.restore(model)
            self._stamps[model] = (ModelStamp.of(model), snapshot)
            self.forget(target, model)
            raise SharedModelChanged(changed_message(target.name, during, changes))

    def forget(self, target: Target, model: torch.nn.Module) -> None:
        """Drop a one-off model's runnable (a localization's truncated model), so it does not push
        the run's own models out of the cache."""
        key = (target.name, id(model))
        if key in self._cache and self._cache[key].model is model:
            del self._cache[key]


def run_checked(runnable: Runnable, target: Target, config, idx: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the input against the config, run, and validate the output's shape, dtype and
    device. The runnable gets contiguous tensors and runs under ``no_grad`` (the contract in
    ``gpt_conformance.harness.api``)."""
    check_inputs(config, idx, targets, length_field=family_of(config).length_field)
    idx = idx.contiguous()
    targets = targets.contiguous() if targets is not None else None
    with torch.no_grad():
        out = runnable(idx, targets)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TargetOutputError(f"target {target.name!r} returned {type(out).__name__}, expected (logits, loss)")
    logits, loss = out
    expected = (idx.size(0), idx.size(1), config.vocab_size)
    if not isinstance(logits, torch.Tensor):
        raise TargetOutputError(f"target {target.name!r} returned logits of type {type(logits).__name__}")
    if tuple(logits.shape) != expected:
        raise TargetOutputError(f"target {target.name!r} returned logits of shape {tuple(logits.shape)}, expected {expected}")
    if not logits.dtype.is_floating_point:
        raise TargetOutputError(f"target {target.name!r} returned logits of dtype {logits.dtype}, expected a float dtype")
    if logits.device.type != "cpu":
        raise TargetOutputError(f"target {target.name!r} returned logits on {logits.device}, expected a CPU tensor "
                                f"(return logits.cpu())")
    if targets is not None and target.capabilities.returns_loss:
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TargetOutputError(f"target {target.name!r} returned loss {loss!r}, expected a scalar tensor")
        if loss.device.type != "cpu":
            raise TargetOutputError(f"target {target.name!r} returned its loss on {loss.device}, expected a CPU tensor")
    elif targets is not None:
        loss = cross_entropy(logits, targets)
    return logits, loss


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference's loss of ``logits`` (mean over positions, -1 ignored), computed in fp64."""
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).double(), targets.reshape(-1), ignore_index=-1)


@dataclass
class Truth:
    """The oracle's answer for one input: fp64 truth and the eager fp32 baseline."""

    logits64: torch.Tensor
    loss64: torch.Tensor | None
    logits32: torch.Tensor
    loss32: torch.Tensor | None
    _baseline: dict | None = None

    @property
    def scale(self) -> float:
        return float(self.logits64.abs().max())

    def baseline_logits(self) -> dict[str, float]:
        if self._baseline is None:
            self._baseline = logit_metrics(self.logits32, self.logits64)
        return self._baseline


def parity_verdicts(target: Target | None, truth: Truth, logits: torch.Tensor, loss: torch.Tensor | None,
                    policy_name: str | None = None) -> tuple[Verdict, Verdict | None]:
    """(logits verdict, loss verdict or None when there is no loss to compare), under
    ``policy_name`` or else the target's precision policy."""
    policy = get_policy(policy_name or target.precision)
    logits_verdict = judge_logits(policy, logit_metrics(logits, truth.logits64), truth.baseline_logits(), truth.scale)
    loss_verdict = None
    if truth.loss64 is not None:
        baseline = {**loss_metrics(truth.loss32, truth.loss64), "logit_rmse": truth.baseline_logits()["rmse"]}
        loss_verdict = judge_loss(policy, loss_metrics(loss, truth.loss64), baseline)
    return logits_verdict, loss_verdict
