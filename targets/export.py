"""``export`` targets: the model as a pure function of its parameters, captured by torch.export.

The original check this project grew from: wrap the model so every parameter is an explicit
input, call it through ``torch.func.functional_call``, export with ``strict=False`` and run
``ep.module()``. Because the weights are inputs, one exported program serves every model of a
config: it is exported once per (config, variant, with/without targets), with dynamic batch and
sequence dimensions, by ``gpt_conformance.targets.capture``, which every target of the process shares.

Every variant returns the reference's named intermediates (``gpt_conformance.reference.intermediates``) when the
harness asks, to locate a failure: a third program per config, whose extra outputs are the
tensors that forward hooks on the model see while export traces it.

Variants, each its own target:

- ``export``: non-strict export (``strict=False``); it also decodes, through an exported prefill
  program and step program over a static cache (``gpt_conformance.targets.export_decode``),
  two more variants of the same store.
- ``export-strict``: TorchDynamo-traced strict export.
- ``export-serdes``: ``export``'s own program round-tripped through ``torch.export.save``/``load``
  (``capture.ProgramStore.round_tripped``: a program from the program cache has been already).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, Capabilities, Decoding, Target, UnsupportedHere
from gpt_conformance.targets.capture import DECODE_VARIANTS, PROGRAMS, FunctionalGPT, example_inputs, parameters_of
from gpt_conformance.targets.export_decode import ExportedDecoder, FunctionalCachedForward, decode_example_inputs


@dataclass
class ExportedProgram:
    module: torch.nn.Module


class ExportedProgramIgnoresParameters(RuntimeError):
    """The exported program baked the example's weights in as constants instead of reading its
    parameter inputs, so it would answer for the wrong model (seen with strict export of
    functional_call on torch 2.9.1; fixed by 2.13)."""


@torch.no_grad()
def check_depends_on_parameters(module, model: torch.nn.Module, params: dict[str, torch.Tensor],
                                inputs: tuple[torch.Tensor, ...], name: str, eager=None) -> None:
    """Run the program with perturbed parameters and compare it with the model run eagerly on the
    same perturbed parameters. One program serves every model of a config, so a program that
    ignores its parameter inputs is wrong for all but the model it was exported from, and its
    parity results would depend on test order; checking here makes that failure deterministic
    and says what it is. The bound only has to separate "reads its parameters" (export and eager
    measured bit-identical) from "answers for other weights" (logits off by O(scale)). ``eager`` is
    the function the program was traced from (default ``FunctionalGPT(model)``), its logits first."""
    generator = torch.Generator().manual_seed(0)
    perturbed = {k: v + torch.randn(v.shape, generator=generator, dtype=v.dtype) * (v.abs().mean() + 0.1)
                 for k, v in params.items()}
    got = module(perturbed, *inputs)[0]
    expected = (eager or FunctionalGPT(model))(perturbed, *inputs)[0]
    scale = float(expected.abs().max())
    if float((got - expected).abs().max()) > 1e-3 * scale + 1e-5:
        raise ExportedProgramIgnoresParameters(
            f"{name}: the program torch.export (torch {torch.__version__}) produced ignores its parameter "
            "inputs: it baked the example model's weights in as constants, so it computes the wrong model "
            "for any other weights")


class ExportedRunnable:
    """One model's runnable: the config's exported programs, called with this model's parameters."""

    def __init__(self, target: ExportTarget, model: torch.nn.Module):
        self.target = target
        self.model = model.eval()
        self.params = parameters_of(model)

    def __call__(self, idx, targets=None):
        # One program per config for both calls (``capture.VARIANTS``): logits alone are its logits
        # for any targets, so a call without targets passes zeros and drops the loss.
        program = self.target.program(self.model, "forward").module
        if targets is None:
            return program(self.params, idx, torch.zeros_like(idx))[0], None
        return program(self.params, idx, targets)

    def intermediates(self, idx):
        return self.target.program(self.model, "intermediates").module(self.params, idx)[1]


class ExportedDecodingRunnable(ExportedRunnable):
    """``ExportedRunnable`` that also decodes through the config's prefill and step programs
    (``gpt_conformance.targets.export_decode``)."""

    def __init__(self, target: ExportTarget, model: torch.nn.Module):
        super().__init__(target, model)
        self.decoder = ExportedDecoder(target.program, self.model, self.params)

    def prefill(self, idx, lengths=None, state=None):
        return self.decoder.prefill(idx, lengths, state)

    def step(self, state, tokens):
        return self.decoder.step(state, tokens)


class ExportTarget(Target):
    precision = "fp32"
    capabilities = Capabilities(dynamic_shapes=True, max_batch=1 << 16, families=ALL_FAMILIES,
                                returns_intermediates=True)

    def __init__(self, name: str, strict: bool, serdes: bool, description: str, decodes: bool = False):
        self.name = name
        self.strict = strict
        self.serdes = serdes
        self.description = description
        self.program_group = "export" if serdes else None  # it runs export's programs
        self.slow_cold_start = not serdes  # it traces its programs; export-serdes reuses export's
        # The decode path's two programs (prefill, step): on one variant, for the CPU tier's time.
        self.decodes = decodes
        if decodes:
            self.capabilities = replace(ExportTarget.capabilities, decode=Decoding())
        self._programs: dict[tuple[Any, str], ExportedProgram] = {}
        self.export_count = 0
        # Where this target's programs came from: captured, loaded from the program cache, ...
        self.sources: Counter[str] = Counter()

    def environment(self) -> dict:
        cache = PROGRAMS.cache
        return {"export_strict": self.strict, "export_serdes": self.serdes, "programs": dict(self.sources),
                "program_cache": str(cache.directory) if cache else "off"}

    def program(self, model: torch.nn.Module, variant: str) -> ExportedProgram:
        """The exported program of ``model``'s config for ``variant`` (one of ``capture.VARIANTS``)."""
        key = (model.config, variant)
        if key not in self._programs:
            self._programs[key] = self._export(model, variant)
            self.export_count += 1
        return self._programs[key]

    def _export(self, model: torch.nn.Module, variant: str) -> ExportedProgram:
        tracer = "export-strict" if self.strict else "export"
        if self.serdes:
            if not hasattr(torch.export, "save") or not hasattr(torch.export, "load"):
                raise UnsupportedHere(f"torch {torch.__version__} has no torch.export.save/load")
            # export's own program after a save and load: one non-strict capture serves both.
            capture = PROGRAMS.round_tripped(tracer, model, variant)
        else:
            capture = PROGRAMS.export(tracer, model, variant)
        self.sources[capture.source] += 1
        module = capture.program.module()
        params = parameters_of(model)
        if variant in DECODE_VARIANTS:
            check_depends_on_parameters(module, model, params, decode_example_inputs(model, variant == "prefill"),
                                        self.name, eager=FunctionalCachedForward(model))
        else:
            check_depends_on_parameters(module, model, params, example_inputs(model.config, variant == "forward"),
                                        self.name)
        return ExportedProgram(module)

    def prepare(self, model, config):
        if self.decodes:
            return ExportedDecodingRunnable(self, model)
        return ExportedRunnable(self, model)


TARGETS = [
    ExportTarget("export", strict=False, serdes=False, decodes=True,
                 description="functional_call + torch.export(strict=False), ep.module(); decodes through an "
                             "exported prefill program and step program over a static cache"),
    ExportTarget("export-strict", strict=True, serdes=False,
                 description="functional_call + torch.export(strict=True), ep.module()"),
    ExportTarget("export-serdes", strict=False, serdes=True,
                 description="non-strict export round-tripped through torch.export.save/load"),
]
