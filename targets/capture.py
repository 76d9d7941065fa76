"""Capture once: the reference model as a pure function of its parameters, traced into one
program per (tracer, config, variant) and shared by every target that runs that program.

Capturing is the slow part of the export-based targets (per program on two cores, quiet: 0.7-2 s
non-strict, 2.7-5 s strict, torch 2.13), and the
weights are inputs of the program, so one capture serves every model of a config:

- ``export`` and ``export-serdes`` share the non-strict program: ``export-serdes`` runs that
  program after ``torch.export.save``/``load`` instead of exporting again. A program loaded from
  the program cache has been through both already (a run before saved it), so it serves as it is;
  only a program traced by this process is round-tripped, in memory, once;
- ``export-strict`` has its own (TorchDynamo-traced) program;
- ``inductor`` compiles ``FunctionalGPT``, the same wrapper, once per config;
- ``export``'s decode path has two more programs per config, the prefill and the step
  (``gpt_conformance.targets.export_decode``), traced and cached here as the others.

This module holds what every tracer needs: the functional wrapper, the example inputs, the dynamic
dimensions and the causal-mask fix.

**The program cache.** A torch.export program is also kept across runs, saved with
``torch.export.save`` in ``$GPT_CONFORMANCE_PROGRAM_CACHE`` (default
``$XDG_CACHE_HOME/gpt-conformance/programs``, else ``~/.cache/gpt-conformance/programs``; ``off``
turns it off; deleting the directory clears it). Its key holds the tracer, the variant, the
config, the torch version and a hash of the capturing code: this module, the decode programs'
module and the reference package, whose forward and decoder are what gets traced. An entry is checked by sha256 against its sidecar
before it is used; a corrupt or unloadable one is reported (``ArtifactCacheWarning``) and rebuilt.
Every program, captured or loaded, is then checked by its target against the model run eagerly
on perturbed weights (``export.check_depends_on_parameters``, and
``export_decode.check_decode_depends_on_parameters`` for the decode programs), so a cached program
is never trusted blindly.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.intermediates import LOGITS, IntermediateRecorder, ordered
from gpt_conformance.targets import export_decode
from gpt_conformance.targets.static_shapes import ArtifactCache, ArtifactCacheWarning, ArtifactFormat, artifact_key

CACHE_ENV = "GPT_CONFORMANCE_PROGRAM_CACHE"
CACHE_OFF = "off"
CACHE_MAX_BYTES = 1 << 30
# The code whose change changes a program: this module, the decode programs' wrapper and the
# reference models and decoder they trace.
CODE_FILES = (Path(__file__), Path(export_decode.__file__),
              *sorted((Path(__file__).resolve().parent.parent / "reference").glob("*.py")))

# torch.export's two tracers: the name of each in program keys.
TRACERS = {"export": False, "export-strict": True}  # name -> strict
# The programs of one config: the forward pass (logits and loss: a call for logits alone passes
# any targets and drops the loss, so one program serves both), the named intermediates, and the
# decode path's prefill (dynamic prompt length) and step (one token) over a static cache.
DECODE_VARIANTS = ("prefill", "step")
VARIANTS = ("forward", "intermediates", *DECODE_VARIANTS)


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


@dataclass
class Capture:
    """One program and where it came from: ``"captured"`` (traced now), ``"cache"`` (loaded from
    the program cache), ``"rebuilt"`` (traced again over a corrupt cache entry), ``"round-trip"``
    (a captured program saved and loaded in memory) or ``"process"`` (already held by this
    process)."""

    program: Any  # torch.export.ExportedProgram
    source: str
    name: str
    seconds: float = 0.0


def code_hash() -> str:
    digest = hashlib.sha256()
    for path in CODE_FILES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpt-conformance" / "programs"


def cache_from_environment() -> ArtifactCache | None:
    """The program cache ``$GPT_CONFORMANCE_PROGRAM_CACHE`` names (``off``: none)."""
    value = os.environ.get(CACHE_ENV, "")
    if value.strip().lower() == CACHE_OFF:
        return None
    return ArtifactCache(Path(value) if value else default_cache_dir(), CACHE_MAX_BYTES, EXPORTED_PROGRAM)


def export_save(program, path: str) -> None:
    torch.export.save(program, path)


def export_load(path: str):
    return torch.export.load(path)


EXPORTED_PROGRAM = ArtifactFormat(".pt2", "torch.export.load", export_save, export_load)


@dataclass
class ProgramStore:
    """The process's programs, one per (tracer, config, variant), backed by the program cache."""

    cache: ArtifactCache | None = None
    code: str = ""  # code_hash(), once per store
    _programs: dict[tuple[str, Any, str], Capture] = field(default_factory=dict)
    captures: int = 0  # programs traced by this process (not loaded)

    def export(self, tracer: str, model: torch.nn.Module, variant: str) -> Capture:
        """``model``'s config traced by ``tracer`` (a key of ``TRACERS``) for ``variant``."""
        key = (tracer, model.config, variant)
        if key in self._programs:
            return self._held(key)
        self._programs[key] = self._load_or_trace(tracer, model, variant)
        return self._programs[key]

    def round_tripped(self, tracer: str, model: torch.nn.Module, variant: str) -> Capture:
        """``export`` after ``torch.export.save`` and ``load``: the program itself where it was
        loaded from the program cache, else its in-memory round trip, made once per process."""
        capture = self.export(tracer, model, variant)
        if self._programs[(tracer, model.config, variant)].source == "cache":  # torch.export.load's
            return capture
        key = (tracer, model.config, variant + "/round-trip")
        if key in self._programs:
            return self._held(key)
        start = time.perf_counter()
        buffer = io.BytesIO()
        torch.export.save(capture.program, buffer)
        buffer.seek(0)
        self._programs[key] = Capture(torch.export.load(buffer), "round-trip", capture.name + "/round-trip",
                                      time.perf_counter() - start)
        return self._programs[key]

    def _held(self, key: tuple[str, Any, str]) -> Capture:
        held = self._programs[key]
        return Capture(held.program, "process", held.name)

    def fields(self, tracer: str, config: Any, variant: str) -> dict[str, str]:
        """Everything a program depends on besides the weights, which are its inputs."""
        if not self.code:
            self.code = code_hash()
        return {"tracer": tracer, "variant": variant, "config": repr(config), "torch": torch.__version__,
                "code": self.code}

    def _load_or_trace(self, tracer: str, model: torch.nn.Module, variant: str) -> Capture:
        start = time.perf_counter()
        if self.cache is None:
            self.captures += 1
            return Capture(trace(TRACERS[tracer], model, variant), "captured", tracer + "/" + variant,
                           time.perf_counter() - start)
        fields = self.fields(tracer, model.config, variant)
        key = artifact_key(fields)
        name = f"{tracer}-{variant}-{key[:16]}"
        program, problem = self.cache.load(name, key)
        if program is not None:
            return Capture(program, "cache", name, time.perf_counter() - start)
        if problem:
            warnings.warn(ArtifactCacheWarning(f"{self.cache.paths(name)[0]}: {problem}; rebuilding it"), stacklevel=3)
        program = trace(TRACERS[tracer], model, variant)
        self.captures += 1
        seconds = time.perf_counter() - start
        try:
            self.cache.save(name, key, program, fields, {"build_seconds": seconds})
        except Exception as exc:  # noqa: BLE001  (an unwritable cache costs the next run time, never this verdict)
            warnings.warn(ArtifactCacheWarning(f"program cache: could not save {name}: {type(exc).__name__}: {exc}"),
                          stacklevel=3)
        return Capture(program, "rebuilt" if problem else "captured", name, seconds)


def trace(strict: bool, model: torch.nn.Module, variant: str):
    """torch.export of ``model`` as a function of its parameters, dynamic in batch and sequence."""
    params = parameters_of(model)
    if variant in DECODE_VARIANTS:
        return export_decode.export_cached_forward(model, params, variant == "prefill", strict)
    with_targets = variant == "forward"
    wrapper = IntermediatesGPT if variant == "intermediates" else FunctionalGPT
    with warnings.catch_warnings():
        # Strict export warns that functional_call swaps module parameters: that is its job.
        warnings.filterwarnings("ignore", message=".*side effects happened.*")
        return torch.export.export(
            wrapper(with_spare_mask_row(model)),
            (params, *example_inputs(model.config, with_targets)),
            dynamic_shapes=dynamic_shapes_for(model.config, params, with_targets),
            strict=strict,
        )


# Shared by every target of the process.
PROGRAMS = ProgramStore(cache_from_environment())
