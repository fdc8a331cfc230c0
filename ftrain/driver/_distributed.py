"""The process environment of a run: one process, or a ``torch.distributed`` group.

``DistEnv`` is the only place ``fit`` touches processes: which device this rank
uses, wrapping the model, agreeing on stop requests, reducing metrics at log
points, checkpoint writes, barriers, and teardown. A single process is the null
case of every verb; ``_Group`` is a member of a process group.

Launching (``setup_distributed`` picks one):

- Started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR`` set):
  join its group. ``num_nodes`` and ``devices`` are checked against ``WORLD_SIZE``
  and ``LOCAL_WORLD_SIZE``.
- Plain ``python`` with ``devices=N > 1`` and ``strategy`` "ddp", "fsdp" or "auto":
  the script is run again as N workers with torchrun's variables set, and this
  process supervises them like torchrun (``_launch.ScriptLauncher``). Every rank runs the
  script from the top, so nothing is pickled and any script that works under
  torchrun works this way; the supervisor exits with the workers' status. We chose
  this (Lightning's "popen" launcher) because the alternative, ``ddp_spawn``, needs
  every argument of ``fit`` to be picklable (no lambdas) and copies the state back.
- ``strategy="ddp_spawn"``: ``torch.multiprocessing.start_processes`` runs ``fit`` in
  N spawned processes; the arguments must be picklable, rank 0's final state is
  loaded back into the caller's state, and ``fit`` returns normally.
- ``strategy="ddp_fork"`` / ``"ddp_notebook"``: the same with the fork start method,
  so nothing is pickled and functions defined in a notebook or ``python -c`` work;
  CUDA must not be initialised in the parent before (a forked child cannot use it).
- ``srun`` under SLURM: each task's SLURM variables give the torchrun ones
  (``_slurm.export_launch_env``), then as under torchrun.

Stop agreement. Every rank must stop after the same batch, or one rank waits in an
all-reduce the others never join. A signal reaches one rank, max_time is a clock
per rank, a callback reads per-rank values. Lightning broadcasts the SIGTERM flag on
every batch (a host-device sync per step, its users' top complaint). Here the ranks
agree (one all-reduce of three flags over a CPU/gloo group, never a CUDA sync) every
``agree_every_n_batches`` batches and at every epoch start, which is where the
epoch-end callbacks (early stopping) have set their flags. The trade-off: a stop
request takes effect up to ``agree_every_n_batches - 1`` batches later than in a
single process (at 1 it is Lightning's behaviour, one small collective per batch);
what all ranks do is always the same. max_time is decided by rank 0's clock alone.

Metrics (``_sync``): ``sync_dist`` step values are reduced with their ``reduce_fx`` at
log points only; epoch values reduce the accumulators (a weighted mean adds up its
numerator and weight over the ranks). Validation and test epoch values are always
reduced: a validation metric describes the whole validation set, not rank 0's shard.

Files. Only rank 0 writes logs, the progress bar and checkpoints (under FSDP every
rank writes its shard); the other ranks hold ``_Mirror`` loggers that know rank 0's
folders and write nothing. Every rank loads the checkpoint it resumes from, the one
rank 0 picked. There is no barrier per step: a checkpoint write needs none, since
the next gradient all-reduce waits for rank 0 anyway.

Failures. Every collective has ``process_timeout``: a rank that raises or dies ends
the others' next collective at once (gloo notices the closed connection) or within
the timeout, and the launcher (torchrun or ours) ends the rest; a rank that hangs
makes the others time out. Teardown: no reference to a wrapped module outlives
``_fit`` (the returned state holds the plain ones; this class keeps none), the garbage
collector frees the DDP wrappers, then the group is destroyed: a DDP module alive
after ``destroy_process_group`` can abort the process at exit ("terminate called
without an active exception"). ``tests/dist_scripts/repeat.py`` checks it.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import torch

from .._checkpointing import unwrap
from .._config import FitConfig, split_strategy
from .._devices import parse_devices, resolve_accelerator, resolve_devices
from .._state import TrainState
from .._warn import user_stacklevel
from ..checkpoint._async import Job
from ._env import DistEnv, Mirror
from ._fsdp import load_sharded, save_sharded, shard, share_actions, unshard
from ._launch import ScriptLauncher, SpawnLauncher
from ._rank_state import gather_partial_grads, own_partial_grads, to_cpu
from ._slurm import export_launch_env
from ._sync import reduce_epoch_values, reduce_step_values

__all__ = ["DistEnv", "setup_distributed"]

# What torchrun (and ftrain's own launcher) sets for each worker.
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")


def _dist() -> Any:
    import torch.distributed as dist

    return dist


class _Group(DistEnv):
    """This process is one rank of a ``torch.distributed`` group started by a launcher."""

    def __init__(self, config: FitConfig, accelerator: str, backend: str, sharded: bool) -> None:
        dist = _dist()
        env = os.environ
        self.rank = int(env["RANK"])
        self.world_size = int(env["WORLD_SIZE"])
        self.local_rank = int(env["LOCAL_RANK"])
        self.restarted = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
        self.sharded = sharded
        self.fsdp_policy = config.fsdp_policy
        self.token = ""  # names the shard folders of the current FSDP save
        self.every = config.agree_every_n_batches
        self.sync_batchnorm = config.sync_batchnorm
        self.find_unused_parameters = config.find_unused_parameters
        if self.sync_batchnorm and accelerator != "cuda":
            raise ValueError(
                "sync_batchnorm=True needs accelerator='cuda': torch's SyncBatchNorm runs on "
                f"GPU modules only (this run uses {accelerator!r})"
            )
        self.accelerator = accelerator
        timeout = timedelta(seconds=config.process_timeout)
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
        if accelerator == "cuda":
            torch.cuda.set_device(self.local_rank)
            if backend == "nccl":
                kwargs["device_id"] = torch.device("cuda", self.local_rank)
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            store = _group_store(self.rank, self.world_size, timeout)
            dist.init_process_group(
                **kwargs, store=store, rank=self.rank, world_size=self.world_size
            )
        elif dist.get_world_size() != self.world_size:
            raise RuntimeError(
                f"a process group of {dist.get_world_size()} ranks already exists, but "
                f"WORLD_SIZE={self.world_size}"
            )
        # Flags, objects and metrics travel over gloo on the CPU: agreeing on a stop
        # never synchronizes a CUDA stream.
        self._ctl = (
            dist.group.WORLD
            if dist.get_backend() == "gloo"
            else dist.new_group(backend="gloo", timeout=timeout)
        )

    def device(self, accelerator: str) -> torch.device:
        if accelerator == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device(accelerator)

    # objects and loggers ---------------------------------------------------------------

    def _broadcast(self, obj: Any) -> Any:
        box = [obj]
        _dist().broadcast_object_list(box, src=0, group=self._ctl)
        return box[0]

    def share(self, fn: Callable[[], Any]) -> Any:
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as exc:  # every rank raises rank 0's error
                outcome = (False, exc)
        ok, value = self._broadcast(outcome)
        if not ok:
            raise value
        return value

    def loggers(self, loggers: list[Any]) -> list[Any]:
        return loggers if self.is_main else [Mirror(lg) for lg in loggers]

    def share_logger_dirs(self, loggers: list[Any]) -> None:
        dirs = [(lg.version, lg.log_dir) for lg in loggers] if self.is_main else None
        dirs = self._broadcast(dirs)
        if not self.is_main:
            for mirror, (version, log_dir) in zip(loggers, dirs, strict=True):
                mirror.version, mirror.log_dir = version, log_dir

    # models ---------------------------------------------------------------------------

    def wrap(self, state: TrainState, step: Any) -> TrainState:
        if self.sharded:
            return shard(state, step, self).replace(rank=self.rank)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.accelerator == "cuda" else None

        def ddp(module: torch.nn.Module) -> torch.nn.Module:
            if self.sync_batchnorm:
                # Reuses the same Parameter and buffer objects: the optimizer stays valid.
                module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            if not any(p.requires_grad for p in module.parameters()):
                return module  # nothing to synchronize (DDP refuses such a module)
            return DistributedDataParallel(
                module, device_ids=device_ids, find_unused_parameters=self.find_unused_parameters
            )

        model = state.model
        wrapped = (
            {k: ddp(m) for k, m in model.items()} if isinstance(model, Mapping) else ddp(model)
        )
        return state.replace(model=wrapped, rank=self.rank)

    def unwrap(self, state: TrainState) -> TrainState:
        if self.sharded:
            return unshard(state)
        model = state.model
        plain = (
            {k: unwrap(m) for k, m in model.items()}
            if isinstance(model, Mapping)
            else unwrap(model)
        )
        return state.replace(model=plain)

    def barrier(self) -> None:
        _dist().barrier(group=self._ctl)

    # agreement ------------------------------------------------------------------------

    def agree(self, flags: tuple[bool, ...], step: int, *, now: bool = False) -> tuple[bool, ...]:
        if not now and step % self.every:
            return (False,) * len(flags)
        dist = _dist()
        votes = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self._ctl)
        return tuple(bool(v) for v in votes.tolist())

    # metrics --------------------------------------------------------------------------

    def reduce_step_values(self, values: dict[str, Any], collector: Any) -> dict[str, Any]:
        return reduce_step_values(values, collector, self._ctl, self.world_size)

    def reduce_epoch_values(self, collector: Any) -> None:
        reduce_epoch_values(collector, self._ctl, self.world_size)

    # checkpoints ----------------------------------------------------------------------

    def with_rank_state(
        self,
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        train_metrics: Callable[[], Mapping[str, Any]],
    ) -> Callable[[], dict[str, Any]]:
        sums = self._gather(to_cpu(train_metrics()))
        # The sharded writer saves each rank's own state, partial gradients included.
        grads = None if self.sharded else gather_partial_grads(state, self._gather)

        def build() -> dict[str, Any]:
            out = {**extra(), "train_metrics_per_rank": sums}
            if grads is not None:
                out["grads_per_rank"] = grads
            return out

        return build

    def _gather(self, obj: Any) -> list[Any] | None:
        box: list[Any] | None = [None] * self.world_size if self.is_main else None
        _dist().gather_object(obj, box, dst=0, group=self._ctl)
        return box

    def share_actions(self, actions: list[Any]) -> list[Any]:
        if not self.sharded:
            return actions
        return share_actions(actions, self)

    def save_checkpoint(
        self,
        state: TrainState,
        path: str,
        extra: Callable[[], dict[str, Any]],
        *,
        weights_only: bool,
        overwrite: bool = True,
        job: Job | None = None,
        link_to: str | None = None,
    ) -> None:
        if not self.sharded:
            super().save_checkpoint(
                state,
                path,
                extra,
                weights_only=weights_only,
                overwrite=overwrite,
                job=job,
                link_to=link_to,
            )
            return
        # Every rank writes its shard collectively, now (the job's deletes still wait);
        # a sharded checkpoint is a file plus shard folders, never a link.
        save_sharded(state, path, extra, weights_only=weights_only, overwrite=overwrite, env=self)

    def link_checkpoint(self, target: str, path: str) -> bool:
        # A sharded checkpoint is a file plus shard folders named after it: write it.
        return False if self.sharded else super().link_checkpoint(target, path)

    def restore(self, state: TrainState, payload: Mapping[str, Any], path: str) -> TrainState:
        if payload.get("sharded") is not None and self.sharded:
            return load_sharded(state, payload, path, self)
        payload = own_partial_grads(payload, self.rank, self.world_size)
        return super().restore(state, payload, path)

    def teardown(self) -> None:
        dist = _dist()
        # A DDP module that outlives the group can abort the process at exit.
        gc.collect()
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()


_STORE: Any = None
_GROUPS = 0


def _group_store(rank: int, world: int, timeout: timedelta) -> Any:
    """The rendezvous store of the next process group this process joins.

    One TCPStore per process (rank 0 hosts it, or torchrun's agent does), and a fresh
    key prefix per group: a second ``fit`` in the same script, or a worker group
    restarted by torchrun, never reads the addresses of a previous group. (A store
    created anew on the same port races: a fast rank can reach the previous store
    before rank 0 has closed it.)
    """
    global _STORE, _GROUPS
    from torch.distributed import PrefixStore, TCPStore

    if _STORE is None:
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        _STORE = TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            world,
            is_master=rank == 0 and not agent,
            timeout=timeout,
        )
    _GROUPS += 1
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return PrefixStore(f"ftrain/{restart}/{_GROUPS}", _STORE)


# Choosing the environment -------------------------------------------------------------


def _launched() -> bool:
    return all(var in os.environ for var in _LAUNCH_VARS)


def _check_launch(config: FitConfig, world: int) -> None:
    """num_nodes and devices against what torchrun started."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % local:
        raise ValueError(f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local}")
    nodes = world // local
    if config.num_nodes != nodes:
        raise ValueError(
            f"num_nodes={config.num_nodes}, but the launcher started {world} processes with "
            f"{local} per node (WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local}): {nodes} "
            f"node(s); pass num_nodes={nodes}"
        )
    devices = parse_devices(config.devices)
    count = len(devices) if isinstance(devices, list) else devices
    if isinstance(count, int) and count > 0 and count != local:
        raise ValueError(
            f"devices={config.devices!r}, but the launcher started {local} processes on this "
            f"node (LOCAL_WORLD_SIZE={local}); pass devices={local} or 'auto'"
        )


def _backend(config: FitConfig, accelerator: str) -> str:
    backend = config.process_group_backend
    if backend is None:
        return "nccl" if accelerator == "cuda" else "gloo"
    if backend == "nccl" and accelerator != "cuda":
        raise ValueError(
            f"process_group_backend='nccl' needs CUDA, but accelerator is {accelerator!r}; "
            "use process_group_backend='gloo' (or None) on the CPU"
        )
    return str(backend)


def setup_distributed(config: FitConfig) -> DistEnv:
    """The environment for ``config``'s strategy, devices and num_nodes.

    Raises:
        ValueError: num_nodes/devices that disagree with the launcher, a multi-node run
            not started by a launcher, nccl without CUDA, several devices with
            ``strategy="single_device"``.
    """
    strategy, unused = split_strategy(config.strategy)
    if unused is not None and unused != config.find_unused_parameters:
        config = config.replace(find_unused_parameters=unused)
    accelerator = resolve_accelerator(config.accelerator)
    export_launch_env()  # srun's tasks: torchrun's variables from SLURM's
    if _launched():
        world = int(os.environ["WORLD_SIZE"])
        _check_launch(config, world)
        if world == 1:
            return DistEnv()
        if strategy == "single_device":
            raise ValueError(
                f"strategy='single_device', but the launcher started {world} processes; "
                "use strategy='ddp' (or 'auto')"
            )
        backend = _backend(config, accelerator)
        return _Group(config, accelerator, backend, sharded=strategy == "fsdp")
    if config.num_nodes > 1:
        raise ValueError(
            f"num_nodes={config.num_nodes}: a multi-node run is started on every node by a "
            "launcher, e.g. torchrun --nnodes N --nproc-per-node M --rdzv-backend c10d "
            "--rdzv-endpoint HOST:PORT train.py (see docs/scaling.md)"
        )
    _backend(config, accelerator)
    count = len(resolve_devices(accelerator, config.devices))
    if count == 1:
        if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp"):
            warnings.warn(
                f"strategy={strategy!r} with one device on one node: running in this "
                "single process",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        return DistEnv()
    if strategy == "single_device":
        raise ValueError(
            f"strategy='single_device' runs on one device, got devices={config.devices!r}; "
            "use strategy='ddp' (or 'auto')"
        )
    if accelerator == "mps":
        raise ValueError("several MPS devices are not supported; use devices=1")
    if strategy == "ddp_spawn":
        return SpawnLauncher(count)
    if strategy in ("ddp_fork", "ddp_notebook"):
        return SpawnLauncher(count, start_method="fork")
    return ScriptLauncher(count)
