"""A small training run for the resume tests, run in a child process.

It trains a model with Dropout, Adam and an epoch StepLR scheduler, accumulating 3
batches per optimizer step over 11 shuffled batches per epoch (so every epoch ends
with a short window of 2), validates twice per epoch (both times inside a window),
logs every step to TensorBoard and CSV, and checkpoints after every optimizer step
plus the 2 best by ``val_loss`` at each validation.

After each training batch it prints ``batch <micro_step> step <step>`` and flushes,
so that a parent can kill it at a known point. ``--kill-*`` options make it SIGKILL
itself at an exact point instead; ``--sigint-at`` sends itself SIGINT (a graceful
stop). A finished run writes its final parameters, optimizer and scheduler state to
``<root>/final.pt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import torch

torch.set_num_threads(1)

import ftrain as ft  # noqa: E402
from ftrain.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

N_TRAIN, N_VAL, BATCH, FEATURES = 22, 8, 2, 6


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(123)
    n = N_TRAIN + N_VAL
    x = torch.randn(n, FEATURES, generator=g)
    y = x @ torch.randn(FEATURES, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
    x, y = batch
    out = model(x)
    loss = torch.nn.functional.mse_loss(out, y)
    return loss, {
        "train_loss": ft.log(loss, on_step=True, on_epoch=True),
        "out_max": ft.log(out.abs().max(), on_step=False, on_epoch=True, reduce_fx="max"),
    }


def val_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = batch
    return {"val_loss": torch.nn.functional.mse_loss(model(x), y)}


class Probe(ft.Callback):
    """Prints progress and kills the process at the requested point."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.batch_done = threading.Event()

    def on_train_batch_end(self, state: Any, **_: Any) -> None:
        print(f"batch {state.micro_step} step {state.step}", flush=True)
        self.batch_done.set()
        if self.args.kill_at == state.micro_step:
            die()
        if self.args.sigint_at == state.micro_step:
            os.kill(os.getpid(), signal.SIGINT)

    def on_train_epoch_end(self, state: Any, **_: Any) -> None:
        # After the epoch's logs are written, before its checkpoint.
        if self.args.kill_at_epoch_end == state.epoch:
            die()


def kill_in_save(step: int) -> None:
    """SIGKILL between writing and renaming the first checkpoint file of ``step``."""
    import ftrain.checkpoint._io as io

    def before(rename: Any) -> Any:
        def renamed(src: str, dst: str, **kw: Any) -> None:
            if dst.endswith(f"-step={step}.ckpt"):
                die()  # the temp file is complete and fsynced, the rename not done
            rename(src, dst, **kw)

        return renamed

    io.os = type(os)("os_for_test")  # type: ignore[attr-defined]
    io.os.__dict__.update(os.__dict__)
    # A new file is committed with a hard link (never replaces), a rewrite with replace.
    io.os.replace = before(os.replace)
    io.os.link = before(os.link)


def kill_in_background_save(step: int, probe: Probe) -> None:
    """SIGKILL in the background write of ``step``'s first checkpoint file, once the
    training thread has finished a later batch (so the step did not wait for the
    write); after 20 s without one, SIGKILL anyway (the parent then sees no such batch)."""
    import ftrain.checkpoint._io as io

    def before(rename: Any) -> Any:
        def renamed(src: str, dst: str, **kw: Any) -> None:
            if dst.endswith(f"-step={step}.ckpt"):
                if threading.current_thread() is not threading.main_thread():
                    probe.batch_done.clear()
                    probe.batch_done.wait(timeout=20)
                die()  # the temp file is complete and fsynced, the rename not done
            rename(src, dst, **kw)

        return renamed

    io.os = type(os)("os_for_test")  # type: ignore[attr-defined]
    io.os.__dict__.update(os.__dict__)
    io.os.replace = before(os.replace)
    io.os.link = before(os.link)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--loader", choices=["tensor", "dataloader"], default="tensor")
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--wide", action="store_true", help="a bigger model: saves dominate")
    p.add_argument("--resume", action="store_true", help='fit(ckpt_path="last")')
    p.add_argument("--kill-at", type=int, help="SIGKILL after this micro step's batch")
    p.add_argument("--kill-at-epoch-end", type=int, help="SIGKILL at this epoch's end")
    p.add_argument("--kill-in-save-step", type=int, help="SIGKILL inside this step's save")
    p.add_argument(
        "--kill-in-background-save-step",
        type=int,
        help="SIGKILL inside this step's background write, after a later batch",
    )
    p.add_argument("--sync-saves", action="store_true", help="async_checkpointing=False")
    p.add_argument("--sigint-at", type=int, help="SIGINT after this micro step's batch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.kill_in_save_step is not None:
        kill_in_save(args.kill_in_save_step)
    probe = Probe(args)
    if args.kill_in_background_save_step is not None:
        kill_in_background_save(args.kill_in_background_save_step, probe)

    torch.manual_seed(0)
    hidden = 512 if args.wide else 16
    layers: list[torch.nn.Module] = [torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU()]
    if args.wide:
        layers += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    layers += [torch.nn.Dropout(0.3), torch.nn.Linear(hidden, 1)]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    state = ft.TrainState.create(model, opt, sched, seed=7)

    x, y, vx, vy = data()
    if args.loader == "tensor":
        train: Any = ft.TensorLoader(x, y, batch_size=BATCH, shuffle=True)
    else:
        dataset = torch.utils.data.TensorDataset(x, y)
        train = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)
    val = ft.TensorLoader(vx, vy, batch_size=4, shuffle=False)

    policy = ft.checkpoint.every(n_train_steps=1) | ft.checkpoint.top_k(
        2, monitor="val_loss", filename="{val_loss:.6f}"
    )
    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        train,
        val_step=ft.eval_step(val_fn),
        val_data=val,
        max_epochs=args.max_epochs,
        accumulate_grad_batches=3,
        val_check_interval=0.5,
        log_every_n_steps=1,
        logger=[TensorBoardLogger(args.root, name="tb"), CSVLogger(args.root, name="csv")],
        checkpoint=policy,
        callbacks=[probe],
        async_checkpointing=not args.sync_saves,
        ckpt_path="last" if args.resume else None,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=args.root,
    )
    final = {
        "params": result.state.model.state_dict(),
        "optimizer": result.state.optimizer.state_dict(),
        "scheduler": sched.state_dict(),
        "counters": [result.state.step, result.state.micro_step, result.state.epoch],
        "interrupted": result.interrupted,
        "log_dir": result.log_dir,
    }
    torch.save(final, os.path.join(args.root, "final.pt"))
    print("done", flush=True)


if __name__ == "__main__":
    main()
