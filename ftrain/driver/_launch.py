"""Starting the workers of a multi-process run from a plain ``python`` process.

``ScriptLauncher`` (strategies "ddp", "fsdp", "auto") runs the script again as N
workers with torchrun's variables set and supervises them as torchrun would: the
first worker to fail ends the others, signals are forwarded, and the supervisor
exits with the workers' status. Workers run in their own session, so a Ctrl+C
reaches them once (forwarded), and die with the supervisor (``PR_SET_PDEATHSIG``).

``SpawnLauncher`` ("ddp_spawn") runs ``fit`` in N processes started with
``torch.multiprocessing.start_processes``; the arguments are pickled, and rank 0's
final state is loaded back into the caller's state. With the fork start method
("ddp_fork", "ddp_notebook") nothing is pickled: the workers are copies of this
process, so a Jupyter kernel or ``python -c`` can launch them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, NoReturn

import torch

from .._checkpointing import restore, state_payload
from ._env import DistEnv
from ._result import FitResult

__all__ = ["ScriptLauncher", "SpawnLauncher"]


def free_port() -> int:
    """A TCP port that is free on this machine now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _script_command() -> list[str]:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        # python -m package.module: run the module again.
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", name, *sys.argv[1:]]
    script = getattr(main, "__file__", None)
    if not script:
        raise RuntimeError(
            "strategy='ddp' with devices > 1 runs the script again in each worker, but this "
            "is an interactive session; use strategy='ddp_spawn' or start the script with "
            "torchrun"
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def supervise(procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> int:
    """Wait for the workers; when one fails, end the others. Returns the exit status."""

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                print(
                    f"ftrain: rank {rank} exited with code {code}; stopping the other ranks",
                    file=sys.stderr,
                    flush=True,
                )
                _stop(procs, grace)
                return _exit_code(code)  # type: ignore[arg-type]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.05)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    # SIGTERM first (a worker outside a collective exits cleanly), then SIGKILL.
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class ScriptLauncher(DistEnv):
    """Run this script as ``n`` workers (ranks 0..n-1) and supervise them."""

    launched_here = True

    def __init__(self, n: int) -> None:
        self.n = n

    def launch(self, fn: Any, *args: Any, **kwargs: Any) -> NoReturn:
        command = _script_command()
        port = free_port()
        base = dict(os.environ)
        # As torchrun: one thread per worker unless the user chose otherwise.
        base.setdefault("OMP_NUM_THREADS", "1")
        procs = [
            subprocess.Popen(
                command,
                env={**base, **_worker_env(rank, self.n, port)},
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            for rank in range(self.n)
        ]
        raise SystemExit(supervise(procs))


def _spawn_worker(
    rank: int, world: int, port: int, out: str, fn: Any, args: Any, kwargs: Any
) -> None:
    os.environ.update(_worker_env(rank, world, port))
    # torch.multiprocessing hands tensors over in shared memory: without a copy every
    # rank would update the same parameters.
    state, *rest = args
    result = fn(state.clone(), *rest, **kwargs)
    if rank == 0:
        torch.save(
            {
                "state": state_payload(result.state),
                "metrics": result.metrics,
                "best_checkpoint": result.best_checkpoint,
                "last_checkpoint": result.last_checkpoint,
                "interrupted": result.interrupted,
                "log_dir": result.log_dir,
                "profile": result.profile,
            },
            out,
        )


class SpawnLauncher(DistEnv):
    """Run ``fit`` in ``n`` spawned (or forked) processes and return rank 0's result here."""

    launched_here = True

    def __init__(self, n: int, start_method: str = "spawn") -> None:
        self.n = n
        self.start_method = start_method

    def launch(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import torch.multiprocessing as mp

        state = args[0]
        if self.start_method == "fork" and torch.cuda.is_initialized():
            raise RuntimeError(
                "strategy='ddp_fork'/'ddp_notebook': CUDA was initialised in this process "
                "before fit, and a forked process cannot use it; restart the kernel and do "
                "not touch CUDA (e.g. .cuda(), torch.cuda.* calls) before fit"
            )
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.pt")
            mp.start_processes(
                _spawn_worker,
                args=(self.n, free_port(), out, fn, args, kwargs),
                nprocs=self.n,
                join=True,
                start_method=self.start_method,
            )
            result = torch.load(out, weights_only=True)
        return FitResult(
            state=restore(state, result.pop("state")),
            **result,
        )
