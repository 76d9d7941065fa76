"""Core layer: what a backend target is (``Target``, its ``Requirements`` and ``Capabilities``)
and the registry that holds the targets of a run. Backend authors import these through
``gpt_conformance.harness.api``, which documents the contract."""


from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import metadata
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from gpt_conformance.harness.core.policies import get_policy
from gpt_conformance.harness.core.probes import (
    AVAILABLE,
    Availability,
    first_unavailable,
    probe_cuda,
    probe_neuron_device,
    probe_package,
)
from gpt_conformance.harness.core.quant import LowPrecision, QuantizedLinear
from gpt_conformance.reference.families import FAMILIES

ENTRY_POINT_GROUP = "gpt_conformance.targets"
F = TypeVar("F", bound=Callable[..., Any])
# Every model family the reference defines; a target that is family-agnostic declares these.
ALL_FAMILIES = frozenset(FAMILIES)
# The pytest marker of each device kind: the hardware tier a target's tests belong to.
DEVICE_MARKERS = {"cpu": "cpu", "cuda": "gpu", "neuron": "trn1"}


@dataclass(frozen=True)
class Requirements:
    """What a target needs. ``packages`` holds (import name, pip extra or None) pairs; an extra is
    one of ``distribution``'s, the name that a missing package's hint installs
    (``pip install 'DISTRIBUTION[extra]'``): a third-party target names its own."""

    packages: tuple[tuple[str, str | None], ...] = ()
    device: str = "cpu"  # "cpu" | "cuda" | "neuron"
    min_cuda_capability: tuple[int, int] | None = None
    distribution: str = "gpt-conformance"

    def __post_init__(self) -> None:
        if self.device not in DEVICE_MARKERS:
            raise ValueError(f"Requirements.device must be one of {sorted(DEVICE_MARKERS)}, got {self.device!r}")


PADDINGS = ("right", "left")


@dataclass(frozen=True)
class Decoding:
    """How a target decodes incrementally: ``prefill``, then one token at a time over its cache
    (the decode protocol, ``Decoder``).

    - ``max_cache_len``: the slots of a static cache (Neuron, TensorRT style); the harness never
      asks for more tokens than that. None: the model's block size.
    - ``padding``: how the harness presents a ragged batch to ``prefill``: ``"right"`` (row b's
      ``lengths[b]`` tokens first, then pads) or ``"left"`` (pads first; the decoder derives its
      attention mask and position ids from ``lengths``), or None: no ragged batches.
    - ``reusable_state``: ``prefill(idx, state=old)`` reuses ``old``'s buffers for a new sequence
      (a static backend's device cache) and must then decode exactly as from a fresh state.
    """

    max_cache_len: int | None = None
    padding: str | None = "right"
    reusable_state: bool = True

    def __post_init__(self) -> None:
        if self.padding is not None and self.padding not in PADDINGS:
            raise ValueError(f"Decoding.padding must be one of {PADDINGS} or None, got {self.padding!r}")
        if self.max_cache_len is not None and self.max_cache_len < 2:
            raise ValueError(f"Decoding.max_cache_len must be >= 2 (a prompt and one step), got {self.max_cache_len}")


@dataclass(frozen=True)
class Capabilities:
    """What a target can run. Cases and strategies read these instead of naming backends.

    - ``dynamic_shapes``: any (batch, seq_len) up to the maxima, else only ``static_shapes``.
    - ``static_shapes``: the (batch, seq_len) buckets a static target was built for; inputs are
      padded up to one of them by the target itself.
    - ``families``: model families the target can express (``"nanogpt"``, ``"nanochat"``: see
      ``gpt_conformance.reference.families``); cases of other families skip with the reason.
    - ``returns_loss``: whether the runnable computes the loss itself.
    - ``returns_intermediates``: whether the runnable has an ``intermediates(idx)`` method
      returning named per-layer outputs (``gpt_conformance.reference.intermediates``), so that a failure is
      located from one run; without it the harness bisects truncated models instead.
    - ``decode``: a ``Decoding`` when the runnable is also a ``Decoder`` (incremental decoding
      over a KV cache); None: its greedy text is made by full forward passes.
    """

    dynamic_shapes: bool = True
    max_batch: int | None = None
    max_seq_len: int | None = None
    static_shapes: tuple[tuple[int, int], ...] = ()
    families: frozenset[str] = frozenset({"nanogpt"})
    returns_loss: bool = True
    returns_intermediates: bool = False
    decode: Decoding | None = None

    def accepts(self, batch: int, seq_len: int) -> bool:
        if self.max_batch is not None and batch > self.max_batch:
            return False
        if self.max_seq_len is not None and seq_len > self.max_seq_len:
            return False
        if not self.dynamic_shapes and self.static_shapes:
            return any(batch <= b and seq_len <= s for b, s in self.static_shapes)
        return True


@dataclass(frozen=True)
class ExpectedFailure:
    """A known divergence of a target, declared so that a new backend's first run can be triaged:
    ``check`` (``"logits"``, ``"loss"``, ``"greedy"``, a property...) of ``case`` (a case id)
    fails or errs, for ``reason``. Both are ``fnmatch`` patterns (``"nanochat-*"``).

    Its records get status ``xfail`` (never a pass), with the verdict and the reason; if it passes
    instead, the record is ``xpass`` and the run is red, naming it: remove the declaration."""

    case: str
    check: str
    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError(f"ExpectedFailure({self.case!r}, {self.check!r}) needs a reason")

    def matches(self, case: str, check: str) -> bool:
        return fnmatchcase(case, self.case) and fnmatchcase(check, self.check)


@runtime_checkable
class ReturnsIntermediates(Protocol):
    """A runnable of a target with ``Capabilities(returns_intermediates=True)``."""

    def intermediates(self, idx: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """``{name: tensor}`` under the names of ``intermediate_names(n_layer)`` (hidden states
        ``[B, T, n_embd]``, ``logits`` ``[B, T, V]``); names it cannot expose may be left out."""


@runtime_checkable
class ReturnsQuantizedWeights(Protocol):
    """A runnable of a weight-quantized target that carries the tensors it computes with (the
    alternative is ``Target.quantized_weights(model)``)."""

    quantized_weights: Mapping[str, QuantizedLinear]


class Runnable(Protocol):
    """What ``Target.prepare`` returns: a callable from token ids (and targets) to outputs.

    With ``Capabilities(returns_intermediates=True)`` it also has ``intermediates(idx)``, which
    returns ``{name: tensor}`` under the names of ``gpt_conformance.reference.intermediates.intermediate_names``
    (hidden states ``[B, T, n_embd]``, ``logits`` ``[B, T, V]``); names it cannot expose may be
    left out."""

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits [B, T, V] for every position, loss or None)."""


class Decoder(Protocol):
    """What a runnable also is with ``Capabilities(decode=Decoding(...))``: prefill a prompt, then
    one token at a time over its cache. The state is the decoder's own (any object); the harness
    only hands it back."""

    def prefill(self, idx: torch.Tensor, lengths: torch.Tensor | None = None,
                state: Any = None) -> tuple[torch.Tensor, Any]:
        """``idx`` [B, T] int64; ``lengths`` [B] the real tokens of each row of a ragged batch,
        padded as ``Decoding.padding`` says (None: every row has T); ``state`` an old state to
        reuse (only with ``Decoding.reusable_state``). Return (logits [B, T, V], state)."""

    def step(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``tokens`` [B, 1]: each row's next token. Return (logits [B, 1, V], the next state)."""


class Target:
    """Base class of every backend target; override ``prepare`` (and ``probe`` if needed)."""

    name: str = ""
    precision: str = "fp32"
    description: str = ""
    requirements: Requirements = Requirements()
    capabilities: Capabilities = Capabilities()
    # Extra pytest markers on every test of this target, e.g. ("slow",) for a target whose first
    # compile takes tens of seconds, so ``-m "not slow"`` leaves it out. Registered markers only.
    marks: tuple[str, ...] = ()
    # A reduced-precision target declares what it computes in (and how its weights are
    # quantized): it opts into the two-level checks (docs/precision.md) and out of fp32 parity.
    low_precision: LowPrecision | None = None
    # Known divergences (ExpectedFailure): reported as ``xfail``, and as a red ``xpass`` once they
    # pass. A plugin can add some to a target it did not write: ``registry.expect_failure``.
    expected_failures: tuple[ExpectedFailure, ...] = ()
    # The target whose per-process programs this one runs (None: its own). ``pytest -n N --dist
    # loadgroup`` runs a group's tests on one worker, so each program is loaded once
    # (harness/pytest_plugin/parallel.py).
    program_group: str | None = None
    # True for a target whose first run in a fresh environment is long because it captures or
    # compiles a program per config (the torch.export tracers: 1-5 s each; inductor and
    # onnxruntime, in the slow tier: 10-75 s each). ``pytest -n N --dist
    # loadgroup`` hands the groups of such targets out before any other, so that two of them start
    # on different workers instead of queueing behind each other on one.
    slow_cold_start: bool = False

    def probe(self) -> Availability:
        """Can this target run here? Default: every required package imports and the device exists."""
        req = self.requirements
        checks = [probe_package(module, extra, req.distribution) for module, extra in req.packages]
        if req.device == "cuda":
            checks.append(probe_cuda(req.min_cuda_capability))
        elif req.device == "neuron":
            checks.append(probe_neuron_device())
        return first_unavailable(*checks) if checks else AVAILABLE

    def prepare(self, model: torch.nn.Module, config: Any) -> Runnable:
        raise NotImplementedError(f"target {self.name!r} does not implement prepare()")

    def quantized_weights(self, model: torch.nn.Module) -> Mapping[str, QuantizedLinear] | None:
        """The quantized tensors this target computes ``model`` with (``{linear name: QuantizedLinear}``),
        for a target with ``low_precision.weights`` whose runnable does not carry them as its
        ``quantized_weights`` attribute (``ReturnsQuantizedWeights``). None: not reported here."""
        return None

    def environment(self) -> dict[str, Any]:
        """Versions and settings that belong in every record of this target (compiler args...)."""
        return {}

    @property
    def marker(self) -> str:
        return DEVICE_MARKERS[self.requirements.device]

    def __repr__(self) -> str:
        return f"<Target {self.name} precision={self.precision} device={self.requirements.device}>"


APPLIES_TO = "__gpt_conformance_applies_to__"


def applies_to(predicate: Callable[[Target], bool]) -> Callable[[F], F]:
    """Declare that a case applies only to the targets ``predicate`` accepts (say, those that
    declare ``low_precision``): the pytest plugin parametrizes it over those alone, so a target the
    check does not apply to gets no test, instead of a test that skips."""
    def declare(case: F) -> F:
        setattr(case, APPLIES_TO, predicate)
        return case

    return declare


def applies_to_of(case: Callable[..., Any]) -> Callable[[Target], bool] | None:
    """The predicate a case declared with ``applies_to``, or None (it applies to every target)."""
    return getattr(case, APPLIES_TO, None)


# The distribution whose own targets must load: one that does not is a broken install.
OWN_DISTRIBUTION = "gpt-conformance"


@dataclass(frozen=True)
class EntryPointError:
    """A ``gpt_conformance.targets`` entry point that failed to load."""

    name: str
    value: str
    distribution: str | None
    error: str

    @property
    def built_in(self) -> bool:
        return self.distribution == OWN_DISTRIBUTION

    def __str__(self) -> str:
        return f"entry point {self.name} = {self.value} (from {self.distribution or 'an unknown distribution'}): {self.error}"


class TargetRegistry:
    """Targets by name. The harness's run uses the module-level ``registry``; plugins add to it
    through an entry point or the ``pytest_gpt_conformance_register(registry)`` hook."""

    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}
        self.sources: dict[str, str] = {}
        self._expected: dict[str, list[ExpectedFailure]] = {}

    def register(self, target: Target, source: str = "direct") -> Target:
        """Add ``target``; ``source`` names where it came from in error messages. Registering the
        same object twice is harmless; a different target under a taken name is an error."""
        if not isinstance(target, Target):
            raise TypeError(f"{source}: expected a harness.api.Target, got {type(target).__name__}")
        if not target.name:
            raise ValueError(f"{source}: target {type(target).__name__} has no name")
        get_policy(target.precision)  # fail registration early on an unknown precision class
        existing = self._targets.get(target.name)
        if existing is not None and existing is not target:
            raise ValueError(f"target name {target.name!r} registered twice ({self.sources[target.name]} and {source})")
        self._targets[target.name] = target
        self.sources[target.name] = source
        return target

    def expect_failure(self, target_name: str, case: str, check: str, reason: str) -> ExpectedFailure:
        """Declare a known divergence of the target named ``target_name`` (see ``ExpectedFailure``),
        from a plugin: the target may be one the plugin did not write."""
        declared = ExpectedFailure(case, check, reason)
        self._expected.setdefault(target_name, []).append(declared)
        return declared

    def expected_failure(self, target: Target, case: str, check: str) -> ExpectedFailure | None:
        """The first declaration, the target's own then its plugins', that covers ``case``/``check``."""
        declared = (*target.expected_failures, *self._expected.get(target.name, ()))
        return next((d for d in declared if d.matches(case, check)), None)

    def register_all(self, obj: Any, source: str) -> None:
        """Register a Target, an iterable of Targets, or what a callable returns."""
        if callable(obj) and not isinstance(obj, Target):
            obj = obj()
        items = [obj] if isinstance(obj, Target) else list(obj)
        for item in items:
            self.register(item, source)

    def load_entry_points(self) -> list[EntryPointError]:
        """Load every ``gpt_conformance.targets`` entry point; return the ones that failed (the
        caller decides: a built-in one is a usage error, a third-party one an error verdict)."""
        errors = []
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                self.register_all(ep.load(), source=f"entry point {ep.name} = {ep.value}")
            except Exception as exc:  # reported by the caller, never swallowed
                distribution = ep.dist.name if ep.dist is not None else None
                errors.append(EntryPointError(ep.name, ep.value, distribution, f"{type(exc).__name__}: {exc}"))
        return errors

    def get(self, name: str) -> Target:
        try:
            return self._targets[name]
        except KeyError:
            raise KeyError(f"no target {name!r}; registered: {sorted(self._targets)}") from None

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __iter__(self):
        return iter(self._targets[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets


registry = TargetRegistry()
