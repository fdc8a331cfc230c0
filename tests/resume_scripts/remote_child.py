"""A run writing its logs and checkpoints to a URL, killed with SIGKILL mid-epoch.

``remote_child.py ROOT [--kill-at N]``: trains a small dropout MLP on shuffled data
for ``EPOCHS`` epochs with a checkpoint after every optimizer step (``last.ckpt``
too), logging to a ``CSVLogger`` under ``ROOT`` (a URL such as ``s3://bucket/run``).
``--kill-at N`` sends itself SIGKILL once step N's checkpoint has been written (no
clean shutdown, nothing flushed afterwards). The S3 endpoint and credentials come
from the environment (``FSSPEC_S3_ENDPOINT_URL``, ``AWS_*``). The test imports
:func:`build` to run the same training in process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import ftrain as ft

EPOCHS = 3
STEPS_PER_EPOCH = 4


class KillAt:
    """SIGKILLs the process at the first event after step ``at``'s checkpoint."""

    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_train_batch_start(self, state: ft.TrainState, **_: Any) -> None:
        if self.at is not None and state.step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def build(root: str, callbacks: list[Any] | None = None) -> tuple[Any, ...]:
    """The state, step, data and ``fit`` flags of the run (deterministic)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1)
    )
    state = ft.TrainState.create(model, torch.optim.Adam(model.parameters(), lr=0.01), seed=3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4 * STEPS_PER_EPOCH, 3, generator=g), torch.randn(16, 1, generator=g)
    data = ft.TensorLoader(x, y, batch_size=4, shuffle=True)

    def loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    flags = dict(
        max_epochs=EPOCHS,
        default_root_dir=root,
        logger=ft.loggers.CSVLogger(root, flush_logs_every_n_steps=1),
        checkpoint=ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_last=True),
        callbacks=callbacks or [],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        # A SIGKILL would lose a background write in flight.
        async_checkpointing=False,
    )
    return state, ft.train_step(loss_fn), data, flags


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--kill-at", type=int)
    args = p.parse_args()
    state, step, data, flags = build(args.root, [KillAt(args.kill_at)])
    ft.fit(state, step, data, **flags)


if __name__ == "__main__":
    main()
