"""Many short 2-process DDP runs in a row: each exits through a normal interpreter exit.

``python repeat.py N``: this process imports torch and ftrain once, then for each run
forks two ranks (no import per run, so 20 runs take seconds). Each rank trains two
DDP steps, checks that no DDP module survives ``fit``, and exits normally, so a
teardown fault shows as a non-zero status or a "terminate called" on stderr.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import weakref

import torch

torch.set_num_threads(1)

import ftrain as ft  # noqa: E402
from ftrain.driver._launch import free_port  # noqa: E402


def rank_main(rank: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ddp = torch.nn.parallel.DistributedDataParallel
    made: list[weakref.ref[object]] = []
    init = ddp.__init__

    def tracked(self: object, *args: object, **kwargs: object) -> None:
        made.append(weakref.ref(self))
        init(self, *args, **kwargs)

    ddp.__init__ = tracked  # type: ignore[method-assign]
    net = torch.nn.Linear(4, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    data = ft.TensorLoader(torch.randn(8, 4), torch.randn(8, 1), batch_size=2)
    step = ft.train_step(lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))
    result = ft.fit(
        state,
        step,
        data,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        process_timeout=30,
    )
    assert type(result.state.model) is torch.nn.Linear
    assert len(made) == 1 and made[0]() is None, "the DDP module outlived fit"
    assert not torch.distributed.is_initialized()


def main(runs: int) -> None:
    # What fit imports on first use, imported once here rather than in every child.
    for module in (
        "torch.nn.parallel.distributed",
        "ftrain.driver._distributed",
        "ftrain.driver._fit",
    ):
        importlib.import_module(module)
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)  # imports torch._dynamo
    gc.freeze()  # the children's collections skip the parent's objects (copy-on-write)

    for run in range(runs):
        port = free_port()
        pids = []
        for rank in (0, 1):
            pid = os.fork()
            if pid == 0:
                rank_main(rank, port)
                sys.exit(0)  # unwinds to the interpreter's normal exit
            pids.append(pid)
        for pid in pids:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if code != 0:
                print(f"run {run}: a rank exited with {code}", flush=True)
                sys.exit(1)
    print(f"{runs} runs ok", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
