"""Checks layer: the state one run shares across cases: prepared targets, goldens, records.

Cases call into a ``ConformanceSession`` (the ``conformance`` fixture) instead of talking to
targets themselves, so that every check is run, judged and recorded the same way, and a target
that raises or returns garbage becomes an ``error`` verdict in the records, never a crash of the
whole run and never a pass. Outcomes are raised as ``gpt_conformance.harness.core.errors`` exceptions.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gpt_conformance.harness.checks.conformance import Prepared, PreparedTargets, Truth, run_checked
from gpt_conformance.harness.checks.decode import (
    NonFiniteLogitsError,
    ReferenceGreedy,
    choose_window,
    compare_greedy,
    greedy_verdict,
)
from gpt_conformance.harness.checks.discrimination import UnrelatedOutput, named_parity_verdicts, unrelated_outputs
from gpt_conformance.harness.checks.localize import Budget, Localization, localize
from gpt_conformance.harness.core.errors import CheckError, CheckFailed, UnsupportedHere
from gpt_conformance.harness.core.metrics import abs_error_histogram
from gpt_conformance.harness.core.policies import Verdict, error_verdict, get_policy
from gpt_conformance.harness.core.records import CheckRecord, RecordWriter
from gpt_conformance.harness.core.targets import Target, TargetRegistry
from gpt_conformance.reference.cases import CaseSpec
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.goldens import GOLDEN_DIR, Golden, GoldenError, load_golden, write_golden


@dataclass
class Options:
    report_dir: Path = Path("reports")
    update_goldens: bool = False
    golden_dir: Path = GOLDEN_DIR
    selected: list[str] = field(default_factory=list)
    localize_budget: Budget = field(default_factory=Budget)


class ConformanceSession:
    def __init__(self, registry: TargetRegistry, writer: RecordWriter, options: Options):
        self.registry = registry
        self.writer = writer
        self.options = options
        self.prepared = PreparedTargets()
        self._goldens: dict[str, Golden | GoldenError] = {}
        self._outputs: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None, float]] = {}
        self._updated: set[str] = set()
        self._unrelated: dict[str, list[UnrelatedOutput]] = {}
        # The test that records belong to (set by the pytest plugin), and each test's statuses,
        # so that a test's outcome can be checked against its records.
        self.test_id: str | None = None
        # Seconds per (target, phase): what a run spends compiling, running and on the reference.
        self.phase_seconds: Counter[tuple[str, str]] = Counter()
        self.statuses: dict[str | None, list[str]] = {}
        # Per test, the messages of declared expected failures that passed (``xpass``).
        self.unexpected_passes: dict[str | None, list[str]] = {}
        self._localizations: dict[tuple[str, str], Localization] = {}

    # --- goldens --------------------------------------------------------------------------
    def golden(self, spec: CaseSpec) -> Golden:
        """The verified golden of a named case. A corrupt or missing golden raises GoldenError
        every time it is asked for (it is reported as an error, never regenerated silently)."""
        if spec.name not in self._goldens:
            if self.options.update_goldens and spec.name not in self._updated:
                write_golden(spec, self.options.golden_dir)
                self._updated.add(spec.name)
            try:
                self._goldens[spec.name] = load_golden(spec, self.options.golden_dir)
            except GoldenError as exc:
                self._goldens[spec.name] = exc
        cached = self._goldens[spec.name]
        if isinstance(cached, GoldenError):
            raise cached
        return cached

    # --- running targets ------------------------------------------------------------------
    def prepare(self, target: Target, model: torch.nn.Module, case_id: str, record_errors: bool = True) -> Prepared:
        """Prepare once per (target, model); an unsupported variant skips, a crash is an error
        (recorded unless ``record_errors`` is False: a search that will repeat it records it once).
        A model of a family the target does not declare is never handed to it: that skips."""
        self.require_family(target, family_of(model.config).name, case_id, model.config)
        try:
            prepared = self.prepared.get(target, model)
        except UnsupportedHere as exc:
            self.record(CheckRecord(target, case_id, "prepare", config=model.config, status="skip", message=str(exc)))
            raise UnsupportedHere(f"{target.name}: {exc}") from None
        except Exception as exc:
            if record_errors:
                self.record(CheckRecord(target, case_id, "prepare",
                                        verdict=error_verdict("prepare", target.precision, exc), config=model.config))
            raise CheckError(f"{target.name}: prepare raised {type(exc).__name__}: {exc}") from None
        if prepared.uses == 1:  # prepared just now
            self.phase_seconds[(target.name, "prepare")] += prepared.prepare_seconds
        return prepared

    @contextmanager
    def timed(self, target: Target, phase: str) -> Iterator[None]:
        """Add the time spent inside to ``phase_seconds[(target, phase)]`` (prepare, run, reference)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[(target.name, phase)] += time.perf_counter() - start

    def run(self, target: Target, model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor | None,
            case_id: str, seed: Any = None, check: str = "run",
            record_errors: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Run ``target`` on one input; returns (logits, loss, seconds). Errors are recorded
        (unless ``record_errors`` is False)."""
        prepared = self.prepare(target, model, case_id, record_errors)
        start = time.perf_counter()
        try:
            try:
                with self.timed(target, "run"):
                    logits, loss = run_checked(prepared.runnable, target, model.config, idx, targets)
            finally:
                self.prepared.check_unchanged(target, model, check)
            return logits, loss, time.perf_counter() - start
        except UnsupportedHere as exc:
            if not target.capabilities.accepts(*idx.shape):
                self.record(CheckRecord(target, case_id, check, config=model.config, input_shape=tuple(idx.shape),
                                        seed=seed, status="skip", message=str(exc)))
                raise UnsupportedHere(f"{target.name}: {exc}") from None
            # The capabilities promised this shape: a refusal at run time is a crash that a skip would hide.
            failure: Exception = RuntimeError(f"run raised UnsupportedHere on a {idx.shape[0]}x{idx.shape[1]} "
                                              f"input, which its capabilities accept: {exc}")
        except Exception as exc:
            failure = exc
        if record_errors:
            self.record(CheckRecord(target, case_id, check, verdict=error_verdict(check, target.precision, failure),
                                    config=model.config, input_shape=tuple(idx.shape), seed=seed))
        raise CheckError(f"{target.name} on {case_id}: {type(failure).__name__}: {failure}") from None

    def named_outputs(self, target: Target, golden: Golden) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """A target's output on a named case, computed once and shared by its checks."""
        key = (target.name, golden.spec.name)
        spec = golden.spec
        if not target.capabilities.accepts(spec.batch, spec.seq_len):
            message = f"capabilities do not accept the case's input shape {spec.batch}x{spec.seq_len}"
            self.record(CheckRecord(target, spec.name, "shape", config=spec.config,
                                    input_shape=(spec.batch, spec.seq_len), seed=spec.seed, status="skip",
                                    message=message))
            raise UnsupportedHere(f"{target.name}: {message}")
        if key not in self._outputs:
            self._outputs[key] = self.run(target, golden.model, golden.idx, golden.targets, golden.spec.name,
                                          seed=golden.spec.seed)
        return self._outputs[key]

    def unrelated(self, golden: Golden) -> list[UnrelatedOutput]:
        """The unrelated models' fp64 outputs on a named case (``gpt_conformance.harness.checks.discrimination``),
        computed once per case and shared by every target."""
        name = golden.spec.name
        if name not in self._unrelated:
            self._unrelated[name] = unrelated_outputs(golden.spec, golden.model, golden.idx, golden.targets)
        return self._unrelated[name]

    # --- judging and recording -----------------------------------------------------------
    def check_named_parity(self, target: Target, spec: CaseSpec, check: str) -> Verdict:
        """``check`` is "logits" or "loss": judge a named case against its golden and record it."""
        self.require_family(target, spec.family, spec.name, spec.config)
        try:
            golden = self.golden(spec)
        except GoldenError as exc:
            self.record(CheckRecord(target, spec.name, check, verdict=error_verdict(check, target.precision, exc),
                                    config=spec.config, input_shape=(spec.batch, spec.seq_len), seed=spec.seed))
            raise CheckError(f"golden for {spec.name!r} unusable: {exc}") from None
        truth = Truth(golden.logits64, golden.loss64, golden.logits32, golden.loss32)
        logits, loss, seconds = self.named_outputs(target, golden)
        verdicts = named_parity_verdicts(target.precision, spec, truth, logits, loss, self.unrelated(golden))
        return self.judge_parity(target, golden.model, golden.idx, golden.targets, truth, (logits, loss, seconds),
                                 verdicts, check, spec.name, spec.seed, extra={"golden_sha256": golden.sha256})

    def judge_parity(self, target: Target, model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor,
                     truth: Truth, outputs: tuple[torch.Tensor, torch.Tensor | None, float],
                     verdicts: tuple[Verdict, Verdict | None], check: str, case_id: str, seed: Any,
                     extra: dict | None = None) -> Verdict:
        """Record ``check``'s ("logits" or "loss") verdict of a target's ``outputs`` (logits, loss,
        seconds) on ``idx`` against ``truth``, from ``verdicts`` (logits, loss); locate a failure."""
        logits, loss, seconds = outputs
        logits_verdict, loss_verdict = verdicts
        verdict = logits_verdict if check == "logits" else loss_verdict
        assert verdict is not None, "with targets there is always a loss verdict"
        extra = dict(extra or {})
        if verdict.failed and logits.shape == truth.logits64.shape:
            # Where the logits are off, and by how many decades: the report draws it.
            extra["histogram"] = abs_error_histogram(logits, truth.logits64)
        if verdict.status == "fail":
            # The logits' failure explains the loss's; a loss that fails alone is located by its own.
            failed = logits_verdict if logits_verdict.status == "fail" else loss_verdict
            localization = self.localization(target, model, idx, targets, failed, case_id)
            verdict.localization = localization.summary
            extra["localization"] = localization.to_record()
        self.record(CheckRecord(target, case_id, check, verdict=verdict, config=model.config,
                                input_shape=tuple(idx.shape), seed=seed, duration=seconds, extra=extra))
        return verdict

    def localization(self, target: Target, model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor | None,
                     failed: Verdict, case_id: str) -> Localization:
        """Where ``target`` first diverges on a failing case, located once per (target, case).
        A localization that crashes says so and leaves the verdict as it is."""
        key = (target.name, case_id)
        if key not in self._localizations:
            try:
                found = localize(self, target, model, idx, targets, failed, case_id, self.options.localize_budget)
            except Exception as exc:  # noqa: BLE001  (the failure it explains must still be reported)
                found = Localization("none", f"localization could not run: {type(exc).__name__}: {exc}", None)
            self._localizations[key] = found
        return self._localizations[key]

    def localization_of(self, target: Target, case_id: str) -> Localization | None:
        """The localization already made for ``target`` on ``case_id``, if it failed there."""
        return self._localizations.get((target.name, case_id))

    def require_family(self, target: Target, family: str, case_id: str, config: Any) -> None:
        """Skip (and record why) when ``target`` cannot express models of ``family``."""
        if family not in target.capabilities.families:
            message = f"target supports model families {sorted(target.capabilities.families)}, not {family!r}"
            self.record(CheckRecord(target, case_id, "family", config=config, status="skip", message=message))
            raise UnsupportedHere(f"{target.name}: {message}") from None

    def check_greedy(self, target: Target, model: torch.nn.Module, reference: ReferenceGreedy, case_id: str,
                     decode: Callable[[list[int]], str] | None = None) -> Verdict:
        """Greedy-decode ``model`` on ``target``, compare it tie-aware with ``reference`` (see
        ``gpt_conformance.harness.checks.decode``) under the target's ``greedy_margin``, and record the comparison."""
        config = model.config
        family = family_of(config)
        self.require_family(target, family.name, case_id, config)
        block_size = family.block_size(config)
        fed = len(reference.prompt) + len(reference.tokens) - 1  # the last new token is never fed back
        window = choose_window(target.capabilities, fed, block_size)
        shape = (1, fed) if window is None else (window.batch, window.seq_len)
        if window is None:
            limit = None if target.capabilities.accepts(1, fed) else target.capabilities.max_seq_len
        else:
            limit = window.seq_len if window.seq_len < fed else None
        if limit is not None:
            message = f"the greedy check feeds {fed} tokens; the target takes at most {limit}"
            self.record(CheckRecord(target, case_id, "greedy", config=config, input_shape=shape, status="skip",
                                    message=message))
            raise UnsupportedHere(f"{target.name}: {message}") from None
        policy = get_policy(target.precision)

        def forward(idx: torch.Tensor) -> torch.Tensor:
            return self.run(target, model, idx, None, case_id, check="greedy")[0]

        start = time.perf_counter()
        try:
            comparison = compare_greedy(forward, reference, policy.greedy_margin, block_size, window)
        except NonFiniteLogitsError as exc:
            verdict = error_verdict("greedy", target.precision, exc)
            self.record(CheckRecord(target, case_id, "greedy", verdict=verdict, config=config, input_shape=shape))
            raise CheckError(f"{target.name} on {case_id}: {exc}") from None
        verdict = greedy_verdict(comparison, policy, decode)
        self.record(CheckRecord(target, case_id, "greedy", verdict=verdict, config=config, input_shape=shape,
                                duration=time.perf_counter() - start, extra={"greedy": comparison.summary(decode)}))
        return verdict

    def record(self, record: CheckRecord) -> dict:
        """Write ``record`` (with the current test's id), after turning a declared expected failure
        into ``xfail`` or ``xpass``; returns the line as written."""
        body = {**record.body(), "test_id": self.test_id}
        self.expect(record.target, body)
        self.statuses.setdefault(self.test_id, []).append(body["status"])
        return self.writer.write(body)

    def expect(self, target: Target, body: dict) -> None:
        """Turn a record of a declared expected failure (``ExpectedFailure``) into ``xfail`` when
        it failed or erred, and into ``xpass``, which is red and names the declaration, when it
        passed."""
        if body["status"] not in ("pass", "fail", "error"):
            return
        declared = self.registry.expected_failure(target, body["case"], body["check"])
        if declared is None:
            return
        body["expected_failure"] = {"case": declared.case, "check": declared.check, "reason": declared.reason,
                                    "verdict": body["status"]}
        if body["status"] == "pass":
            body["status"] = "xpass"
            body["message"] = (f"{target.name} on {body['case']}: {body['check']} passes, but it is declared an "
                               f"expected failure (case {declared.case!r}, check {declared.check!r}: "
                               f"{declared.reason}); remove the declaration")
            self.unexpected_passes.setdefault(self.test_id, []).append(body["message"])
        else:
            body["status"] = "xfail"
            body["message"] = f"expected failure ({declared.reason}): {body['message']}"


def assert_verdict(verdict: Verdict) -> None:
    """Raise ``CheckFailed`` with the verdict's explanation when it failed (a ``recorded``
    verdict is measured, not judged: it neither passes nor fails the test)."""
    if verdict.failed:
        raise CheckFailed(verdict.explain(), verdict)
