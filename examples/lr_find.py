"""The learning-rate finder on a small classifier, saved as a picture.

Run: python examples/lr_find.py lr_find.png [--num_training 100]

Data: 4 classes of noisy points in 16 dimensions, generated from a fixed seed. The
model is a 2-layer MLP trained with SGD (momentum 0.9). ``lr_find`` trains a clone
of the state while the learning rate grows from 1e-5 to 10, stops when the loss
explodes, and suggests the rate where the smoothed loss falls fastest. The state
itself is not touched: train it with the suggestion afterwards.
"""

from __future__ import annotations

import argparse
import importlib.util

import torch
import torch.nn.functional as F

import ftrain as ft
from ftrain import tune


def make_data(n: int = 4096, dim: int = 16, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + torch.randn(n, dim, generator=g) * 1.6, labels


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def main(argv: list[str] | None = None) -> float | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="where to save the PNG")
    parser.add_argument("--num_training", type=int, default=100)
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # before the search, not after it
        parser.error("saving the plot needs matplotlib: pip install matplotlib")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = ft.TrainState.create(model, optimizer, seed=0)
    x, y = make_data()
    data = ft.TensorLoader(x, y, batch_size=64, shuffle=True)

    result = tune.lr_find(
        state,
        ft.train_step(loss_fn),
        data,
        min_lr=1e-5,
        max_lr=10.0,
        num_training=args.num_training,
    )
    lr = result.suggestion()
    result.plot(args.path)
    stop = "stopped early (the loss diverged)" if result.stopped_early else "ran to the end"
    print(f"{len(result.lrs)} steps, {stop}; suggested lr: {lr}; saved {args.path}")
    return lr


if __name__ == "__main__":
    main()
