"""Logging to TensorBoard: what the options of ``ft.log`` do, on a small regression.

Run: python examples/tensorboard_logging.py [--max_epochs 3] [--root runs/logging]
then open the printed ``tensorboard --logdir ...`` command.

A step returns its metrics as a dict; ``ft.log(value, ...)`` attaches Lightning's
``self.log`` options to one value. What TensorBoard then shows:
- ``loss`` (a bare tensor, training default on_step): every ``log_every_n_steps``
  optimizer steps, the value of that one step, at x = step index (0-based);
- ``mae``: on_step and on_epoch, so ``mae_step`` per log point and ``mae_epoch``,
  the epoch's batch-size-weighted mean; prog_bar puts it on the progress bar;
- ``max_err``: only the epoch's maximum (reduce_fx="max");
- ``val_loss``/``val_mae``: validation defaults to epoch means, at the x of the last
  optimizer step before validation; ``lr-SGD`` from ``LearningRateMonitor``;
- ``epoch`` with every write, and the ``hparams`` in the HPARAMS tab.
Values stay tensors on the device and are turned into numbers only when written.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

import ftrain as ft


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.linspace(-1.0, 1.0, 8)
    return x, (x @ w).sin().unsqueeze(1) + 0.05 * torch.randn(n, 1, generator=g)


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    pred = model(x)
    err = (pred - y).abs()
    return F.mse_loss(pred, y), {
        "mae": ft.log(err.mean(), prog_bar=True, on_epoch=True),
        "max_err": ft.log(err.max(), on_step=False, on_epoch=True, reduce_fx="max"),
    }


def val_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    pred = model(x)
    return {
        "val_loss": F.mse_loss(pred, y),
        "val_mae": ft.log((pred - y).abs().mean(), prog_bar=True),
    }


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--root", default=os.path.join("runs", "logging"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ft.seed_everything(0, verbose=False)

    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    state = ft.TrainState.create(model, optimizer, scheduler=scheduler)
    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(*make_data(args.samples, seed=1), batch_size=32),
        val_step=ft.eval_step(val_fn),
        val_data=ft.TensorLoader(*make_data(args.samples // 4, seed=2), batch_size=128),
        max_epochs=args.max_epochs,
        log_every_n_steps=10,
        callbacks=[ft.LearningRateMonitor()],
        hparams={"lr": args.lr, "samples": args.samples, "model": "mlp-32"},
        enable_checkpointing=False,
        default_root_dir=args.root,
    )
    print(f"val_mae {result.metrics['val_mae']:.4f} after {result.state.step} steps")
    print(f"TensorBoard: tensorboard --logdir {os.path.dirname(str(result.log_dir))}")
    return result


if __name__ == "__main__":
    main()
