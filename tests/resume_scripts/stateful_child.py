"""A run over torchdata's StatefulDataLoader(num_workers=2, shuffle=True), in a child process.

Usage: stateful_child.py ROOT CALLS [--kill-at N] [--resume]. Every ``__getitem__`` (in the worker
processes) appends the sample's index to the file CALLS. A checkpoint is written after
every optimizer step; ``--kill-at N`` SIGKILLs the process after training batch N
(before its checkpoint); ``--resume`` resumes with ``ckpt_path="last"``. A finished run
writes its parameters to ``ROOT/final.pt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import warnings
from typing import Any

import torch

torch.set_num_threads(1)

import ftrain as ft  # noqa: E402

N, BATCH, FEATURES, EPOCHS = 40, 4, 5, 2


class Logged(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Sample i: fixed random features and target; each read is logged to a file."""

    def __init__(self, calls: str) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(N, FEATURES, generator=g)
        self.y = self.x.sum(1, keepdim=True) + torch.randn(N, 1, generator=g)
        self.calls = calls

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with open(self.calls, "a") as f:
            f.write(f"{i}\n")
        return self.x[i], self.y[i]


class KillAt(ft.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, state: ft.TrainState, **_: Any) -> None:
        if state.micro_step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def run(root: str, calls: str, kill_at: int = 0, resume: bool = False) -> None:
    """Train; write the final parameters to ``root/final.pt``."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    loader = StatefulDataLoader(
        Logged(calls),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    net = torch.nn.Linear(FEATURES, 1)
    state = ft.TrainState.create(net, torch.optim.Adam(net.parameters(), lr=0.05))
    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        loader,
        max_epochs=EPOCHS,
        checkpoint=ft.checkpoint.ModelCheckpoint(every_n_train_steps=1),
        # Synchronous writes: a SIGKILL loses a background write in flight, and the read
        # count the test checks assumes the checkpoint of the batch before the kill is on disk.
        async_checkpointing=False,
        callbacks=[KillAt(kill_at)] if kill_at else [],
        ckpt_path="last" if resume else None,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    torch.save(dict(result.state.model.state_dict()), os.path.join(root, "final.pt"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("calls")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    run(args.root, args.calls, args.kill_at, args.resume)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # torchdata 0.11 calls a deprecated torch function on every iter().
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        main()
