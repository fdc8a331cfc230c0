"""A small training run for the distributed tests (gloo, CPU).

Started as ``python train.py --devices 2`` (ftrain launches the workers), under
``torchrun``, or imported by the tests for the single-process reference (``build``).
Every rank writes ``<out>.rank<r>`` with its final parameters and ``fit``'s metrics.
``--fail MODE --fail-at STEP`` makes one rank fail after that optimizer step:
``raise`` (an exception), ``hang`` (sleeps), ``exit`` (``os._exit(1)``, only in the
first worker group of an elastic run), ``killall`` (SIGKILL to every rank),
``killall@micro`` (the same after that many batches, e.g. inside a window),
``sigterm`` (SIGTERM to itself: a graceful stop the ranks must agree on), ``sigusr1``
(SIGUSR1 to itself: SLURM's requeue signal). ``--fail-rank -1``: every rank.
The failing rank writes the time it failed to ``<root>/failed_at``.
``--steps 4,8`` fits twice in the same processes, the second run resuming the first;
``--sweep`` fits once per entry of ``SWEEP`` (optimizer, accumulate, clip).
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

import ftrain as ft  # noqa: E402

N_TRAIN, N_VAL, FEATURES = 32, 16, 6
SWEEP = [("sgd", 1, None), ("sgd", 2, 1.0), ("adam", 1, None), ("adam", 2, 1.0)]


def loss_fn(model: torch.nn.Module, batch: Any) -> Any:
    x, y = batch
    loss = torch.nn.functional.mse_loss(model(x), y)
    return loss, {"train_mse": ft.log(loss, on_step=True, on_epoch=True, sync_dist=True)}


def val_fn(model: torch.nn.Module, batch: Any) -> Any:
    x, y = batch
    err = model(x) - y
    return {
        "val_loss": (err**2).mean(),
        "val_max": ft.log(err.abs().max(), reduce_fx="max"),
        "val_sum": ft.log(err.abs().sum(), reduce_fx="sum"),
    }


def build(optim: str, batch: int, accumulate: int, clip: float | None) -> dict[str, Any]:
    """State, step and data; the same on every rank and in the reference process."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N_TRAIN + N_VAL, FEATURES, generator=g)
    y = torch.sin(x @ torch.randn(FEATURES, 1, generator=g))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    )
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1)
        if optim == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    step = ft.train_step(loss_fn, accumulate=accumulate if accumulate > 1 else None, clip_norm=clip)
    return {
        "state": ft.TrainState.create(model, opt, seed=3),
        "train_step": step,
        "train_data": ft.TensorLoader(x[:N_TRAIN], y[:N_TRAIN], batch_size=batch),
        "val_step": ft.eval_step(val_fn),
        "val_data": ft.TensorLoader(x[N_TRAIN:], y[N_TRAIN:], batch_size=batch, shuffle=False),
    }


class Fail(ft.Callback):
    def __init__(self, mode: str, at: int, rank: int, root: str) -> None:
        self.by_batch = mode.endswith("@micro")
        self.mode, self.at, self.rank, self.root = mode.removesuffix("@micro"), at, rank, root
        self.done = False

    def on_fit_start(self, state: Any) -> None:
        if self.mode == "killall":
            with open(os.path.join(self.root, f"pid.{os.environ.get('RANK', 0)}"), "w") as f:
                f.write(str(os.getpid()))

    def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
        rank = int(os.environ.get("RANK", 0))
        # "killall@micro": count batches consumed (to fail inside an accumulation window).
        at = state.micro_step if self.by_batch else state.step
        if at != self.at or self.rank not in (-1, rank) or self.done:
            return
        self.done = True
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "failed_at"), "w") as f:
            f.write(repr(time.time()))
        if self.mode == "raise":
            raise RuntimeError(f"injected failure at step {state.step}")
        if self.mode == "hang":
            time.sleep(600)
        if self.mode == "exit" and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
            os._exit(1)
        if self.mode == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        if self.mode == "sigusr1":
            os.kill(os.getpid(), signal.SIGUSR1)
        if self.mode == "killall":
            files = glob.glob(os.path.join(self.root, "pid.*"))
            pids = [int(Path(f).read_text()) for f in files]
            for pid in sorted(pids, key=lambda p: p == os.getpid()):
                os.kill(pid, signal.SIGKILL)


class CountReduceScatter(ft.Callback):
    """Counts FSDP2's gradient reduce-scatters; ``after_batch[i]``: the count after batch i."""

    def __init__(self) -> None:
        self.count = 0
        self.after_batch: list[int] = []

    def on_fit_start(self, state: Any) -> None:
        import torch.distributed as dist

        real = dist.reduce_scatter_single

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        dist.reduce_scatter_single = counted

    def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
        self.after_batch.append(self.count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--optim", default="sgd")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--acc", type=int, default=1)
    parser.add_argument("--clip", type=float, default=None)
    parser.add_argument("--val", action="store_true")
    parser.add_argument("--ckpt-every", type=int, default=0)
    parser.add_argument("--ckpt-val", action="store_true")
    parser.add_argument("--count-reduce-scatter", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fail", default=None)
    parser.add_argument("--fail-at", type=int, default=3)
    parser.add_argument("--fail-rank", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="fit this many times in a row")
    parser.add_argument("--steps", default=None, help="max_steps of successive resumed runs")
    parser.add_argument("--sweep", action="store_true")
    ft.cli.add_fit_args(parser)
    args = parser.parse_args()
    config = ft.cli.config_from_args(
        args, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1
    )
    checkpoint: Any = False
    if args.ckpt_val:  # every file saved at every validation, inside windows too
        checkpoint = ft.checkpoint.ModelCheckpoint(save_top_k=-1, save_last=True)
    if args.ckpt_every:
        checkpoint = ft.checkpoint.ModelCheckpoint(
            every_n_train_steps=args.ckpt_every, save_top_k=-1, save_last=True
        )
    root = config.default_root_dir or "."
    callbacks: list[Any] = (
        [Fail(args.fail, args.fail_at, args.fail_rank, root)] if args.fail else []
    )
    counter = CountReduceScatter()
    if args.count_reduce_scatter:
        callbacks.append(counter)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [config.max_steps]
    runs = len(SWEEP) if args.sweep else max(args.runs, len(steps))
    for run in range(runs):
        optim, acc, clip = SWEEP[run] if args.sweep else (args.optim, args.acc, args.clip)
        parts = build(optim, args.batch, acc, clip)
        if not args.val:
            parts.pop("val_step"), parts.pop("val_data")
        result = ft.fit(
            **parts,
            config=config.replace(max_steps=steps[min(run, len(steps) - 1)]),
            checkpoint=checkpoint,
            logger=ft.loggers.CSVLogger(root),
            callbacks=callbacks,
            ckpt_path="last" if args.resume or (args.steps and run) else None,
        )
        rank = int(os.environ.get("RANK", 0))
        model = result.state.model
        assert type(model) is torch.nn.Sequential, type(model)
        torch.save(
            {
                "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "metrics": result.metrics,
                "step": result.state.step,
                "micro_step": result.state.micro_step,
                "interrupted": result.interrupted,
                "last": result.last_checkpoint,
                "reduce_scatters": counter.after_batch,
            },
            f"{args.out}.run{run}.rank{rank}",
        )


if __name__ == "__main__":
    main()
