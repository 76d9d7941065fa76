"""``inductor``: the reference model compiled by ``torch.compile(backend="inductor")`` on CPU.

Inductor fuses ops and generates C++ kernels that reorder float32 reductions and compute exp and
erf its own way (vectorized), so it is judged under the ``fp32-compiled`` policy: the nightly
search measured it at up to 6x eager's error, beyond ``fp32-reassoc``'s 4x. Compiling is the slow part (tens of seconds per config on
two cores), so, as in the ``export`` targets, the model is compiled as a pure function of its
parameters (``torch.func.functional_call``): one compiled program serves every model of a
config, and is cached per (config, with/without targets) for the whole session.

Batch and sequence dimensions are marked dynamic (``maybe_mark_dynamic``), so a new input shape
does not recompile. Dimensions of size 1 are still specialised by dynamo (its 0/1
specialisation), so a seq_len-1 or batch-1 input compiles once more; ``environment()`` reports
how many graphs were compiled and how many of those were recompiles, and every record carries it.
``fullgraph=True`` makes a graph break or dynamo's recompile limit an error instead of a silent
fall-back to eager, which would otherwise pass as "inductor".
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, AVAILABLE, Availability, Capabilities, Target, UnsupportedHere
from gpt_conformance.targets.capture import FunctionalGPT
from gpt_conformance.targets.devices import on_device, outputs_to_cpu

# Every config the session sees is a separate dynamo cache entry of the same code object
# (FunctionalGPT.forward); dynamo's default limit of 8 entries would be reached by a property run.
RECOMPILE_LIMIT = 4096


@dataclass
class CompiledProgram:
    module: Callable[..., Any]
    graphs: int = 0


def dynamo_graph_count() -> int | None:
    """Graphs dynamo has compiled in this process, from its (private) counters; None if absent."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


def dynamo_config_patch():
    """Raise dynamo's recompile limit and make hitting it an error, on every torch >= 2.5."""
    config = torch._dynamo.config
    known = set(getattr(config, "_config", {})) or set(dir(config))
    changes = {}
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if limit in known:
            changes[limit] = RECOMPILE_LIMIT
    for flag in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if flag in known:
            changes[flag] = True
    return config.patch(**changes)


def mark_dynamic(*tensors: torch.Tensor) -> None:
    """Batch and sequence dims dynamic where dynamo allows it (size >= 2)."""
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", None)
    if mark is None:
        raise UnsupportedHere(f"torch {torch.__version__} has no torch._dynamo.maybe_mark_dynamic")
    for tensor in tensors:
        for dim in (0, 1):
            if tensor.size(dim) >= 2:
                mark(tensor, dim)


class InductorTarget(Target):
    name = "inductor"
    precision = "fp32-compiled"
    description = 'torch.compile(backend="inductor", fullgraph=True) on CPU, dynamic batch and sequence'
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES)
    # First compile of a config takes tens of seconds on a 2-core laptop (measured 30-75 s).
    marks = ("slow",)
    slow_cold_start = True  # .ci/run's largest unit (680 s of 3,379): started first under xdist
    # Where the model and its inputs live; inductor-cuda (targets/cuda.py) runs on "cuda".
    torch_device = "cpu"

    def __init__(self) -> None:
        self._programs: dict[tuple[Any, bool], CompiledProgram] = {}
        self.calls = 0

    def probe(self) -> Availability:
        from torch._inductor import config as inductor_config

        # cpp.cxx is (None, "g++") by default: a configured compiler, else g++ from PATH.
        candidates = [c for c in inductor_config.cpp.cxx if c] or ["g++"]
        if not any(shutil.which(c) for c in candidates):
            return Availability(False, f"inductor's CPU backend needs a C++ compiler; none of {candidates} is on PATH")
        return AVAILABLE

    def environment(self) -> dict:
        graphs = sum(p.graphs for p in self._programs.values())
        return {
            "compile_backend": "inductor",
            "compile_fullgraph": True,
            "programs": len(self._programs),
            "graphs_compiled": graphs,
            # Graphs beyond the first of each (config, with/without targets) program.
            "recompiles": graphs - len(self._programs),
            "calls": self.calls,
        }

    def program(self, model: torch.nn.Module, with_targets: bool) -> CompiledProgram:
        key = (model.config, with_targets)
        if key not in self._programs:
            compiled = torch.compile(FunctionalGPT(model), backend="inductor", fullgraph=True, dynamic=False)
            self._programs[key] = CompiledProgram(compiled)
        return self._programs[key]

    def prepare(self, model, config):
        model = on_device(model, self.torch_device)  # buffers too: the program runs the first model's
        params = {name: p.detach() for name, p in model.named_parameters()}

        def run(idx, targets=None):
            program = self.program(model, with_targets=targets is not None)
            inputs = (idx,) if targets is None else (idx, targets)
            # A copy on the device: marking dims dynamic tags the tensor itself.
            inputs = tuple(t.to(self.torch_device, copy=True) for t in inputs)
            mark_dynamic(*inputs)
            before = dynamo_graph_count()
            with dynamo_config_patch():
                out = program.module(params, *inputs)
            after = dynamo_graph_count()
            if before is not None and after is not None:
                program.graphs += after - before
            self.calls += 1
            return outputs_to_cpu(out)

        return run


TARGETS = [InductorTarget()]
