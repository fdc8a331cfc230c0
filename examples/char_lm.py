"""A character-level transformer language model on a small bundled text.

Run: python examples/char_lm.py [--max_epochs 10] [--d_model 64] [any fit flag]

The text (examples/data/tiny.txt, ~20 KB of generated sentences) is cut into
windows of `block_size + 1` characters; the model predicts each next character.
The training step shows the usual recipe of a small LM, each part one setting:
bf16 autocast, gradient accumulation, gradient clipping, and a warmup + cosine
learning-rate schedule stepped after every optimizer step. At the end the model
writes a few lines of its own.
"""

from __future__ import annotations

import argparse
import math
import os

import toolz
import torch
import torch.nn.functional as F
from torch import nn

import ftrain as ft

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tiny.txt")


class CharTransformer(nn.Module):
    """Token and position embeddings, causal self-attention blocks, a linear head."""

    def __init__(self, vocab: int, block_size: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model)
        self.positions = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        h = self.tokens(idx) + self.positions(torch.arange(t, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=idx.device)
        for block in self.blocks:
            h = block(h, src_mask=mask, is_causal=True)
        return self.head(self.norm(h))


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def val_metrics(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    loss = lm_loss(model, batch)
    return {"val_loss": ft.log(loss, prog_bar=True), "val_bits_per_char": loss / math.log(2)}


def warmup_cosine(warmup: int, total: int):
    """lr multiplier: linear warmup, then a cosine decay to 10% at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def sample(model: nn.Module, prompt: torch.Tensor, n: int, block_size: int) -> torch.Tensor:
    model.eval()
    g = torch.Generator().manual_seed(0)
    idx = prompt[None]
    for _ in range(n):
        logits = model(idx[:, -block_size:])[:, -1].float()
        probs = (logits / 0.8).softmax(-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=g)], dim=1)
    return idx[0]


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block_size", type=int, default=32)
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--sample_chars", type=int, default=160)
    config, args = ft.cli.parse_config(argv, parser=parser)
    defaults = {"max_epochs": 10, "log_every_n_steps": 10, "default_root_dir": "runs/char_lm"}
    # Our defaults apply to the flags that neither the command line nor a file set.
    unset = ft.FitConfig()
    config = config.replace(
        **{k: v for k, v in defaults.items() if getattr(config, k) == getattr(unset, k)}
    )
    torch.set_num_threads(1)  # a model this small runs best on one core
    ft.seed_everything(0, verbose=False)

    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    encode = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([encode[c] for c in text])
    n = args.block_size + 1
    windows = data.unfold(0, n, args.block_size // 2)  # overlapping windows of n characters
    split = int(0.9 * len(windows))
    train = ft.TensorLoader(windows[:split, :-1], windows[:split, 1:], batch_size=args.batch_size)
    val = ft.TensorLoader(
        windows[split:, :-1], windows[split:, 1:], batch_size=args.batch_size, shuffle=False
    )

    model = CharTransformer(len(chars), args.block_size, args.d_model, args.layers, args.heads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    steps_per_epoch = math.ceil(len(train) / args.accumulate)
    total = steps_per_epoch * config.resolved_max_epochs()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total // 10 + 1, total))
    state = ft.TrainState.create(
        model, optimizer, ft.SchedulerConfig(schedule, interval="step"), seed=0
    )

    step = toolz.pipe(
        ft.train_step(lm_loss),
        ft.precision("bf16-mixed"),
        ft.accumulate(args.accumulate),
        ft.clip_grad_norm(1.0),
    )
    print(step)
    result = ft.fit(
        state,
        step,
        train,
        val_step=ft.eval_step(val_metrics),
        val_data=val,
        callbacks=[ft.LearningRateMonitor()],
        hparams=vars(args),
        config=config,
    )
    print(f"val_loss {result.metrics['val_loss']:.3f} after {result.state.step} optimizer steps")
    out = sample(
        result.state.model, data[: args.block_size // 2], args.sample_chars, args.block_size
    )
    print("".join(chars[i] for i in out.tolist()))
    return result


if __name__ == "__main__":
    main()
