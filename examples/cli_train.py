"""Train from the command line: every Trainer flag of ``ft.fit`` comes from ``ft.cli``.

    python examples/cli_train.py --max_epochs 3 --val_check_interval 0.5
    python examples/cli_train.py --config run.toml --precision bf16-mixed --lr 0.01
    python examples/cli_train.py --help            # your flags, then all fit options

The data is generated (noisy linear regression in 8 dimensions), so it runs on a CPU in
seconds. A config file (.toml/.json) sets this script's own options (the ``Args`` class)
and fit options, e.g. ``lr = 0.01`` and ``max_epochs = 5``; command-line flags override it.
"""

from __future__ import annotations

import argparse

import attrs
import torch
import torch.nn.functional as F

import ftrain as ft


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.linspace(-1.0, 1.0, 8).unsqueeze(1)  # the true weights are fixed
    x = torch.randn(n, 8, generator=g)
    return x, x @ w + 0.1 * torch.randn(n, 1, generator=g)


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def val_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = batch
    return {"val_loss": ft.log(F.mse_loss(model(x), y), prog_bar=True)}


@attrs.define
class Args:
    """This script's own options: flags, and keys of the --config file."""

    lr: float = attrs.field(default=0.05, metadata={"help": "SGD learning rate"})
    batch_size: int = 32
    samples: int = attrs.field(default=2048, metadata={"help": "training samples"})
    patience: int = attrs.field(default=3, metadata={"help": "early stopping patience"})


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # --<field> per Args field, --config and one --<flag> per FitConfig field.
    config, args = ft.cli.parse_config(argv, parser=parser, args=Args)
    if config.max_epochs is None and config.max_steps == -1 and config.max_time is None:
        config = config.replace(max_epochs=10)  # this example's own default
    print("fit flags:", " ".join(ft.cli.to_argv(config)) or "(defaults)")

    torch.set_num_threads(1)
    ft.seed_everything(0, verbose=False)
    x, y = make_data(args.samples, seed=1)
    x_val, y_val = make_data(max(args.samples // 4, args.batch_size), seed=2)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    state = ft.TrainState.create(model, optimizer, scheduler, seed=0)

    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(x, y, batch_size=args.batch_size, shuffle=True),
        val_step=ft.eval_step(val_fn),
        val_data=ft.TensorLoader(x_val, y_val, batch_size=256, shuffle=False),
        callbacks=[ft.EarlyStopping("val_loss", patience=args.patience)],
        hparams={"lr": args.lr, "batch_size": args.batch_size},
        config=config,
    )
    val_loss = result.metrics.get("val_loss", float("nan"))
    print(f"done: {result.state.step} steps, {result.state.epoch} epochs, val_loss={val_loss:.4f}")
    if result.last_checkpoint:
        print(f"checkpoint: {result.last_checkpoint}")
    return val_loss


if __name__ == "__main__":
    main()
