"""Run the loop of docs/how-to/own-loop.md (``own``) or the same run with ``fit``.

``own --kill-at K`` SIGKILLs the process after training batch ``micro_step == K``;
running ``own`` again in the same root resumes. A finished run writes its final
model and optimizer state to ``<root>/final.pt``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

import ftrain as ft  # noqa: E402
from ftrain.testing import classification_loss, tiny_state  # noqa: E402

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "own-loop.md"


def my_fit() -> Any:
    """The function ``my_fit`` of the how-to page, from its first python block."""
    code = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace["my_fit"]


def parts() -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(7)
    x, vx = torch.randn(40, 4, generator=g), torch.randn(12, 4, generator=g)
    train = ft.TensorLoader(x, (x.sum(1) > 0).long(), batch_size=4)  # 10 batches, shuffled
    val = ft.TensorLoader(vx, (vx.sum(1) > 0).long(), batch_size=5, shuffle=False)

    def val_loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return {"val_loss": torch.nn.functional.cross_entropy(model(batch[0]), batch[1])}

    return train, val, ft.eval_step(val_loss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["own", "fit"])
    parser.add_argument("root")
    parser.add_argument("--kill-at", type=int, default=-1)
    args = parser.parse_args()
    train, val, val_step = parts()
    state = tiny_state("adam", lr=0.01)
    if args.mode == "fit":
        result = ft.fit(
            state,
            ft.train_step(classification_loss),
            train,
            val_step=val_step,
            val_data=val,
            accumulate_grad_batches=2,
            val_check_interval=0.5,
            max_epochs=3,
            log_every_n_steps=2,
            checkpoint=ft.checkpoint.top_k(2, "val_loss") | ft.checkpoint.last(),
            logger=ft.loggers.CSVLogger(args.root, version=0),
            default_root_dir=args.root,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        final = result.state
    else:
        inner = ft.train_step(classification_loss, accumulate=2)

        def step(s: ft.TrainState, batch: Any) -> Any:
            s, metrics = inner(s, batch)
            if s.micro_step == args.kill_at:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return s, metrics

        final = my_fit()(state, step, val_step, train, val, args.root)
    torch.save(
        {"model": final.model.state_dict(), "optimizer": final.optimizer.state_dict()},
        os.path.join(args.root, "final.pt"),
    )


if __name__ == "__main__":
    main()
