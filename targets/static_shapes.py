"""Static-shape plumbing for compiled targets (Neuron, TorchScript): shape buckets, padding and
the on-disk artifact cache. Nothing here knows which compiler made an artifact.

- **Buckets**: a compiled graph takes one fixed (batch, seq_len). An input is right-padded up
  to the smallest bucket that holds it (rows too); a bucket longer than the model's
  ``block_size`` is cut to ``block_size`` for that model, since positions past it do not exist.
- **Artifact cache**: one TorchScript file per (compiler, bucket, model) with a JSON sidecar
  holding the full key and the file's sha256. A missing, unreadable, mismatched or corrupt
  artifact is reported (``ArtifactCacheWarning``) and rebuilt, never used. The same cache holds
  the torch.export programs of ``gpt_conformance.targets.capture`` in their own format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gpt_conformance.reference.goldens import sha256_file

Bucket = tuple[int, int]
ARTIFACT_FORMAT = 1
# Recent torch releases deprecate torch.jit.*; Neuron's artifacts are TorchScript (torch_neuronx.trace
# returns a ScriptModule), so these calls are the format itself, and the warning says nothing new.
JIT_DEPRECATION = re.compile(r"`torch\.jit\.\w+` is deprecated")


@contextmanager
def jit_deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION.pattern, category=DeprecationWarning)
        yield


class BucketError(ValueError):
    """An input that no shape bucket holds."""


def parse_buckets(text: str) -> tuple[Bucket, ...]:
    """``"1x32,8x32"`` -> ((1, 32), (8, 32)); a malformed entry raises ValueError naming it."""
    buckets = []
    for item in (part.strip() for part in text.split(",")):
        try:
            batch, seq_len = (int(n) for n in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape bucket {item!r} is not BATCHxSEQ_LEN (for example 8x32)") from None
        buckets.append(validate_bucket((batch, seq_len)))
    if not buckets:
        raise ValueError("no shape buckets given")
    return tuple(buckets)


def validate_bucket(bucket: Bucket) -> Bucket:
    batch, seq_len = bucket
    if batch < 1 or seq_len < 1:
        raise ValueError(f"shape bucket {batch}x{seq_len}: batch and seq_len must be >= 1")
    return (batch, seq_len)


def format_bucket(bucket: Bucket) -> str:
    return f"{bucket[0]}x{bucket[1]}"


def select_bucket(buckets: Sequence[Bucket], batch: int, seq_len: int, block_size: int) -> Bucket:
    """The smallest bucket (fewest elements, then shortest, then narrowest) holding a
    ``batch x seq_len`` input, with its seq_len cut to ``block_size``."""
    usable = sorted({(b, min(s, block_size)) for b, s in buckets}, key=lambda b: (b[0] * b[1], b[1], b[0]))
    fitting = [b for b in usable if batch <= b[0] and seq_len <= b[1]]
    if fitting:
        return fitting[0]
    largest = max(buckets, key=lambda b: (b[1], b[0]))
    raise BucketError(
        f"input of batch {batch}, seq_len {seq_len} fits no shape bucket: the largest bucket is "
        f"{format_bucket(largest)} (batch x seq_len, seq_len capped at block_size {block_size}); "
        f"buckets: {', '.join(format_bucket(b) for b in buckets)}")


def pad_to_bucket(idx: torch.Tensor, bucket: Bucket, pad_id: int = 0) -> torch.Tensor:
    """Right-pad the token ids to the bucket's shape; padded rows are all ``pad_id``. Causal
    attention keeps pads out of every real position, so any valid token id works as a pad."""
    batch, seq_len = idx.shape
    padded = torch.full(bucket, pad_id, dtype=torch.long)
    padded[:batch, :seq_len] = idx
    return padded


# --- cache keys ----------------------------------------------------------------------------------

def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every state-dict tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def artifact_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# --- the cache -----------------------------------------------------------------------------------

class ArtifactCacheWarning(UserWarning):
    """A cached artifact could not be used (corrupt, mismatched); it is being rebuilt."""


@dataclass
class CacheEvent:
    bucket: str
    status: str  # "hit" | "miss" | "rebuilt"
    path: str
    seconds: float
    reason: str = ""


@dataclass
class CacheStats:
    """Per-bucket hit/miss/rebuilt counts and the latest event, for the target's records."""

    per_bucket: dict[str, dict[str, int]] = field(default_factory=dict)
    last: CacheEvent | None = None
    compiles: int = 0
    compile_seconds: float = 0.0

    def add(self, event: CacheEvent) -> None:
        counts = self.per_bucket.setdefault(event.bucket, {"hit": 0, "miss": 0, "rebuilt": 0})
        counts[event.status] += 1
        self.last = event

    def to_dict(self) -> dict[str, Any]:
        return {"per_bucket": {k: dict(v) for k, v in self.per_bucket.items()},
                "last": None if self.last is None else self.last.__dict__.copy(),
                "compiles": self.compiles, "compile_seconds": round(self.compile_seconds, 3)}


@dataclass(frozen=True)
class ArtifactFormat:
    """How artifacts are written and read: a file suffix, ``save(obj, path)`` and ``load(path)``."""

    suffix: str
    loader: str  # named in the reason an unloadable artifact is rebuilt
    save: Callable[[Any, str], None]
    load: Callable[[str], Any]


def jit_save(module: torch.jit.ScriptModule, path: str) -> None:
    with jit_deprecation_silenced():
        torch.jit.save(module, path)


def jit_load(path: str) -> torch.jit.ScriptModule:
    with jit_deprecation_silenced():
        return torch.jit.load(path)


TORCHSCRIPT = ArtifactFormat(".pt", "torch.jit.load", jit_save, jit_load)


class ArtifactCache:
    """``<dir>/<name>.pt`` (``torch.jit.save``, or the suffix of another ``ArtifactFormat``) plus
    ``<dir>/<name>.json`` (key, fields, sha256).

    Writes go to a temporary file and are renamed into place, artifact first, so a crash or a
    concurrent writer (another xdist worker) leaves either a complete pair or a pair whose
    sidecar does not match, which is detected and rebuilt. Past ``max_bytes`` the least
    recently used artifacts are deleted."""

    def __init__(self, directory: Path, max_bytes: int, artifact_format: ArtifactFormat = TORCHSCRIPT):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.format = artifact_format

    def paths(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}{self.format.suffix}", self.directory / f"{name}.json"

    def load(self, name: str, key: str) -> tuple[Any, str]:
        """(module, "") on a hit; (None, "") when absent; (None, reason) when unusable."""
        artifact, sidecar = self.paths(name)
        if not artifact.exists() and not sidecar.exists():
            return None, ""
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            return None, f"sidecar {sidecar.name} unreadable ({type(exc).__name__}: {exc})"
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None, f"sidecar {sidecar.name} holds key {str(meta.get('key') if isinstance(meta, dict) else meta)[:16]}..., expected {key[:16]}... (mismatched artifact)"
        if not artifact.exists():
            return None, f"artifact {artifact.name} missing"
        actual = sha256_file(artifact)
        if actual != meta.get("artifact_sha256"):
            return None, f"artifact {artifact.name} sha256 {actual[:16]}... != sidecar's {str(meta.get('artifact_sha256'))[:16]}... (corrupt)"
        try:
            module = self.format.load(str(artifact))
        except Exception as exc:  # any load failure means the file is unusable, and is reported
            return None, f"{self.format.loader}({artifact.name}) failed: {type(exc).__name__}: {exc}"
        os.utime(artifact)  # least recently used pruning reads mtimes
        return module, ""

    def save(self, name: str, key: str, module: Any, fields: dict[str, Any], extra: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        artifact, sidecar = self.paths(name)
        tmp = artifact.with_name(f".{artifact.name}.{os.getpid()}.tmp")
        self.format.save(module, str(tmp))
        meta = {"format": ARTIFACT_FORMAT, "key": key, "fields": fields, "artifact_sha256": sha256_file(tmp),
                "artifact_bytes": tmp.stat().st_size, "created": time.time(), **extra}
        os.replace(tmp, artifact)
        tmp_meta = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp_meta, sidecar)
        self.prune(keep=artifact)
        return artifact

    def prune(self, keep: Path) -> None:
        stats = {}
        for path in self.directory.glob(f"*{self.format.suffix}"):
            try:
                stats[path] = path.stat()
            except FileNotFoundError:  # another worker pruned it meanwhile
                continue
        total = sum(st.st_size for st in stats.values())
        for path in sorted(stats, key=lambda p: stats[p].st_mtime):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            total -= stats[path].st_size
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)


def load_or_build(cache: ArtifactCache, stats: CacheStats, bucket: Bucket, name: str, fields: dict[str, Any],
                  build: Callable[[], tuple[torch.jit.ScriptModule, dict[str, Any]]]) -> torch.jit.ScriptModule:
    """The cached artifact for ``fields``, or ``build()`` it (returning the module and extra
    sidecar metadata), save it and count the event."""
    key = artifact_key(fields)
    start = time.perf_counter()
    module, problem = cache.load(name, key)
    path = cache.paths(name)[0]
    if module is not None:
        stats.add(CacheEvent(format_bucket(bucket), "hit", str(path), time.perf_counter() - start))
        return module
    if problem:
        warnings.warn(ArtifactCacheWarning(f"{path}: {problem}; rebuilding it"), stacklevel=2)
    module, extra = build()
    seconds = time.perf_counter() - start
    stats.compiles += 1
    stats.compile_seconds += seconds
    cache.save(name, key, module, fields, {"build_seconds": seconds, **extra})
    stats.add(CacheEvent(format_bucket(bucket), "rebuilt" if problem else "miss", str(path), seconds, problem))
    return module
