"""Char-level GPT pretraining from a token file, as nanoGPT trains: iteration-based.

Run: python examples/gpt_pretrain.py [--max_steps 600] [--val_check_interval 100] [--resume]

1. The bundled text is encoded once into train.bin / val.bin (uint16 token ids) and
   read back as np.memmap: a batch reads only its windows' pages, so the file may be
   far larger than memory.
2. Training batches are ft.RandomWindows: batch k is a pure function of (seed, k, rank).
   There are no epochs; the run is max_steps long. A resume draws batch k directly
   (nothing replayed), and DDP ranks draw their parts of one global batch.
3. Every val_check_interval steps, ft.per_validation makes fresh evaluation windows,
   seeded by (seed, validation index): nanoGPT's estimate_loss, exact on resume.
4. A checkpoint every --ckpt_every steps; after a crash (even kill -9), --resume
   continues from the newest and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import ftrain as ft

TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tiny.txt")


class GPT(nn.Module):
    """Token and position embeddings, causal pre-norm attention blocks, a linear head."""

    def __init__(self, vocab: int, block_size: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model)
        self.positions = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, dropout=0.1, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        h = self.tokens(idx) + self.positions(torch.arange(t, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=idx.device)
        for block in self.blocks:
            h = block(h, src_mask=mask, is_causal=True)
        return self.head(self.norm(h))


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def val_metrics(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    return {"val_loss": ft.log(lm_loss(model, batch), prog_bar=True)}


def token_files(folder: str) -> tuple[np.memmap, np.memmap, int]:
    """Encode the text into train.bin / val.bin once (90/10); map them read-only."""
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    os.makedirs(folder, exist_ok=True)
    ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
    split = int(0.9 * len(ids))
    for name, part in (("train", ids[:split]), ("val", ids[split:])):
        path = os.path.join(folder, f"{name}.bin")
        if not os.path.exists(path):
            part.tofile(path)
    train, val = (
        np.memmap(os.path.join(folder, f"{n}.bin"), dtype=np.uint16, mode="r")
        for n in ("train", "val")
    )
    return train, val, len(chars)


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval_batches", type=int, default=8)
    parser.add_argument("--ckpt_every", type=int, default=100)
    parser.add_argument("--resume", action="store_true")
    config, args = ft.cli.parse_config(argv, parser=parser)
    defaults = {"max_steps": 600, "val_check_interval": 100, "default_root_dir": "runs/gpt"}
    unset = ft.FitConfig()  # our defaults apply where neither the command line nor a file set
    config = config.replace(
        **{k: v for k, v in defaults.items() if getattr(config, k) == getattr(unset, k)}
    )
    torch.set_num_threads(1)

    root = os.fspath(config.default_root_dir)
    train_tokens, val_tokens, vocab = token_files(os.path.join(root, "data"))
    train = ft.RandomWindows(train_tokens, args.block_size, args.batch_size)  # endless

    def fresh_val(seed: int) -> ft.RandomWindows:  # called at every validation run
        return ft.RandomWindows(
            val_tokens, args.block_size, args.batch_size, num_batches=args.eval_batches, seed=seed
        )

    torch.manual_seed(0)
    model = GPT(vocab, args.block_size, args.d_model, args.layers, args.heads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    state = ft.TrainState.create(model, optimizer, seed=1337)
    result = ft.fit(
        state,
        ft.clip_grad_norm(1.0)(ft.train_step(lm_loss)),
        train,
        val_step=ft.eval_step(val_metrics),
        val_data=ft.per_validation(fresh_val),
        checkpoint=ft.checkpoint.ModelCheckpoint(every_n_train_steps=args.ckpt_every),
        ckpt_path="last" if args.resume else None,
        config=config,
    )
    weights = b"".join(p.detach().cpu().numpy().tobytes() for p in result.state.model.parameters())
    print(f"step {result.state.step}: val_loss {result.metrics['val_loss']:.4f}")
    print(f"weights sha256 {hashlib.sha256(weights).hexdigest()[:16]}")
    return result


if __name__ == "__main__":
    main()
