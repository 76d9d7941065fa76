"""Core layer: logit and loss metrics against the fp64 oracle, computed in row chunks.

GPT-2's logits for 4x1024 tokens are 0.8 GB in fp32, so nothing here materialises a full-size
fp64 copy or difference tensor: rows are processed ``chunk_rows`` at a time and only scalars are
accumulated.
"""

from __future__ import annotations

import math

import torch

TOP_K = 5
# Aim for ~16 MB of fp64 per chunk whatever the vocabulary: 2**21 elements.
CHUNK_ELEMENTS = 1 << 21


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def logit_metrics(target: torch.Tensor, truth: torch.Tensor, top_k: int = TOP_K) -> dict[str, float]:
    """Compare ``target`` logits with ``truth`` (fp64) over the last (vocabulary) dimension.

    Returns max_abs, max_rel (max |diff| / max |truth|: relative to the logit range, as NxDI's
    neuron_allclose; elementwise relative error explodes near zero logits), rmse, cosine (over
    all elements), top1_agreement and topk_overlap (fractions of positions), kl_mean and kl_max
    (KL(truth || target) in nats per position), nonfinite (count), and numel.
    """
    if target.shape != truth.shape:
        raise ValueError(f"logit shapes differ: target {tuple(target.shape)} vs truth {tuple(truth.shape)}")
    t_rows, r_rows = _rows(target), _rows(truth)
    n_rows, vocab = r_rows.shape
    k = min(top_k, vocab)
    chunk = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    acc = dict(max_abs=0.0, ref_max=0.0, sq=0.0, dot=0.0, tt=0.0, rr=0.0, top1=0, overlap=0, kl=0.0, kl_max=0.0,
               nonfinite=0)
    for start in range(0, n_rows, chunk):
        t = t_rows[start:start + chunk].to(torch.float64)
        r = r_rows[start:start + chunk].to(torch.float64)
        finite = torch.isfinite(t)
        acc["nonfinite"] += int((~finite).sum())
        if not bool(finite.all()):
            continue
        diff = t - r
        acc["max_abs"] = max(acc["max_abs"], float(diff.abs().max()))
        acc["ref_max"] = max(acc["ref_max"], float(r.abs().max()))
        acc["sq"] += float((diff * diff).sum())
        acc["dot"] += float((t * r).sum())
        acc["tt"] += float((t * t).sum())
        acc["rr"] += float((r * r).sum())
        acc["top1"] += int((t.argmax(-1) == r.argmax(-1)).sum())
        t_top, r_top = t.topk(k, dim=-1).indices, r.topk(k, dim=-1).indices
        acc["overlap"] += int((t_top.unsqueeze(-1) == r_top.unsqueeze(-2)).any(-1).sum())
        log_p, log_q = torch.log_softmax(r, -1), torch.log_softmax(t, -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        acc["kl"] += float(kl.sum())
        acc["kl_max"] = max(acc["kl_max"], float(kl.max()))
    numel = n_rows * vocab
    if acc["nonfinite"]:
        nan = math.nan
        return dict(max_abs=nan, max_rel=nan, rmse=nan, cosine=nan, top1_agreement=nan, topk_overlap=nan,
                    kl_mean=nan, kl_max=nan, nonfinite=float(acc["nonfinite"]), numel=float(numel))
    norm = math.sqrt(acc["tt"] * acc["rr"])
    return dict(
        max_abs=acc["max_abs"],
        max_rel=acc["max_abs"] / acc["ref_max"] if acc["ref_max"] else (0.0 if acc["max_abs"] == 0 else math.inf),
        rmse=math.sqrt(acc["sq"] / numel),
        cosine=acc["dot"] / norm if norm else (1.0 if acc["sq"] == 0 else 0.0),
        top1_agreement=acc["top1"] / n_rows,
        topk_overlap=acc["overlap"] / (n_rows * k),
        kl_mean=max(acc["kl"] / n_rows, 0.0),
        kl_max=max(acc["kl_max"], 0.0),
        nonfinite=0.0,
        numel=float(numel),
    )


def elementwise_metrics(target: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """The elementwise part of ``logit_metrics`` for any activation (a hidden state has no
    distribution to take a top-1 or a KL of): max_abs, max_rel (over max |truth|), rmse,
    nonfinite, numel. Hidden states are small next to logits, so no chunking."""
    if target.shape != truth.shape:
        raise ValueError(f"shapes differ: target {tuple(target.shape)} vs truth {tuple(truth.shape)}")
    t, r = target.to(torch.float64), truth.to(torch.float64)
    numel = float(r.numel())
    nonfinite = int((~torch.isfinite(t)).sum())
    if nonfinite:
        nan = math.nan
        return dict(max_abs=nan, max_rel=nan, rmse=nan, nonfinite=float(nonfinite), numel=numel)
    diff = (t - r).abs()
    max_abs, ref_max = float(diff.max()) if numel else 0.0, float(r.abs().max()) if numel else 0.0
    return dict(max_abs=max_abs,
                max_rel=max_abs / ref_max if ref_max else (0.0 if max_abs == 0 else math.inf),
                rmse=math.sqrt(float((diff * diff).sum()) / numel) if numel else 0.0,
                nonfinite=0.0, numel=numel)


def loss_metrics(target_loss: torch.Tensor | float | None, truth_loss: torch.Tensor | float) -> dict[str, float]:
    """loss_abs: |target - truth|; loss_rel: that over |truth|; nonfinite: 1 if the loss is NaN/Inf;
    loss and loss_truth: the two losses (a loss gate's floor scales with |loss_truth|)."""
    if target_loss is None:
        raise ValueError("target returned no loss")
    t, r = float(target_loss), float(truth_loss)
    if not math.isfinite(t):
        return dict(loss=t, loss_truth=r, loss_abs=math.nan, loss_rel=math.nan, nonfinite=1.0)
    delta = abs(t - r)
    return dict(loss=t, loss_truth=r, loss_abs=delta, loss_rel=delta / abs(r) if r else delta, nonfinite=0.0)


def abs_error_histogram(target: torch.Tensor, truth: torch.Tensor, bins: int = 24) -> dict[str, list[float]]:
    """Histogram of log10 |target - truth| (edges in decades), computed in row chunks, for reports."""
    t_rows, r_rows = _rows(target), _rows(truth)
    vocab = r_rows.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    lo, hi = -16.0, 2.0
    counts = torch.zeros(bins, dtype=torch.float64)
    for start in range(0, r_rows.shape[0], chunk):
        d = (t_rows[start:start + chunk].to(torch.float64) - r_rows[start:start + chunk].to(torch.float64)).abs()
        d = d[torch.isfinite(d)]
        logd = torch.log10(d.clamp_min(10.0 ** lo)).clamp(lo, hi - 1e-9)
        counts += torch.histc(logd, bins=bins, min=lo, max=hi)
    edges = [lo + i * (hi - lo) / bins for i in range(bins + 1)]
    return {"log10_edges": edges, "counts": counts.tolist()}
