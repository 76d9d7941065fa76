"""AWS Neuron targets (``torch_neuronx.trace`` on Trainium) and their CPU twin (``torch.jit.trace``).

The forward pass is compiled once per (batch, seq_len) shape bucket into a static graph. The
decode path is compiled as NxDI serves it: a *context-encoding* graph per prompt bucket (the
prompt's tokens into an empty static KV cache of ``block_size`` slots) and a *token-generation*
graph per batch bucket (one token per row over that cache), both of the reference decoder's one
tensor function (``gpt_conformance.reference.decode.cached_forward``) with the cache passed in and
returned; the reference decoder's bookkeeping (slots, right padding, reuse) stays on the host
(``StaticCacheDecoder``). The hardware call is one thin seam, a ``Compiler``
(``trace(step, example_inputs, workdir) -> ScriptModule``), so everything around it
(``NeuronStep``, buckets, padding, the artifact cache, the decode graphs, loss) runs on any CPU
through ``torchscript-trace``, which has the same static-shape semantics and the same artifact
format.

Targets:

- ``neuron``: ``torch_neuronx.trace`` with ``--auto-cast none`` (fp32 end to end), policy
  ``fp32-reassoc``: neuronx-cc is a different compiler with its own fused kernels and reduction
  order, so eager's bit-exact ``fp32`` class does not apply (docs/sources.md#neuron-compiler-reassociation: with
  auto-cast none, near-fp32 tolerances; not yet measured on hardware).
- ``neuron-bf16``: ``--auto-cast all --auto-cast-type bf16`` (every fp32 op cast), policy ``bf16``.
- ``torchscript-trace``: the same pipeline on CPU with ``torch.jit.trace``, policy ``fp32-reassoc``:
  padding an input up to its bucket changes the matmul and attention shapes and so the summation
  order (the property search measured 2.8x eager's rmse and 3.4x its max error on a padded 1x4
  input, weight std 1.0; unpadded inputs are bit-identical to eager). Only this one returns the
  named intermediates (a second graph per bucket; untried on Neuron hardware).

Configuration (environment variables, read when the targets are built):

- ``GPT_CONFORMANCE_NEURON_BUCKETS``: shape buckets, ``"1x32,8x32,..."`` (default ``DEFAULT_BUCKETS``).
- ``GPT_CONFORMANCE_NEURON_CACHE``: artifact cache directory (default
  ``$XDG_CACHE_HOME/gpt-conformance/neuron``, else ``~/.cache/gpt-conformance/neuron``).
- ``GPT_CONFORMANCE_NEURON_CACHE_MAX_MB``: cache size bound, least recently used out (default 4096).
- ``GPT_CONFORMANCE_NEURON_CORES_PER_WORKER``: NeuronCores per pytest-xdist worker (default 1).

Nothing here imports ``torch_neuronx`` or touches ``/dev/neuron*`` at import or collection
time; the probe and the compiler do, when a test runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from gpt_conformance.harness.api import Availability, Capabilities, Decoding, Requirements, Target
from gpt_conformance.harness.core.probes import AVAILABLE, probe_neuron_device, probe_package
from gpt_conformance.reference.decode import CachedForward, ReferenceDecoder, cache_shape
from gpt_conformance.reference.intermediates import IntermediateRecorder, intermediate_names
from gpt_conformance.reference.model import GPT, check_inputs
from gpt_conformance.targets.static_shapes import (
    JIT_DEPRECATION,
    ArtifactCache,
    Bucket,
    BucketError,
    CacheStats,
    artifact_key,
    format_bucket,
    load_or_build,
    pad_to_bucket,
    parse_buckets,
    select_bucket,
    validate_bucket,
    weights_digest,
)

BUCKETS_ENV = "GPT_CONFORMANCE_NEURON_BUCKETS"
CACHE_ENV = "GPT_CONFORMANCE_NEURON_CACHE"
CACHE_MAX_ENV = "GPT_CONFORMANCE_NEURON_CACHE_MAX_MB"
CORES_PER_WORKER_ENV = "GPT_CONFORMANCE_NEURON_CORES_PER_WORKER"
# The Neuron runtime's core selection (docs/sources.md#neuron-runtime-core-selection): a NeuronCore stays bound to the
# process that took it until that process exits, so parallel workers must take disjoint cores.
VISIBLE_CORES_ENV = "NEURON_RT_VISIBLE_CORES"
# torch_neuronx also reads compiler flags from here; they would override our pinned precision.
NEURON_CC_FLAGS_ENV = "NEURON_CC_FLAGS"

# The named cases (reference/cases.py: 64x32, 8x32, 8x1, 2x128 and GPT-2-shaped 2x128) and the
# greedy cases (Zen and GPT-2 prompts feed at most 32 tokens, one row) each fit one of these;
# 1x128 serves longer greedy prompts. A bucket is compiled only when an input first needs it.
DEFAULT_BUCKETS: tuple[Bucket, ...] = ((1, 32), (8, 32), (64, 32), (1, 128), (2, 128))
DEFAULT_CACHE_MAX_MB = 4096
PAD_ID = 0  # any valid id: causal attention keeps right padding out of every real position
STEP_VERSION = 1  # bump when NeuronStep's computation changes, to retire cached artifacts
# The decode graphs, named in their artifacts' keys (NxDI's names for them).
DECODE_PHASES = {"context": "ContextEncoding", "token": "TokenGeneration"}


class NeuronStep(torch.nn.Module):
    """The reference GPT's forward pass for one fixed (batch, seq_len): ``input_ids`` -> full
    logits ``[batch, seq_len, vocab]``.

    It runs the model's own modules (same weights) but not ``GPT.forward``, which validates
    token values with ``int(idx.min())``: under ``torch_neuronx.trace`` the model runs on an XLA
    device, not under ``torch.jit.trace``, so ``gpt_conformance.reference.model._is_tracing`` cannot skip that
    check and it would force a device round trip mid-capture. ``BucketedRunner`` validates inputs
    on the host before every call instead. The positions are a buffer of the bucket's length, so
    the graph has no data-dependent shape and no Python control flow on tensor values. The loss
    is computed on the host from real positions only.
    """

    def __init__(self, model: GPT, seq_len: int):
        super().__init__()
        if seq_len > model.config.block_size:
            raise ValueError(f"NeuronStep seq_len {seq_len} exceeds the model's block_size {model.config.block_size}")
        self.transformer = model.transformer
        self.lm_head = model.lm_head
        self.register_buffer("positions", torch.arange(seq_len, dtype=torch.long), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        x = t.drop(t.wte(input_ids) + t.wpe(self.positions))
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))


class IntermediatesStep(NeuronStep):
    """Every named intermediate in forward order, logits last. The hooks are on the model's own
    modules (the step shares them): ``recorder.remove()`` once traced."""

    def __init__(self, model: GPT, seq_len: int):
        super().__init__(model, seq_len)
        self.hidden_names = intermediate_names(model.config.n_layer)[:-1]
        self.recorder = IntermediateRecorder(self)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = super().forward(input_ids)
        return (*(self.recorder.values[name] for name in self.hidden_names), logits)


class StepTraceError(RuntimeError):
    """Tracing the step raised a TracerWarning from our own code: the graph may have frozen a value."""


OWN_CODE = tuple(f"{Path(__file__).resolve().parent.parent / d}{os.sep}" for d in ("reference", "targets", "harness"))


def trace_checked(compiler: Compiler, step: torch.nn.Module, examples: tuple[torch.Tensor, ...], workdir: Path
                  ) -> tuple[torch.jit.ScriptModule, list[str]]:
    """Compile ``step`` and vet the warnings: a TracerWarning raised from the model's or our code
    is an error (a value frozen into the graph); others, including the compiler's own
    TracerWarnings, are re-emitted (all but torch.jit's own deprecation notice) and returned for the
    artifact's metadata."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = compiler.trace(step, examples, workdir)
    ours = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
            and str(Path(w.filename).resolve()).startswith(OWN_CODE)]
    if ours:
        raise StepTraceError(f"tracing {type(step).__name__} raised TracerWarnings from our code:\n" + "\n".join(
            f"  {w.filename}:{w.lineno}: {w.message}" for w in ours))
    kept = []
    for w in caught:
        if issubclass(w.category, DeprecationWarning) and JIT_DEPRECATION.search(str(w.message)):
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if issubclass(w.category, torch.jit.TracerWarning):
            kept.append(f"{w.filename}:{w.lineno}: {w.message}")
    return module, kept


# --- the compile seam ----------------------------------------------------------------------------

def package_version(distribution: str) -> str | None:
    """From the installed metadata, without importing the package."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


class Compiler:
    """The one hardware-facing call: trace a step for one fixed input shape."""

    name = ""
    tag = ""  # short, for artifact file names
    args: tuple[str, ...] = ()

    def versions(self) -> dict[str, str | None]:
        return {"torch": torch.__version__}

    def trace(self, step: torch.nn.Module, examples: tuple[torch.Tensor, ...], workdir: Path
              ) -> torch.jit.ScriptModule:
        """``step`` compiled for the shapes and dtypes of ``examples``, its positional inputs."""
        raise NotImplementedError

    def check_environment(self) -> None:
        """Raise ValueError if the environment would change what this compiler builds."""

    def load_runtime(self) -> None:
        """Make saved artifacts loadable: register the ops they call (before ``torch.jit.load``)."""


class JitTraceCompiler(Compiler):
    name = "torch.jit.trace"
    tag = "jit"

    def trace(self, step, examples, workdir):
        # check_trace re-runs the graph to compare; the parity cases compare it with fp64 instead.
        return torch.jit.trace(step, examples, check_trace=False)


class NeuronTraceCompiler(Compiler):
    name = "torch_neuronx.trace"

    def __init__(self, tag: str, args: tuple[str, ...]):
        self.tag = tag
        self.args = args

    def versions(self):
        names = ("torch-neuronx", "neuronx-cc", "torch-xla", "libneuronxla")
        return {"torch": torch.__version__, **{n: package_version(n) for n in names}}

    def check_environment(self) -> None:
        flags = os.environ.get(NEURON_CC_FLAGS_ENV, "")
        clash = [f for f in shlex.split(flags) if f.split("=")[0] in ("--auto-cast", "--auto-cast-type")]
        if clash:
            raise ValueError(f"${NEURON_CC_FLAGS_ENV} sets {clash}: it would override this target's pinned precision "
                             f"{list(self.args)}; unset it or drop those flags")

    def load_runtime(self) -> None:
        # A saved Neuron graph calls torch.ops.neuron.*, which exist once torch_neuronx is imported.
        import_torch_neuronx()

    def trace(self, step, examples, workdir):
        torch_neuronx = import_torch_neuronx()
        # Keyword arguments only: positional ones are deprecated since torch-neuronx 2.15.0 (research 1.1).
        return torch_neuronx.trace(step, example_inputs=examples, compiler_args=list(self.args),
                                   compiler_workdir=str(workdir))


# --- Neuron gating and process isolation -------------------------------------------------------

def worker_visible_cores(worker: str | None, cores_per_worker: int) -> str | None:
    """The ``NEURON_RT_VISIBLE_CORES`` range of pytest-xdist worker ``gwN``: N*k .. N*k+k-1."""
    if not worker or not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    if cores_per_worker < 1:
        raise ValueError(f"${CORES_PER_WORKER_ENV} must be >= 1, got {cores_per_worker}")
    first = int(worker[2:]) * cores_per_worker
    last = first + cores_per_worker - 1
    return str(first) if first == last else f"{first}-{last}"


def assign_worker_cores(environ: Any = None) -> str | None:
    """Give this xdist worker its own NeuronCores before the Neuron runtime starts (it reads
    the variable once, when torch_neuronx first loads a graph). A value the user set is kept."""
    environ = os.environ if environ is None else environ
    if VISIBLE_CORES_ENV not in environ:
        cores = worker_visible_cores(environ.get("PYTEST_XDIST_WORKER"), int(environ.get(CORES_PER_WORKER_ENV, "1")))
        if cores is not None:
            environ[VISIBLE_CORES_ENV] = cores
    return environ.get(VISIBLE_CORES_ENV)


def import_torch_neuronx():
    assign_worker_cores()
    import torch_neuronx

    return torch_neuronx


def probe_neuron() -> Availability:
    """A Neuron device (``/dev/neuron*``) and a real, importable torch_neuronx (PyPI's
    placeholder raises ImportError("WRONG PACKAGE...") and is named as such); both reasons
    are given when both are missing."""
    assign_worker_cores()
    problems = [a.reason for a in (probe_neuron_device(), probe_package("torch_neuronx")) if not a]
    return Availability(False, "; ".join(problems)) if problems else AVAILABLE


# --- the targets ---------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpt-conformance" / "neuron"


def token_bucket(buckets: tuple[Bucket, ...], batch: int) -> Bucket:
    """The token-generation graph's shape for ``batch`` rows: the smallest bucket batch that holds
    them, one token each."""
    fitting = [b for b, _ in buckets if b >= batch]
    if not fitting:
        raise BucketError(f"a decode step of batch {batch} fits no shape bucket: the largest batch is "
                          f"{max(b for b, _ in buckets)}; buckets: {', '.join(format_bucket(b) for b in buckets)}")
    return min(fitting), 1


class StaticCacheDecoder(ReferenceDecoder):
    """The reference decoder's host-side bookkeeping (slots, right padding, reuse) around a
    runner's two decode graphs over a static cache of ``block_size`` slots."""

    def __init__(self, runner: BucketedRunner):
        super().__init__(runner.model)
        self.runner = runner

    def run_prefill(self, idx, k, v, start_slot, first_slot):
        bucket = select_bucket(self.runner.target.buckets, *idx.shape, self.block_size)
        return self.runner.run_decode_graph("context", bucket, idx, k, v, start_slot, first_slot)

    def run_step(self, tokens, k, v, start_slot, first_slot):
        bucket = token_bucket(self.runner.target.buckets, tokens.size(0))
        return self.runner.run_decode_graph("token", bucket, tokens, k, v, start_slot, first_slot)


class BucketedRunner:
    """A prepared model: one compiled graph per bucket, built or loaded on first use; it decodes
    through the context-encoding and token-generation graphs (``StaticCacheDecoder``)."""

    def __init__(self, target: StaticShapeTarget, model: GPT):
        self.target = target
        self.model = model.eval()
        self.weights = weights_digest(model)
        self.graphs: dict[tuple[Bucket, bool], torch.jit.ScriptModule] = {}
        self.decode_graphs: dict[tuple[str, Bucket], torch.jit.ScriptModule] = {}
        self.decoder = StaticCacheDecoder(self)

    def prefill(self, idx: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        return self.decoder.prefill(idx, lengths, state)

    def step(self, state, tokens: torch.Tensor):
        return self.decoder.step(state, tokens)

    @torch.no_grad()
    def run_decode_graph(self, phase: str, bucket: Bucket, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         start_slot: torch.Tensor, first_slot: torch.Tensor):
        """``cached_forward`` through the ``phase`` graph of ``bucket``, the call padded up to it as
        the forward pass is (``pad``): extra rows are pads over empty caches; extra prompt
        positions are right padding, written
        past each row's last token, where no real token attends (a query sees the slots up to its
        own) and the row's next steps overwrite them."""
        check_inputs(self.model.config, idx, None)
        if (phase, bucket) not in self.decode_graphs:
            self.decode_graphs[phase, bucket] = self.target.decode_graph_for(self.model, self.weights, phase, bucket)
        batch, length = idx.shape
        extra = bucket[0] - batch

        def more_rows(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t, t.new_zeros(shape)], dim=dim)

        logits, k, v = self.decode_graphs[phase, bucket](self.pad(idx, bucket), more_rows(k, 1),
                                                         more_rows(v, 1), more_rows(start_slot), more_rows(first_slot))
        return logits[:batch, :length], k[:, :batch], v[:, :batch]

    @torch.no_grad()
    def run_bucket(self, idx: torch.Tensor, targets: torch.Tensor | None, with_intermediates: bool = False):
        """(the bucket's graph output on the padded input, the bucket). Token values are checked
        here, on the host: the compiled graph does not (an XLA gather clamps an out-of-range id)."""
        check_inputs(self.model.config, idx, targets)
        bucket = select_bucket(self.target.buckets, *idx.shape, self.model.config.block_size)
        if (bucket, with_intermediates) not in self.graphs:
            extra = (True,) if with_intermediates else ()  # graph_for overrides may predate the flag
            self.graphs[bucket, with_intermediates] = self.target.graph_for(self.model, self.weights, bucket, *extra)
        return self.graphs[bucket, with_intermediates](self.pad(idx, bucket)), bucket

    def intermediates(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named intermediates at the real positions, from the bucket's intermediates graph."""
        outs, _ = self.run_bucket(idx, None, with_intermediates=True)
        names = intermediate_names(self.model.config.n_layer)
        return {name: self.real_positions(out, *idx.shape) for name, out in zip(names, outs, strict=True)}

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        out, bucket = self.run_bucket(idx, targets)
        expected = (*bucket, self.model.config.vocab_size)
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{self.target.name}: graph for bucket {format_bucket(bucket)} returned shape "
                               f"{tuple(out.shape)}, expected {expected}")
        logits = self.real_positions(out, *idx.shape)
        return logits, None if targets is None else self.loss(logits, targets, out)

    def pad(self, idx: torch.Tensor, bucket: Bucket) -> torch.Tensor:
        return pad_to_bucket(idx, bucket, PAD_ID)

    def real_positions(self, out: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
        return out[:batch, :seq_len].contiguous()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, padded_out: torch.Tensor) -> torch.Tensor:
        """The reference's loss (float32 mean, -1 ignored) over the real positions only."""
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)


class StaticShapeTarget(Target):
    """A target compiled per shape bucket through a ``Compiler``, cached on disk."""

    runner = BucketedRunner

    def __init__(self, name: str, precision: str, description: str, compiler: Compiler, device: str,
                 buckets: tuple[Bucket, ...] | None = None, cache_dir: Path | None = None,
                 cache_max_mb: int | None = None, intermediates: bool = False):
        self.name, self.precision, self.description = name, precision, description
        self.compiler = compiler
        if buckets is None:
            env = os.environ.get(BUCKETS_ENV)
            buckets = parse_buckets(env) if env else DEFAULT_BUCKETS
        self.buckets = tuple(validate_bucket(b) for b in buckets)
        self.requirements = Requirements(device=device)
        self.capabilities = Capabilities(dynamic_shapes=False, static_shapes=self.buckets,
                                         max_batch=max(b for b, _ in self.buckets),
                                         max_seq_len=max(s for _, s in self.buckets),
                                         returns_intermediates=intermediates, decode=Decoding(padding="right"))
        self.cache_dir = Path(cache_dir or os.environ.get(CACHE_ENV) or default_cache_dir())
        max_mb = cache_max_mb if cache_max_mb is not None else int(os.environ.get(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_MB))
        self.cache = ArtifactCache(self.cache_dir, max_mb << 20)
        self.stats = CacheStats()

    def probe(self) -> Availability:
        return probe_neuron() if self.requirements.device == "neuron" else AVAILABLE

    def prepare(self, model, config):
        self.compiler.check_environment()
        return self.runner(self, model)

    def key_fields(self, model: GPT, weights: str, bucket: Bucket, with_intermediates: bool = False) -> dict[str, Any]:
        step = "IntermediatesStep" if with_intermediates else "NeuronStep"
        return {"format": STEP_VERSION, "step": step, "compiler": self.compiler.name,
                "compiler_args": list(self.compiler.args), "versions": self.compiler.versions(),
                "config": model.config.to_dict(), "weights_sha256": weights, "bucket": list(bucket),
                "input_dtype": "int64"}

    def graph_for(self, model: GPT, weights: str, bucket: Bucket, with_intermediates: bool = False
                  ) -> torch.jit.ScriptModule:
        fields = self.key_fields(model, weights, bucket, with_intermediates)
        name = f"{self.compiler.tag}-{format_bucket(bucket)}-{weights[:12]}-{self.compiler_fingerprint()}"
        name += "-intermediates" if with_intermediates else ""
        step = IntermediatesStep if with_intermediates else NeuronStep
        return self.compiled(bucket, name, fields, lambda: step(model, bucket[1]).eval(),
                             (torch.full(bucket, PAD_ID, dtype=torch.long),))

    def decode_graph_for(self, model: GPT, weights: str, phase: str, bucket: Bucket) -> torch.jit.ScriptModule:
        """The context-encoding graph of a (batch, prompt length) bucket, or the token-generation
        graph of a (batch, 1) bucket: ``cached_forward`` over a static cache of ``block_size`` slots."""
        fields = {**self.key_fields(model, weights, bucket), "step": DECODE_PHASES[phase]}
        name = f"{self.compiler.tag}-{phase}-{format_bucket(bucket)}-{weights[:12]}-{self.compiler_fingerprint()}"
        batch = bucket[0]
        cache = torch.zeros(cache_shape(model.config, batch, model.config.block_size),
                            dtype=next(model.parameters()).dtype)
        slots = torch.zeros(batch, dtype=torch.long)
        examples = (torch.full(bucket, PAD_ID, dtype=torch.long), cache, cache.clone(), slots, slots.clone())
        return self.compiled(bucket, name, fields, lambda: CachedForward(model).eval(), examples)

    def compiled(self, bucket: Bucket, name: str, fields: dict[str, Any], make_step, examples: tuple[torch.Tensor, ...]
                 ) -> torch.jit.ScriptModule:
        """The artifact of ``fields`` from the cache, or ``make_step()`` compiled for ``examples``."""

        def build():
            step = make_step()
            workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir_root()))
            try:
                module, tracer_warnings = trace_checked(self.compiler, step, examples, workdir)
            except Exception as exc:
                raise RuntimeError(f"{self.name}: compiling {name} failed; compiler workdir kept at {workdir}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            finally:
                if isinstance(step, IntermediatesStep):
                    step.recorder.remove()  # its hooks sit on the model's own modules
            shutil.rmtree(workdir, ignore_errors=True)
            return module, {"tracer_warnings": tracer_warnings}

        self.compiler.load_runtime()
        return load_or_build(self.cache, self.stats, bucket, name, fields, build)

    def compiler_fingerprint(self) -> str:
        """Eight hex digits of compiler, args and versions, so variants get distinct file names."""
        return artifact_key({"c": self.compiler.name, "a": list(self.compiler.args), "v": self.compiler.versions()})[:8]

    def workdir_root(self) -> Path:
        root = self.cache_dir / "work"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def environment(self) -> dict[str, Any]:
        env = {"compiler": self.compiler.name, "compiler_args": list(self.compiler.args),
               "versions": self.compiler.versions(), "buckets": [format_bucket(b) for b in self.buckets],
               "cache_dir": str(self.cache_dir), "cache": self.stats.to_dict()}
        if self.requirements.device == "neuron":
            env[NEURON_CC_FLAGS_ENV] = os.environ.get(NEURON_CC_FLAGS_ENV)
            env[VISIBLE_CORES_ENV] = os.environ.get(VISIBLE_CORES_ENV)
        return env


def build_targets() -> list[Target]:
    return [
        StaticShapeTarget("neuron", "fp32-reassoc", "torch_neuronx.trace, --auto-cast none (fp32), per shape bucket",
                          NeuronTraceCompiler("neuron-fp32", ("--auto-cast", "none")), device="neuron"),
        StaticShapeTarget("neuron-bf16", "bf16", "torch_neuronx.trace, --auto-cast all --auto-cast-type bf16",
                          NeuronTraceCompiler("neuron-bf16", ("--auto-cast", "all", "--auto-cast-type", "bf16")),
                          device="neuron"),
        StaticShapeTarget("torchscript-trace", "fp32-reassoc", "the Neuron pipeline on CPU: NeuronStep per shape bucket "
                          "through torch.jit.trace, artifact cache, host-side decode", JitTraceCompiler(), device="cpu",
                          intermediates=True),
    ]


TARGETS = build_targets
