"""Core layer: machine-readable records: one JSON line per check, appended and flushed as the run goes, so a
crash loses nothing already checked."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from gpt_conformance.harness.core.policies import Verdict
    from gpt_conformance.harness.core.targets import Target

RECORD_SCHEMA = 1


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Where this run happened: versions, platform, CPU and the git commit of the checkout."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "git_commit": _git_commit(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _jsonable(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as strings so a non-finite metric stays visible."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Size):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class CheckRecord:
    """One check of ``target`` on ``case``, before it is written as a records line.

    A judged check carries its ``verdict`` (status, policy, message, metrics and gates come from
    it; ``status`` and ``message``, when given, replace the verdict's). A check that was not judged
    (a skip, a crash before any verdict, a measurement) carries ``status`` and ``message`` alone.
    ``config`` is the model's config (or a dict); ``extra`` holds the check's own fields."""

    target: Target
    case: str
    check: str
    verdict: Verdict | None = None
    status: str | None = None
    message: str = ""
    config: Any = None
    input_shape: tuple | None = None
    seed: Any = None
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resolved_status()  # a record with neither a verdict nor a status is refused here

    def resolved_status(self) -> str:
        """``status`` when given, else the verdict's."""
        if self.status is not None:
            return self.status
        if self.verdict is not None:
            return self.verdict.status
        raise ValueError(f"record of {self.check!r} on {self.case!r} for {self.target.name!r}: "
                         f"a record needs a verdict or a status")

    def body(self) -> dict[str, Any]:
        """The records line's fields, without the ones the writer and the session add."""
        verdict, target = self.verdict, self.target
        config = self.config.to_dict() if hasattr(self.config, "to_dict") else self.config
        return {
            "target": target.name,
            "precision": target.precision,
            "device": target.requirements.device,
            "case": self.case,
            "check": self.check,
            "config": config if config is not None else {},
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "seed": self.seed,
            "status": self.resolved_status(),
            "policy": verdict.policy if verdict else target.precision,
            "message": self.message or (verdict.message if verdict else ""),
            "metrics": verdict.metrics if verdict else {},
            "baseline": verdict.baseline if verdict else {},
            "gates": [g.__dict__ for g in verdict.gates] if verdict else [],
            "duration_s": self.duration,
            "target_environment": target.environment(),
            **self.extra,
        }


class RecordWriter:
    """Appends records to ``path`` (JSON Lines), one flushed line per check. Its directory is created
    with the first record: a run that writes none leaves nothing behind."""

    def __init__(self, path: str | Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        self.count = 0

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        full = {"schema": RECORD_SCHEMA, "run_id": self.run_id, "time": time.time(), **record,
                "environment": environment()}
        line = json.dumps(_jsonable(full), sort_keys=True, allow_nan=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
        self.count += 1
        return full


def read_records(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Read JSON-Lines record files (or directories of ``*.jsonl``); a corrupt line is an error
    that names its file and line, never skipped silently."""
    records = []
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("**/*.jsonl")) if p.is_dir() else [p])
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{f}:{lineno}: not a JSON record: {exc}") from exc
    return records
