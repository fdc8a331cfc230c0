"""Data-parallel training: the same script on 1 process, under torchrun, or self-launched.

    python examples/ddp_torchrun.py                         # 1 process
    python examples/ddp_torchrun.py --devices 2             # ftrain starts 2 workers
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nproc-per-node 2 examples/ddp_torchrun.py
    python examples/ddp_torchrun.py --devices 2 --strategy fsdp   # FSDP2, sharded checkpoints

Nothing in the step changes: ``fit`` joins the process group, wraps the model in
DDP, shards the data by (seed, epoch), averages the gradients, reduces the
``sync_dist`` metrics and the validation metrics over every rank, and lets rank 0
alone print, log and save. Each rank reads ``--batch_size`` samples per step, so 2
ranks train like 1 process reading twice the batch. Kill a run and start it again
with ``--ckpt_path last``: it resumes exactly, on any number of processes with the
same total batch. Add any fit flag: ``--max_epochs 5``, ``--precision bf16-mixed``...
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

import ftrain as ft


def make_data(n: int, seed: int, dim: int = 16, classes: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1234)  # the class centres are the same everywhere
    centres = torch.randn(classes, dim, generator=g) * 1.5
    g.manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + torch.randn(n, dim, generator=g) * 1.6, labels


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    logits = model(x)
    acc = (logits.argmax(1) == y).float().mean()
    # sync_dist: the logged value is the mean over all ranks (reduced at log points only).
    return F.cross_entropy(logits, y), {"train_acc": ft.log(acc, sync_dist=True, prog_bar=True)}


def val_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    logits = model(x)
    # Validation epoch values are always the whole validation set's, on every rank.
    return {
        "val_loss": F.cross_entropy(logits, y),
        "val_acc": (logits.argmax(1) == y).float().mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=32, help="samples per rank per step")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--ckpt_path", default=None, help="'last' to resume")
    ft.cli.add_fit_args(parser)
    args = parser.parse_args()
    config = ft.cli.config_from_args(args)
    if getattr(args, "log_every_n_steps", None) is None:
        config = config.replace(log_every_n_steps=10)
    if getattr(args, "max_epochs", None) is None and config.max_steps == -1:
        config = config.replace(max_epochs=3)

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    state = ft.TrainState.create(model, optimizer, seed=42)

    x, y = make_data(2048, seed=0)
    xv, yv = make_data(512, seed=1)
    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(x, y, batch_size=args.batch_size, shuffle=True),
        val_step=ft.eval_step(val_fn),
        val_data=ft.TensorLoader(xv, yv, batch_size=256, shuffle=False),
        ckpt_path=args.ckpt_path,
        config=config,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # every rank returns; one prints
        world = os.environ.get("WORLD_SIZE", "1")
        print(
            f"{world} process(es), {result.state.step} steps: "
            f"val_loss={result.metrics['val_loss']:.4f} val_acc={result.metrics['val_acc']:.3f}"
        )


if __name__ == "__main__":
    main()
