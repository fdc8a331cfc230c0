"""The demo: a small classifier on generated data, trained on the CPU with validation.

Run: python examples/demo.py [--max_epochs 5] [--precision bf16-mixed] [any fit flag]

Data: 4 classes of points in 16 dimensions, each class a noisy Gaussian blob around
its own centre, generated from a fixed seed (no download). The model is a 2-layer
MLP; chance accuracy is 25%. It logs every 4 steps (16 points per epoch) so the
TensorBoard curves show learning; the CUSTOM SCALARS tab overlays loss and val_loss.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch
import torch.nn.functional as F

import ftrain as ft


def make_data(
    n: int, seed: int, dim: int = 16, classes: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)  # the class centres are fixed
    centres = torch.randn(classes, dim, generator=g) * 1.5
    g.manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    points = centres[labels] + torch.randn(n, dim, generator=g) * 1.6
    return points, labels


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    logits = model(x)
    acc = (logits.argmax(1) == y).float().mean()
    return F.cross_entropy(logits, y), {"train_acc": ft.log(acc, prog_bar=True)}


def val_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    logits = model(x)
    acc = (logits.argmax(1) == y).float().mean()
    return {"val_loss": F.cross_entropy(logits, y), "val_acc": ft.log(acc, prog_bar=True)}


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4096)
    ft.cli.add_fit_args(parser)
    args = parser.parse_args(argv)
    config = ft.cli.config_from_args(
        args,
        **({} if "max_epochs" in vars(args) else {"max_epochs": 5}),
        **({} if "default_root_dir" in vars(args) else {"default_root_dir": "runs/demo"}),
        **({} if "log_every_n_steps" in vars(args) else {"log_every_n_steps": 4}),
    )
    torch.set_num_threads(1)
    ft.seed_everything(0, verbose=False)

    x_train, y_train = make_data(args.samples, seed=1)
    x_val, y_val = make_data(args.samples // 4, seed=2)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    state = ft.TrainState.create(model, optimizer, seed=0)

    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True),
        val_step=ft.eval_step(val_fn),
        val_data=ft.TensorLoader(x_val, y_val, batch_size=256, shuffle=False),
        hparams={"lr": args.lr, "batch_size": args.batch_size},
        config=config,
    )
    acc = result.metrics["val_acc"]
    print(f"final validation accuracy: {acc:.3f} (chance 0.250) after {result.state.step} steps")
    if result.log_dir:
        print(f"TensorBoard: {tensorboard_command(os.path.dirname(result.log_dir))}")
    return acc


def tensorboard_command(logdir: str) -> str:
    """A shell command that starts TensorBoard on ``logdir`` from any directory: the
    ``tensorboard`` of this interpreter's environment (e.g. nox's), by absolute path."""
    here = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    program = here if os.path.exists(here) else "tensorboard"
    return f"{shlex.quote(program)} --logdir {shlex.quote(os.path.abspath(logdir))}"


if __name__ == "__main__":
    main()
