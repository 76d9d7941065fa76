"""Train the tiny char-level GPT that ships with the repo: nanoGPT's training loop, on CPU.

The corpus is the Zen of Python (the text ``import this`` prints, decoded from the stdlib), so
every Python installation can rebuild the model and every laptop can run greedy-text cases on
it. The model is meant to *memorise* the Zen: its greedy continuation of "Beautiful is" is
" better than ugly.". The last 10% of the text is held out as nanoGPT's val split, so the val
loss measures generalisation to unseen lines and is expected to stay high.

The loop is nanoGPT's ``train.py`` without the GPU and DDP parts: AdamW from
``configure_adamw`` (nanoGPT's ``configure_optimizers``), linear warmup then cosine decay to ``min_lr``, gradient clipping,
train/val loss estimated every ``eval_interval`` iterations. For a fixed seed and thread count it
is deterministic on one machine (batches come from a seeded generator, dropout is 0).

The same loop trains the nanochat-family twin (``--family nanochat``, ``reference/zen-nanochat/``):
nanochat's architecture (grouped-query attention, rotary embeddings, softcap) at the same size
(``ZEN_CONFIGS``), with AdamW in place of nanochat's Muon, so both models come from one loop.

    python -m gpt_conformance.reference.train                   # rewrites reference/zen/ (model + config)
    python -m gpt_conformance.reference.train --family nanochat # rewrites reference/zen-nanochat/
    python -m gpt_conformance.reference.train --out-dir /tmp/zen --max-iters 200
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from gpt_conformance.reference.checkpoint import load_checkpoint, save_checkpoint
from gpt_conformance.reference.families import FAMILIES, family_named
from gpt_conformance.reference.model import GPTConfig, configure_adamw
from gpt_conformance.reference.nanochat import NanochatConfig
from gpt_conformance.reference.tokenizers import CharTokenizer

ZEN_DIR = Path(__file__).parent / "zen"
ZEN_NANOCHAT_DIR = Path(__file__).parent / "zen-nanochat"


def zen_of_python() -> str:
    """The Zen of Python, decoded from ``this.s`` with ``this.d`` (rot13). Importing ``this``
    prints the poem, so the first import runs with stdout captured."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return "".join(this.d.get(c, c) for c in this.s)


@dataclass(frozen=True)
class TrainConfig:
    # model
    family: str = "nanogpt"  # a name in reference.families.FAMILIES
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    n_kv_head: int | None = None  # nanochat only: key/value heads (default n_head)
    block_size: int = 64  # nanochat's sequence_len
    dropout: float = 0.0
    bias: bool = True
    # data
    batch_size: int = 16
    val_fraction: float = 0.1
    # optimiser (nanoGPT's names)
    learning_rate: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 100
    max_iters: int = 1500
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    # evaluation and logging
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 50
    # reproducibility
    seed: int = 1337
    threads: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "log_interval", "threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_iters < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig.warmup_iters and grad_clip must be >= 0")
        family_named(self.family)  # an unknown family names the known ones
        if self.family == "nanochat" and (self.bias or self.dropout):
            raise ValueError("TrainConfig: nanochat has no biases and no dropout: set bias=False, dropout=0")
        if self.family != "nanochat" and self.n_kv_head is not None:
            raise ValueError(f"TrainConfig.n_kv_head is nanochat's; family {self.family!r} has none")

    def model_config(self, vocab_size: int) -> GPTConfig | NanochatConfig:
        if self.family == "nanochat":
            return NanochatConfig(sequence_len=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                                  n_head=self.n_head, n_kv_head=self.n_kv_head or self.n_head, n_embd=self.n_embd)
        return GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias)


# The shipped models' training runs, of one size. nanochat's has grouped-query attention (two query
# heads per kv head), so the kv-head order shows in its greedy text. (At 32 wide, int4 weights in
# blocks of 32 flipped a token of its greedy text where the reference's margin was 8.8.)
ZEN_CONFIGS = {
    "nanogpt": TrainConfig(),
    "nanochat": TrainConfig(family="nanochat", n_kv_head=2, bias=False),
}
ZEN_DIRS = {"nanogpt": ZEN_DIR, "nanochat": ZEN_NANOCHAT_DIR}


def learning_rate_at(it: int, cfg: TrainConfig) -> float:
    """nanoGPT's schedule: linear warmup, then cosine decay from learning_rate to min_lr."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.max_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def get_batch(data: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``block_size`` tokens and their next-token targets."""
    ix = torch.randint(len(data) - cfg.block_size, (cfg.batch_size,), generator=generator)
    x = torch.stack([data[i : i + cfg.block_size] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + cfg.block_size] for i in ix.tolist()])
    return x, y


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, splits: dict[str, torch.Tensor], cfg: TrainConfig, generator: torch.Generator) -> dict[str, float]:
    model.eval()
    family = family_named(cfg.family)
    out = {}
    for name, data in splits.items():
        losses = [float(family.loss(model, *get_batch(data, cfg, generator))) for _ in range(cfg.eval_iters)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


@dataclass
class TrainResult:
    model: torch.nn.Module
    tokenizer: CharTokenizer
    losses: dict[str, float]
    seconds: float
    history: list[dict]


def train(cfg: TrainConfig, text: str | None = None, log=print) -> TrainResult:
    """Train a char-level model of ``cfg.family`` on ``text`` (default: the Zen of Python)."""
    text = zen_of_python() if text is None else text
    tokenizer = CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n_train = int(len(data) * (1.0 - cfg.val_fraction))
    splits = {"train": data[:n_train], "val": data[n_train:]}
    for name, split in splits.items():
        if len(split) <= cfg.block_size:
            raise ValueError(f"{name} split has {len(split)} tokens, needs more than block_size={cfg.block_size}")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the reduction order (and so the bits) depends on it
    try:
        torch.manual_seed(cfg.seed)
        batches = torch.Generator().manual_seed(cfg.seed)
        evals = torch.Generator().manual_seed(cfg.seed + 1)
        family = family_named(cfg.family)
        model = family.model_type(cfg.model_config(tokenizer.vocab_size))
        model.train()
        optimizer = configure_adamw(model, cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), "cpu")
        history: list[dict] = []
        start = time.perf_counter()
        for it in range(cfg.max_iters + 1):
            lr = learning_rate_at(it, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                losses = estimate_loss(model, splits, cfg, evals)
                history.append({"iter": it, **losses})
                log(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if it == cfg.max_iters:
                break
            x, y = get_batch(splits["train"], cfg, batches)
            loss = family.loss(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if it % cfg.log_interval == 0:
                elapsed = time.perf_counter() - start
                eta = elapsed / (it + 1) * (cfg.max_iters - it - 1)
                log(f"iter {it:>5}/{cfg.max_iters} [{progress_bar(it + 1, cfg.max_iters)}] "
                    f"loss {loss.item():.4f} lr {lr:.2e} elapsed {elapsed:.1f}s eta {eta:.1f}s")
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    final = {split: history[-1][split] for split in splits}
    return TrainResult(model.eval(), tokenizer, final, seconds, history)


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // total
    return "#" * filled + "." * (width - filled)


def save_trained(result: TrainResult, cfg: TrainConfig, out_dir: str | Path) -> Path:
    extra = {
        "tokenizer": result.tokenizer.to_dict(),
        "training": asdict(cfg),
        "final_losses": {k: round(v, 4) for k, v in result.losses.items()},
        "loss_history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in result.history],
        "train_seconds": round(result.seconds, 1),
        "trained_with": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "corpus": "the Zen of Python (stdlib module `this`), last val_fraction held out",
    }
    return save_checkpoint(result.model, out_dir, extra=extra)


def load_zen_model(directory: str | Path = ZEN_DIR, dtype: torch.dtype = torch.float32
                   ) -> tuple[torch.nn.Module, CharTokenizer]:
    """A shipped tiny model (nanoGPT's by default; ``ZEN_NANOCHAT_DIR`` for nanochat's) and its tokenizer."""
    model = load_checkpoint(directory, dtype=dtype)
    meta = json.loads((Path(directory) / "config.json").read_text())
    return model, CharTokenizer.from_dict(meta["tokenizer"])


def parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_conformance.reference.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=None,
                        help=f"where to save (default {ZEN_DIR}; with --family nanochat, {ZEN_NANOCHAT_DIR})")
    for f in fields(TrainConfig):
        if f.name == "family":
            parser.add_argument("--family", choices=sorted(FAMILIES), default="nanogpt",
                                help="the model family; its shipped model's training run is the default of every "
                                     "other option (default nanogpt)")
            continue
        kind = parse_bool if isinstance(f.default, bool) else int if f.name == "n_kv_head" else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, metavar="VALUE",
                            help=f"default {getattr(ZEN_CONFIGS['nanogpt'], f.name)} "
                                 f"(nanochat: {getattr(ZEN_CONFIGS['nanochat'], f.name)})")
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if f.name != "family" and getattr(args, f.name) is not None}
    cfg = replace(ZEN_CONFIGS[args.family], **overrides)
    result = train(cfg)
    out = save_trained(result, cfg, args.out_dir or ZEN_DIRS[args.family])
    print(f"trained in {result.seconds:.1f}s; final losses {result.losses}; saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
