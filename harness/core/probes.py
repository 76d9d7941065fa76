"""Core layer: can a target run on this machine? Each probe answers with the exact reason when it cannot.

Probes run when a test is set up, never at import or collection time: nothing here imports a
backend package or touches CUDA or Neuron until a test asks.
"""

from __future__ import annotations

import glob
import importlib
from dataclasses import dataclass
from functools import cache

# PyPI's torch-neuronx is a placeholder whose import raises ImportError("WRONG PACKAGE ...");
# importlib.util.find_spec is fooled by it, so we import for real and read the message.
PLACEHOLDER_MARKERS = ("WRONG PACKAGE",)


@dataclass(frozen=True)
class Availability:
    """Whether a target can run here; falsy when not, with the exact ``reason``."""

    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


AVAILABLE = Availability(True)


@cache
def probe_package(module: str, extra: str | None = None, distribution: str = "gpt-conformance") -> Availability:
    """Import ``module``; ImportError and OSError (a missing shared library) mean unavailable. The
    hint installs ``distribution`` with ``extra``, the distribution that declares that extra."""
    hint = f" (pip install '{distribution}[{extra}]')" if extra else ""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        text = str(exc)
        if any(marker in text for marker in PLACEHOLDER_MARKERS):
            return Availability(False, f"package {module!r} is PyPI's placeholder, not the real one: {text.splitlines()[0]}")
        return Availability(False, f"package {module!r} is not importable{hint}: {type(exc).__name__}: {text}")
    except OSError as exc:
        return Availability(False, f"package {module!r} failed to load a native library: {exc}")
    return AVAILABLE


@cache
def probe_cuda(min_capability: tuple[int, int] | None = None) -> Availability:
    import torch

    if not torch.cuda.is_available():
        return Availability(False, f"no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)")
    if min_capability is not None:
        have = torch.cuda.get_device_capability(0)
        if have < min_capability:
            name = torch.cuda.get_device_name(0)
            return Availability(False, f"CUDA device {name} has compute capability {have}, needs >= {min_capability}")
    return AVAILABLE


def probe_neuron_device() -> Availability:
    devices = sorted(glob.glob("/dev/neuron*"))
    if not devices:
        return Availability(False, "no Neuron device: /dev/neuron* does not exist (needs an AWS trn1/inf2 instance)")
    return AVAILABLE


def first_unavailable(*checks: Availability) -> Availability:
    for check in checks:
        if not check:
            return check
    return AVAILABLE
