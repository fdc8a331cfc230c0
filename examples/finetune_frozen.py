"""Fine-tuning: a pretrained backbone, frozen, under a new head.

Run: python examples/finetune_frozen.py [--max_epochs 4] [any fit flag]

Stage 1 pretrains a small MLP backbone (with BatchNorm) on task A: which of 8
clusters a point comes from. Stage 2 loads its weights from the checkpoint,
freezes them, and trains only a new head on task B, which groups the same 8
clusters into 3 classes: the frozen features already separate them. Two details
of freezing matter: the optimizer gets the head's parameters only, and the frozen
BatchNorm stays in eval mode (fit puts models in train mode at each epoch), so its
running statistics do not drift either.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import ftrain as ft
from ftrain.testing import check_step

GROUPS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])  # task B: cluster -> one of 3 classes


def make_points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) * 1.5
    g = torch.Generator().manual_seed(seed)
    cluster = torch.randint(0, 8, (n,), generator=g)
    return centres[cluster] + torch.randn(n, 16, generator=g), cluster


class Net(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU()
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def loss_fn(model: Net, batch: tuple[torch.Tensor, torch.Tensor]):
    if not any(p.requires_grad for p in model.backbone.parameters()):
        model.backbone.eval()  # frozen: BatchNorm uses (and keeps) its running statistics
    x, y = batch
    logits = model(x)
    acc = (logits.argmax(1) == y).float().mean()
    return F.cross_entropy(logits, y), {"acc": ft.log(acc, prog_bar=True)}


def val_fn(model: Net, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = batch
    logits = model(x)
    return {
        "val_loss": F.cross_entropy(logits, y),
        "val_acc": (logits.argmax(1) == y).float().mean(),
    }


def train(state: ft.TrainState, task: torch.Tensor | None, config: ft.FitConfig, root: str):
    relabel = (lambda y: y) if task is None else (lambda y: task[y])
    (x, y), (xv, yv) = make_points(2048, seed=1), make_points(512, seed=2)
    return ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(x, relabel(y), batch_size=32),
        val_step=ft.eval_step(val_fn),
        val_data=ft.TensorLoader(xv, relabel(yv), batch_size=256, shuffle=False),
        checkpoint=ft.checkpoint.top_k(1, monitor="val_loss", dirpath=f"{root}/checkpoints"),
        config=config.replace(default_root_dir=root),
    )


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, default=3e-3)
    config, args = ft.cli.parse_config(argv, parser=parser)
    # Our defaults apply to the flags that neither the command line nor a file set.
    unset = ft.FitConfig()
    defaults = {"max_epochs": 4, "log_every_n_steps": 16}
    config = config.replace(
        **{k: v for k, v in defaults.items() if getattr(config, k) == getattr(unset, k)}
    )
    torch.set_num_threads(1)  # a model this small runs best on one core
    ft.seed_everything(0, verbose=False)

    # Stage 1: pretrain everything on task A (8 clusters).
    net = Net(classes=8)
    state = ft.TrainState.create(net, torch.optim.AdamW(net.parameters(), lr=args.lr), seed=0)
    pretrained = train(state, None, config, "runs/finetune/pretrain")
    print(f"pretrained: val_acc {pretrained.metrics['val_acc']:.3f} on task A")

    # Stage 2: a new model, the backbone's weights from the best checkpoint, frozen.
    net = Net(classes=3)
    saved = torch.load(pretrained.best_checkpoint, weights_only=True)["model"]
    backbone = {
        k.removeprefix("backbone."): v for k, v in saved.items() if k.startswith("backbone.")
    }
    net.backbone.load_state_dict(backbone)
    net.backbone.requires_grad_(False)
    frozen = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    state = ft.TrainState.create(net, torch.optim.AdamW(net.head.parameters(), lr=args.lr), seed=0)

    # The step trains the head and leaves every backbone parameter alone (checked on clones).
    x, y = make_points(32, seed=3)
    check_step(ft.train_step(loss_fn), state, (x, GROUPS[y]), frozen=("backbone.",))

    result = train(state, GROUPS, config, "runs/finetune/head")
    after = result.state.model.backbone.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen), "the backbone moved"
    print(
        f"fine-tuned head: val_acc {result.metrics['val_acc']:.3f} on task B (majority class: 0.375)"
    )
    print("backbone weights and BatchNorm statistics unchanged: True")
    return result


if __name__ == "__main__":
    main()
