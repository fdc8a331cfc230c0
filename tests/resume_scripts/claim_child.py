"""One of several runs sharing a ``default_root_dir``, for the run-claim tests.

``claim_child.py ROOT TAG --logger csv|none [--go FILE] [--crash-at N] [--hold FILE]
[--resume]``: waits until ``--go`` exists (so runs start together), trains a linear
model seeded by ``TAG`` for 12 optimizer steps with a checkpoint after every step and
logs ``tag`` every step. ``--crash-at N`` raises after step N; ``--hold FILE`` blocks
after the last step until FILE exists (the run stays alive, holding its lock). A
finished run writes ``ROOT/result-TAG.pt``: its version, last checkpoint and weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import ftrain as ft


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)


class Crash:
    def __init__(self, at: int | None, hold: str | None) -> None:
        self.at, self.hold = at, hold

    def on_train_batch_end(self, state: ft.TrainState, **_: Any) -> None:
        print(f"step {state.step}", flush=True)
        if state.step == self.at:
            raise RuntimeError(f"crash at step {state.step}")
        if self.hold and state.step == 12:
            print("holding", flush=True)
            wait_for(self.hold)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("tag", type=int)
    p.add_argument("--logger", choices=("csv", "none"), default="csv")
    p.add_argument("--go")
    p.add_argument("--crash-at", type=int)
    p.add_argument("--hold")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.manual_seed(args.tag)
    net = torch.nn.Linear(3, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=args.tag)
    x, y = torch.randn(24, 3), torch.randn(24, 1)
    data = ft.TensorLoader(x, y, batch_size=2)

    def loss(model: torch.nn.Module, batch: Any) -> Any:
        value = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        return value, {"tag": torch.tensor(float(args.tag))}

    logger: Any = ft.loggers.CSVLogger(args.root) if args.logger == "csv" else False
    if args.go:
        wait_for(args.go)
    result = ft.fit(
        state,
        ft.train_step(loss),
        data,
        max_epochs=1,
        logger=logger,
        default_root_dir=args.root,
        checkpoint=ft.checkpoint.every(n_train_steps=1),
        callbacks=[Crash(args.crash_at, args.hold)],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        ckpt_path="last" if args.resume else None,
    )
    torch.save(
        {
            "log_dir": result.log_dir,
            "last": result.last_checkpoint,
            "weights": {k: v.clone() for k, v in net.state_dict().items()},
        },
        os.path.join(args.root, f"result-{args.tag}.pt"),
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
