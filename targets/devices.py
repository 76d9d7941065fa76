"""Torch targets on a device other than the CPU: the model's copy on the device, outputs back on
the CPU (where the harness judges them), and TF32 set for one call and restored after it.

Shared by ``targets/cuda.py`` and ``targets/inductor.py``. Nothing here touches CUDA unless a
target asks for a CUDA device; on a CPU device every function is a no-op or a plain copy, which
is how the CUDA targets' code is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy

import torch


def on_device(model: torch.nn.Module, device: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``model`` in eval mode on ``device`` (and in ``dtype``): the model itself where it is already
    there, else a copy, so the caller's CPU model is never moved."""
    params = list(model.parameters())
    here = not params or (params[0].device.type == torch.device(device).type and dtype in (None, params[0].dtype))
    moved = model if here else deepcopy(model).to(device=device, dtype=dtype)
    return moved.eval()


def outputs_to_cpu(out: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, loss) on the CPU. From a GPU this copy waits for the kernels that produce them."""
    logits, loss = out
    return logits.cpu(), None if loss is None else loss.cpu()


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls (``torch.backends.cuda.matmul.allow_tf32``) and cuDNN
    (``torch.backends.cudnn.allow_tf32``) on or off inside the block, and as before after it, even
    when the block raises. torch's switches are process-wide: without the restore, one target's
    setting would leak into the next target's run.

    These two flags exist on every torch this harness supports (>= 2.5). torch >= 2.9 adds
    per-backend ``fp32_precision`` settings and keeps the flags as views of them; writing the
    new ones and reading the old ones makes torch warn about mixing APIs, so only the flags are
    used. (A user's ``set_float32_matmul_precision("medium")`` comes back as "high".)"""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
