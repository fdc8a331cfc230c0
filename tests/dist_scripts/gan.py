"""A GAN-style run with a mapping of models, for the FSDP2 tests (gloo, CPU).

``python gan.py --out O --devices 2 --strategy fsdp --max_steps N [--ckpt-every K]
[--crash-at S] [--resume]``: a generator and a discriminator in ``{"gen": G, "disc": D}`` with one
Adam each (and a step LR schedule on the generator's), trained by a hand-written step
that updates D then G on every batch. The noise is part of the data, so the step is
the same on any number of ranks and in the single-process reference (``build``).
Every rank writes ``O.rank<r>``: the final parameters, whether each model was an
FSDP2 module with sharded (DTensor) parameters while it trained, and fit's result.
``--crash-at S``: every rank raises after optimizer step S (a crash mid-epoch).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)

import ftrain as ft  # noqa: E402

Z, N = 4, 48


def mlp(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 16), nn.Tanh(), nn.Linear(16, outputs))


def gan_step(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, dict[str, Any]]:
    real, z = batch
    gen, disc = state.model["gen"], state.model["disc"]
    opt_g, opt_d = state.optimizer["gen"], state.optimizer["disc"]
    fake = gen(z)
    ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)
    d_loss = F.binary_cross_entropy_with_logits(
        disc(real), ones
    ) + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    g_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return state, {"d_loss": d_loss, "g_loss": g_loss}


def build(batch: int) -> dict[str, Any]:
    """State, step and data; the same on every rank and in the reference process."""
    g = torch.Generator().manual_seed(11)
    angles = torch.rand(N, generator=g) * 6.283
    real = torch.stack([angles.cos(), angles.sin()], 1) * 2 + 0.1 * torch.randn(N, 2, generator=g)
    z = torch.randn(N, Z, generator=g)
    torch.manual_seed(0)
    models = {"gen": mlp(Z, 2), "disc": mlp(2, 1)}
    optimizers = {
        k: torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.5, 0.999)) for k, m in models.items()
    }
    schedule = torch.optim.lr_scheduler.StepLR(optimizers["gen"], step_size=3, gamma=0.5)
    return {
        "state": ft.TrainState.create(
            models, optimizers, {"gen": ft.SchedulerConfig(schedule, interval="step")}, seed=5
        ),
        "train_step": ft.custom_step(gan_step),
        "train_data": ft.TensorLoader(real, z, batch_size=batch),
    }


class Sharded(ft.Callback):
    """Records, at the first batch, whether each model is an FSDP2 module with DTensors."""

    def __init__(self, crash_at: int | None) -> None:
        self.seen: dict[str, bool] = {}
        self.crash_at = crash_at

    def on_train_batch_end(self, state: Any, **_: Any) -> None:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        if state.step == self.crash_at:
            raise RuntimeError(f"crash after step {state.step}")
        if not self.seen:
            self.seen = {
                k: isinstance(m, FSDPModule) and all(isinstance(p, DTensor) for p in m.parameters())
                for k, m in state.model.items()
            }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt-every", type=int, default=0)
    parser.add_argument("--crash-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    ft.cli.add_fit_args(parser)
    args = parser.parse_args()
    config = ft.cli.config_from_args(
        args, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1
    )
    checkpoint: Any = False
    if args.ckpt_every:
        checkpoint = ft.checkpoint.ModelCheckpoint(
            every_n_train_steps=args.ckpt_every, save_top_k=-1, save_last=True
        )
    sharded = Sharded(args.crash_at)
    result = ft.fit(
        **build(4),
        config=config,
        checkpoint=checkpoint,
        logger=False,
        callbacks=[sharded],
        ckpt_path="last" if args.resume else None,
    )
    models = result.state.model
    torch.save(
        {
            "params": {
                f"{k}.{name}": v.detach().clone()
                for k, m in models.items()
                for name, v in m.state_dict().items()
            },
            "plain": {k: type(m).__name__ for k, m in models.items()},
            "sharded": sharded.seen,
            "step": result.state.step,
            "lr": [g["lr"] for g in result.state.optimizer["gen"].param_groups],
            "last": result.last_checkpoint,
        },
        f"{args.out}.rank{os.environ.get('RANK', 0)}",
    )


if __name__ == "__main__":
    main()
