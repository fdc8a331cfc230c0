"""SLURM: the process group from ``srun``'s variables, and requeue before the time limit.

Launched with ``srun`` (one task per device), each task finds its rank, the world
size and the first node of the job in SLURM's environment; :func:`export_launch_env`
turns them into torchrun's variables, so the rest of ftrain sees an ordinary
launched group. A variable already set (``torchrun`` inside an allocation, or the
user's ``MASTER_PORT``) wins.

Requeue. ``sbatch --signal=USR1@90`` sends ``SIGUSR1`` to every task 90 s before the
time limit. ``fit`` then stops after the current batch (all ranks agree, as for
SIGTERM), saves through the checkpoint policies and to ``hpc_ckpt_N.ckpt`` in
``default_root_dir``, and rank 0 runs ``scontrol requeue <job id>``; every rank then
exits with status 0. When the requeued job starts (``SLURM_RESTART_COUNT`` > 0),
``fit`` resumes from the newest ``hpc_ckpt_N.ckpt`` by itself, as Lightning does;
``ckpt_path="hpc"`` asks for it explicitly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, NoReturn

from .. import _fs

__all__ = [
    "export_launch_env",
    "first_host",
    "hpc_checkpoints",
    "job_id",
    "requeue_and_exit",
    "requeue_signals",
    "slurm_detected",
]

_HPC = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")
_BASE_PORT = 15000


def slurm_detected(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a task of a SLURM job step (not an interactive shell)."""
    return "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``SLURM_JOB_NODELIST``).

    Example:
        >>> first_host("gpu[007-009,012],cpu3")
        'gpu007'
        >>> first_host("node2,node5")
        'node2'
    """
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ValueError(f"SLURM_JOB_NODELIST: cannot read a host from {nodelist!r}")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def job_id(env: Mapping[str, str] = os.environ) -> str:
    """The id ``scontrol requeue`` takes: ``ARRAYJOB_TASK`` for an array task."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env["SLURM_JOB_ID"]


def _local_world(env: Mapping[str, str], world: int) -> int:
    per_node = env.get("SLURM_NTASKS_PER_NODE", "")
    if per_node.isdigit():
        return int(per_node)
    # SLURM_TASKS_PER_NODE reads like "4(x2),3"; the first node's count is ours to match.
    tasks = re.match(r"^(\d+)", env.get("SLURM_TASKS_PER_NODE", ""))
    if tasks:
        return int(tasks.group(1))
    nodes = int(env.get("SLURM_NNODES", "1") or 1)
    return max(world // max(nodes, 1), 1)


def export_launch_env(env: MutableMapping[str, str] = os.environ) -> bool:
    """Set torchrun's variables from SLURM's, unless already set. Returns whether it did.

    RANK from SLURM_PROCID, WORLD_SIZE from SLURM_NTASKS, LOCAL_RANK from
    SLURM_LOCALID, LOCAL_WORLD_SIZE from the tasks per node, MASTER_ADDR from the
    first node of SLURM_JOB_NODELIST, MASTER_PORT from the job id (15000 + its last
    four digits, as Lightning), so every task of the job computes the same address.
    """
    if not slurm_detected(env) or "SLURM_PROCID" not in env:
        return False
    world = int(env["SLURM_NTASKS"])
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    values = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": str(_local_world(env, world)),
        "GROUP_RANK": env.get("SLURM_NODEID", "0"),
        "MASTER_ADDR": first_host(nodelist),
        "MASTER_PORT": str(_BASE_PORT + int(env.get("SLURM_JOB_ID", "0")[-4:] or 0)),
    }
    for key, value in values.items():
        env.setdefault(key, value)
    return True


def requeue_signals(auto_requeue: bool, signal_name: str) -> tuple[signal.Signals, ...]:
    """The requeue signal to handle in this process: under SLURM with auto-requeue on."""
    if not auto_requeue or not slurm_detected():
        return ()
    return (signal.Signals[signal_name],)


def hpc_checkpoints(root: str) -> list[str]:
    """The ``hpc_ckpt_N.ckpt`` files in ``root``, oldest (lowest N) first."""
    if not _fs.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in _fs.listdir(root) if (m := _HPC.match(name))]
    return [_fs.join(root, name) for _, name in sorted(found)]


def requeue_and_exit(
    save: Callable[[str], None], root: str, is_main: bool, say: Callable[[str], Any] = print
) -> NoReturn:
    """Save ``hpc_ckpt_{N+1}.ckpt`` in ``root`` (``save(path)``, called on every rank),
    requeue the job from rank 0, and exit with status 0.

    Raises:
        SystemExit: always (status 0; 1 if ``scontrol`` failed on rank 0).
    """
    existing = hpc_checkpoints(root)
    number = int(_HPC.match(os.path.basename(existing[-1])).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    path = _fs.join(root, f"hpc_ckpt_{number}.ckpt")
    save(path)
    if not is_main:
        raise SystemExit(0)
    command = ["scontrol", "requeue", job_id()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as err:
        print(f"ftrain: {' '.join(command)} could not run: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if done.returncode != 0:
        print(
            f"ftrain: {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)
    say(f"Saved {path} and requeued SLURM job {job_id()}; exiting")
    raise SystemExit(0)
