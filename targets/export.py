"""``export`` targets: the model as a pure function of its parameters, captured by torch.export.

The original check this project grew from: wrap the model so every parameter is an explicit
input, call it through ``torch.func.functional_call``, export with ``strict=False`` and run
``ep.module()``. Because the weights are inputs, one exported program serves every model of a
config: it is exported once per (config, variant, with/without targets), with dynamic batch and
sequence dimensions, and cached for the whole session.

Every variant returns the reference's named intermediates (``gpt_conformance.reference.intermediates``) when the
harness asks, to locate a failure: a third program per config, whose extra outputs are the
tensors that forward hooks on the model see while export traces it.

Variants, each its own target:

- ``export``: non-strict export (``strict=False``); it also decodes, through an exported prefill
  program and step program over a static cache (``gpt_conformance.targets.export_decode``).
- ``export-strict``: TorchDynamo-traced strict export.
- ``export-serdes``: non-strict export round-tripped through ``torch.export.save``/``load``.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, Capabilities, Decoding, Target, UnsupportedHere
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.intermediates import LOGITS, IntermediateRecorder, ordered
from gpt_conformance.targets.export_decode import DecodePrograms, ExportedDecoder


class FunctionalGPT(torch.nn.Module):
    """Calls the wrapped model with parameters passed in, so none are baked into the graph.
    The model's family says how to get (logits, loss) out of its forward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.family = family_of(model.config)

    def forward(self, params: dict[str, torch.Tensor], idx: torch.Tensor, targets: torch.Tensor | None = None):
        def call(*args, **kwargs):
            return torch.func.functional_call(self.model, params, args, kwargs)

        return self.family.logits_and_loss(call, idx, targets)


class IntermediatesGPT(FunctionalGPT):
    """``FunctionalGPT`` whose outputs are the named intermediates, logits included. The hooks
    are attached here, before export traces the forward pass: strict export cannot trace their
    registration, and the model is this program's own copy (``with_spare_mask_row``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.recorder = IntermediateRecorder(model)

    def forward(self, params: dict[str, torch.Tensor], idx: torch.Tensor):
        self.recorder.values.clear()
        logits, _ = super().forward(params, idx)
        return logits, ordered({**self.recorder.values, LOGITS: logits}, self.model.config.n_layer)


# The programs of one config: logits only, with the loss, and with the named intermediates.
VARIANTS = ("logits", "loss", "intermediates")


@dataclass
class ExportedProgram:
    module: torch.nn.Module
    export_seconds: float
    program_bytes: int | None = None


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by name (tied weights once, as named_parameters dedups them), detached."""
    return {name: p.detach() for name, p in model.named_parameters()}


def with_spare_mask_row(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose causal-mask buffers (the manual attention path's) have one spare
    row and column. torch.export specialises a slice that covers a whole dimension: slicing the
    block_size mask to ``[:T, :T]`` adds the guard ``T != block_size``, which contradicts the
    dynamic seq range, so the full-block length could not be exported (found by the property
    search). With a spare row the slice is never whole; the first block_size rows are unchanged."""
    model = copy.deepcopy(model)
    for module in model.modules():
        mask = getattr(module, "bias", None)
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.dim() == 4:
            n = mask.size(-1)
            spare = torch.zeros(*mask.shape[:2], n + 1, n + 1, dtype=torch.bool)
            spare[..., :n, :n] = mask
            module.bias = spare
    return model


def dynamic_shapes_for(config, params: dict[str, torch.Tensor], with_targets: bool):
    """Dynamic batch (>= 1) and sequence (1..block size) for idx and targets; parameters static."""
    block_size = family_of(config).block_size(config)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    dims = {0: batch}
    if block_size >= 2:
        dims[1] = torch.export.Dim("seq", min=1, max=block_size)
    spec = ({name: None for name in params}, dims)
    return spec + (dims,) if with_targets else spec


def example_inputs(config, with_targets: bool) -> tuple[torch.Tensor, ...]:
    # Sizes of 2 avoid torch.export's specialisation of dimensions whose example size is 0 or 1.
    seq = min(2, family_of(config).block_size(config))
    idx = torch.zeros(2, seq, dtype=torch.long)
    return (idx, torch.zeros_like(idx)) if with_targets else (idx,)


class ExportedProgramIgnoresParameters(RuntimeError):
    """The exported program baked the example's weights in as constants instead of reading its
    parameter inputs, so it would answer for the wrong model (seen with strict export of
    functional_call on torch 2.9.1; fixed by 2.13)."""


@torch.no_grad()
def check_depends_on_parameters(module, model: torch.nn.Module, params: dict[str, torch.Tensor],
                                inputs: tuple[torch.Tensor, ...], name: str) -> None:
    """Run the program with perturbed parameters and compare it with the model run eagerly on the
    same perturbed parameters. One program serves every model of a config, so a program that
    ignores its parameter inputs is wrong for all but the model it was exported from, and its
    parity results would depend on test order; checking here makes that failure deterministic
    and says what it is. The bound only has to separate "reads its parameters" (export and eager
    measured bit-identical) from "answers for other weights" (logits off by O(scale))."""
    generator = torch.Generator().manual_seed(0)
    perturbed = {k: v + torch.randn(v.shape, generator=generator, dtype=v.dtype) * (v.abs().mean() + 0.1)
                 for k, v in params.items()}
    got = module(perturbed, *inputs)[0]
    expected = FunctionalGPT(model)(perturbed, *inputs)[0]
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
        if targets is None:
            return self.target.program(self.model, "logits").module(self.params, idx)
        return self.target.program(self.model, "loss").module(self.params, idx, targets)

    def intermediates(self, idx):
        return self.target.program(self.model, "intermediates").module(self.params, idx)[1]


class ExportedDecodingRunnable(ExportedRunnable):
    """``ExportedRunnable`` that also decodes through the config's prefill and step programs
    (``gpt_conformance.targets.export_decode``)."""

    def __init__(self, target: ExportTarget, model: torch.nn.Module, programs: DecodePrograms):
        super().__init__(target, model)
        self.decoder = ExportedDecoder(programs, self.model, self.params)

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
        # The decode path's two programs (prefill, step): on one variant, for the CPU tier's time.
        self.decode_programs = DecodePrograms(strict) if decodes else None
        if decodes:
            self.capabilities = replace(ExportTarget.capabilities, decode=Decoding())
        self._programs: dict[tuple[Any, str], ExportedProgram] = {}
        self.export_count = 0

    def environment(self) -> dict:
        return {"export_strict": self.strict, "export_serdes": self.serdes}

    def program(self, model: torch.nn.Module, variant: str) -> ExportedProgram:
        """The exported program of ``model``'s config for ``variant`` (one of ``VARIANTS``)."""
        key = (model.config, variant)
        if key not in self._programs:
            self._programs[key] = self._export(model, variant)
            self.export_count += 1
        return self._programs[key]

    def _export(self, model: torch.nn.Module, variant: str) -> ExportedProgram:
        params = parameters_of(model)
        with_targets = variant == "loss"
        wrapper = IntermediatesGPT if variant == "intermediates" else FunctionalGPT
        start = time.perf_counter()
        with warnings.catch_warnings():
            # Strict export warns that functional_call swaps module parameters: that is its job.
            warnings.filterwarnings("ignore", message=".*side effects happened.*")
            ep = torch.export.export(
                wrapper(with_spare_mask_row(model)),
                (params, *example_inputs(model.config, with_targets)),
                dynamic_shapes=dynamic_shapes_for(model.config, params, with_targets),
                strict=self.strict,
            )
        size = None
        if self.serdes:
            if not hasattr(torch.export, "save") or not hasattr(torch.export, "load"):
                raise UnsupportedHere(f"torch {torch.__version__} has no torch.export.save/load")
            buffer = io.BytesIO()
            torch.export.save(ep, buffer)
            size = buffer.tell()
            buffer.seek(0)
            ep = torch.export.load(buffer)
        module = ep.module()
        check_depends_on_parameters(module, model, params, example_inputs(model.config, with_targets), self.name)
        return ExportedProgram(module, time.perf_counter() - start, size)

    def prepare(self, model, config):
        if self.decode_programs is not None:
            return ExportedDecodingRunnable(self, model, self.decode_programs)
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
