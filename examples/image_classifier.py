"""A small CNN that tells shapes apart, keeping the 3 best checkpoints by validation loss.

Run: python examples/image_classifier.py [--max_epochs 6] [--samples 3000] [any fit flag]

Data: 1x16x16 images of four shape classes (square outline, filled disc, plus
sign, diagonal line) at random sizes and positions, with noise, drawn from a fixed
seed (no download). Training flips images at random inside the loss function:
the flips are seeded from (seed, micro_step, rank), so a resumed run sees the same
ones. After training, the best checkpoint is evaluated on a fresh test set.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import ftrain as ft

CLASSES = ("square", "disc", "plus", "diagonal")
SIZE = 16


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    radius = torch.randint(2, 6, (n, 1, 1), generator=g)
    cy, cx = (torch.randint(6, SIZE - 6, (n, 1, 1), generator=g) for _ in range(2))
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dy, dx = (yy - cy).abs(), (xx - cx).abs()
    shapes = torch.stack(
        [
            torch.maximum(dy, dx) == radius,  # square outline
            (dy**2 + dx**2) <= radius**2,  # filled disc
            ((dy == 0) & (dx <= radius)) | ((dx == 0) & (dy <= radius)),  # plus sign
            ((yy - cy) == (xx - cx)) & (dy <= radius),  # diagonal line
        ]
    )
    images = shapes[labels, torch.arange(n)].float()
    images = images + 0.55 * torch.randn(images.shape, generator=g)
    return images.unsqueeze(1), labels


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, len(CLASSES)),
    )


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    flip = torch.rand(x.shape[0], 1, 1, 1) < 0.5  # seeded per step by ftrain
    x = torch.where(flip, x.flip(-1).flip(-2), x)  # a 180-degree turn keeps every class
    logits = model(x)
    acc = (logits.argmax(1) == y).float().mean()
    return F.cross_entropy(logits, y), {"train_acc": ft.log(acc, prog_bar=True)}


def eval_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = batch
    logits = model(x)
    return {
        "val_loss": F.cross_entropy(logits, y),
        "val_acc": ft.log((logits.argmax(1) == y).float().mean(), prog_bar=True),
    }


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    config, args = ft.cli.parse_config(argv, parser=parser)
    # Our defaults apply to the flags that neither the command line nor a file set.
    unset = ft.FitConfig()
    defaults = {"max_epochs": 6, "log_every_n_steps": 20, "default_root_dir": "runs/shapes"}
    config = config.replace(
        **{k: v for k, v in defaults.items() if getattr(config, k) == getattr(unset, k)}
    )
    torch.set_num_threads(1)  # a model this small runs best on one core
    ft.seed_everything(0, verbose=False)

    x_train, y_train = make_images(args.samples, seed=1)
    x_val, y_val = make_images(args.samples // 5, seed=2)
    model = make_model()
    state = ft.TrainState.create(model, torch.optim.AdamW(model.parameters(), lr=args.lr), seed=0)

    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(x_train, y_train, batch_size=args.batch_size),
        val_step=ft.eval_step(eval_fn),
        val_data=ft.TensorLoader(x_val, y_val, batch_size=256, shuffle=False),
        checkpoint=ft.checkpoint.top_k(3, monitor="val_loss", mode="min"),
        hparams=vars(args),
        config=config,
    )
    print(
        f"final: val_loss {result.metrics['val_loss']:.4f}, val_acc {result.metrics['val_acc']:.3f}"
    )
    if result.best_checkpoint is None:  # e.g. under --fast_dev_run
        return result

    best = torch.load(result.best_checkpoint, weights_only=True)["checkpoint_info"]
    print(f"best checkpoint: {result.best_checkpoint} (val_loss {best['score']:.4f})")
    x_test, y_test = make_images(1000, seed=3)
    test = ft.test(
        ft.TrainState.create(make_model(), None),
        ft.eval_step(eval_fn),
        ft.TensorLoader(x_test, y_test, batch_size=250, shuffle=False),
        ckpt_path=result.best_checkpoint,
    )
    print(f"test accuracy of the best checkpoint: {test['val_acc']:.3f} (chance 0.25)")
    return result


if __name__ == "__main__":
    main()
