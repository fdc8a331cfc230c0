"""The fit configuration: Lightning's Trainer flags as one checked value.

``FitConfig`` holds every loop flag with Lightning's name, default and meaning.
Each field is validated when the config is built, so no run starts with a bad
value, and the message names the flag, what was given and what is accepted.
The CLI builds its parser from these fields (their ``help`` metadata).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import attrs

from ._flags import (
    LIGHTNING_1X,
    STRATEGIES,
    _check_accumulate,
    _check_callable_or_none,
    _check_choice,
    _check_clip,
    _check_deterministic,
    _check_devices,
    _check_fast_dev_run,
    _check_limit,
    _check_max_epochs,
    _check_max_time,
    _check_path,
    _check_positive,
    _check_precision,
    _check_profiler,
    _check_signal,
    _check_strategy,
    _check_val_check_interval,
    _flag,
    _int_at_least,
    flag_name_error,
    parse_max_time,
    split_strategy,
)
from ._precision import PRECISIONS, Precision, parse_precision

__all__ = [
    "LIGHTNING_1X",
    "STRATEGIES",
    "FitConfig",
    "flag_name_error",
    "parse_max_time",
    "split_strategy",
]


@attrs.frozen(slots=True)
class FitConfig:
    """Every loop flag of ``fit`` with Lightning's names, defaults and checks.

    Build it directly, through ``fit(**flags)``, or from the command line with
    :func:`ftrain.cli.parse_config`. Invalid values raise at construction.

    Example:
        >>> FitConfig(max_epochs=3, val_check_interval=0.25).max_epochs
        3
        >>> FitConfig(val_check_interval=1.5)
        Traceback (most recent call last):
        ...
        ValueError: val_check_interval must be a float in (0.0, 1.0] (a fraction of the training epoch) or an int >= 1 (a number of training batches), got 1.5; or a time: 'DD:HH:MM:SS', a dict of timedelta keywords, or a timedelta
    """

    max_epochs: int | None = _flag(
        None,
        "Stop after this many epochs (-1: no limit).",
        _check_max_epochs,
        shown="None, i.e. 1000 unless max_steps or max_time is set",
    )
    min_epochs: int | None = _flag(
        None,
        "Train at least this many epochs (holds off early stopping).",
        _int_at_least(0, none=True),
    )
    max_steps: int = _flag(
        -1, "Stop after this many optimizer steps (-1: no limit).", _int_at_least(-1)
    )
    min_steps: int | None = _flag(
        None, "Train at least this many optimizer steps.", _int_at_least(0, none=True)
    )
    max_time: Any = _flag(
        None, "Stop after this much training time: 'DD:HH:MM:SS'.", _check_max_time
    )
    limit_train_batches: int | float = _flag(
        1.0, "Training batches per epoch: float = fraction, int = count.", _check_limit
    )
    limit_val_batches: int | float = _flag(
        1.0, "Validation batches per run: float = fraction, int = count, 0 disables.", _check_limit
    )
    limit_test_batches: int | float = _flag(
        1.0, "Test batches: float = fraction, int = count.", _check_limit
    )
    limit_predict_batches: int | float = _flag(
        1.0, "Predict batches: float = fraction, int = count.", _check_limit
    )
    val_check_interval: Any = _flag(
        None,
        "Validate every fraction of an epoch (float), every N training batches (int), or every "
        "'DD:HH:MM:SS' of training time.",
        _check_val_check_interval,
        shown="None, i.e. 1.0: once per epoch",
    )
    check_val_every_n_epoch: int | None = _flag(
        1,
        "Validate every N epochs; None: count val_check_interval batches across epochs.",
        _int_at_least(1, none=True),
    )
    num_sanity_val_steps: int = _flag(
        2, "Validation batches run before training (-1: all).", _int_at_least(-1)
    )
    fast_dev_run: bool | int = _flag(
        False,
        "Run N (True: 1) batches of each kind, no checkpoints or loggers.",
        _check_fast_dev_run,
    )
    reload_dataloaders_every_n_epochs: int = _flag(
        0, "Call the data factories again every N epochs (0: once).", _int_at_least(0)
    )
    accumulate_grad_batches: Any = _flag(
        1, "Accumulate gradients over N batches, or {epoch: N}.", _check_accumulate
    )
    gradient_clip_val: float | None = _flag(
        None, "Clip gradients at this value (<= 0 or None: no clipping).", _check_clip
    )
    gradient_clip_algorithm: str | None = _flag(
        None,
        "'norm' or 'value'.",
        _check_choice(None, "norm", "value"),
        shown="None, i.e. 'norm'",
    )
    precision: Any = _flag("32-true", "One of " + ", ".join(PRECISIONS) + ".", _check_precision)
    accelerator: str = _flag(
        "auto",
        "'cpu', 'gpu', 'cuda', 'mps' or 'auto'.",
        _check_choice("auto", "cpu", "gpu", "cuda", "mps"),
    )
    devices: Any = _flag(
        "auto", "Number of devices, a list of indices, '1,3', -1 or 'auto'.", _check_devices
    )
    strategy: str = _flag(
        "auto",
        "'auto', 'ddp', 'ddp_spawn', 'ddp_fork', 'ddp_notebook' (fork: runs from a Jupyter "
        "kernel), 'fsdp' or 'single_device'; a DDP name may end in "
        "'_find_unused_parameters_true' or '_false'.",
        _check_strategy,
    )
    num_nodes: int = _flag(1, "Number of nodes (checked against the launcher).", _int_at_least(1))
    benchmark: bool | None = _flag(
        None, "Set cudnn.benchmark (None: leave it).", _check_choice(None, True, False)
    )
    deterministic: bool | str | None = _flag(
        None, "Use deterministic algorithms (True, False, 'warn').", _check_deterministic
    )
    default_root_dir: str | None = _flag(
        None, "Where logs and checkpoints go.", _check_path, shown="None: the working directory"
    )
    seed: int | None = _flag(
        None, "Run seed.", _int_at_least(0, none=True), shown="None: the state's seed"
    )
    randomness: str = _flag(
        "step",
        "'step': steps draw from per-step seeds, global streams untouched; 'ambient': the "
        "loop draws from the global generators and loaders keep their own sampling.",
        _check_choice("step", "ambient"),
    )
    log_every_n_steps: int = _flag(
        50, "Write step metrics every N optimizer steps (0: never).", _int_at_least(0)
    )
    enable_progress_bar: bool = _flag(True, "Show a progress bar.", _check_choice(True, False))
    enable_model_summary: bool = _flag(
        True, "Print a model summary at the start.", _check_choice(True, False)
    )
    enable_checkpointing: bool = _flag(
        True, "Save checkpoints (without a policy: the newest epoch).", _check_choice(True, False)
    )
    async_checkpointing: bool = _flag(
        True,
        "Write checkpoints in a background thread: a save costs the step only a copy of "
        "the state to host memory (False: write, fsync and rename before training goes on).",
        _check_choice(True, False),
    )
    barebones: bool = _flag(
        False,
        "Turn off everything that is not training: progress bar, model summary, loggers, "
        "checkpoints, sanity validation.",
        _check_choice(True, False),
    )
    detect_anomaly: bool = _flag(
        False,
        "Run autograd's anomaly detection (slow; names the op that made a NaN).",
        _check_choice(True, False),
    )
    sync_batchnorm: bool = _flag(
        False,
        "Synchronise BatchNorm statistics across processes (DDP).",
        _check_choice(True, False),
    )
    profiler: str | None = _flag(
        None,
        "None, 'simple' (time per phase), 'advanced' (cProfile per phase) or 'pytorch' "
        "(torch.profiler trace).",
        _check_profiler,
    )
    process_timeout: float = _flag(
        300.0,
        "Seconds before a distributed collective gives up (a dead or hung rank ends the job).",
        _check_positive,
    )
    process_group_backend: str | None = _flag(
        None,
        "torch.distributed backend: 'gloo' or 'nccl' (None: nccl on CUDA, gloo on the CPU).",
        _check_choice(None, "gloo", "nccl"),
    )
    agree_every_n_batches: int = _flag(
        10,
        "Distributed runs: ranks agree on stop requests (signals, max_time, callbacks) every "
        "N batches and at each epoch start; 1 = every batch, as Lightning (one collective "
        "per batch).",
        _int_at_least(1),
    )
    find_unused_parameters: bool = _flag(
        False,
        "DDP: allow parameters that take no part in some steps' loss (a skipped branch); "
        "costs a graph traversal per step. Also set by a strategy ending in "
        "'_find_unused_parameters_true'.",
        _check_choice(True, False),
    )
    slurm_auto_requeue: bool = _flag(
        True,
        "Under SLURM: on slurm_requeue_signal, stop after the current batch, save "
        "hpc_ckpt_N.ckpt in default_root_dir, requeue the job with scontrol and exit.",
        _check_choice(True, False),
    )
    slurm_requeue_signal: str = _flag(
        "SIGUSR1",
        "Under SLURM: the signal sent before the time limit (sbatch --signal=USR1@90).",
        _check_signal,
    )
    fsdp_policy: Any = _flag(
        None,
        "strategy='fsdp': a function module -> the submodules to shard, each on its own "
        "(default: the top-level children that hold parameters); the root is sharded last.",
        _check_callable_or_none,
        cli=False,
    )
    use_distributed_sampler: bool = _flag(
        True, "Shard map-style data across ranks.", _check_choice(True, False)
    )
    prefetch: int = _flag(
        0,
        "Training batches read ahead by a background thread while steps run (on CUDA "
        "also copied to the device from pinned memory, non_blocking); 0: off.",
        _int_at_least(0),
    )
    auto_lr_find: bool = _flag(
        False,
        "Before training, run ftrain.tune.lr_find and set its suggested learning rate.",
        _check_choice(True, False),
    )
    auto_scale_batch_size: str | bool | None = _flag(
        None,
        "Before training, find the largest batch size that fits: 'power', 'binsearch' "
        "(True: 'power'); train_data must then be make_data(batch_size) -> loader.",
        _check_choice(None, False, True, "power", "binsearch"),
    )

    def __attrs_post_init__(self) -> None:
        if self.barebones:
            clash = [
                name
                for name, on in (
                    ("fast_dev_run", bool(self.fast_dev_run)),
                    ("detect_anomaly", self.detect_anomaly),
                    ("profiler", self.profiler is not None),
                )
                if on
            ]
            if clash:
                raise ValueError(f"barebones=True cannot be combined with {', '.join(clash)}")
        if self.check_val_every_n_epoch is None and isinstance(self.val_check_interval, float):
            raise ValueError(
                "check_val_every_n_epoch=None needs an int val_check_interval (batches across "
                f"epochs), got val_check_interval={self.val_check_interval!r}"
            )
        if self.gradient_clip_algorithm is not None and self.gradient_clip_val is None:
            pass  # Lightning accepts an algorithm without a value: nothing is clipped.
        if (
            self.min_epochs is not None
            and self.max_epochs is not None
            and self.max_epochs >= 0
            and self.min_epochs > self.max_epochs
        ):
            raise ValueError(
                f"min_epochs ({self.min_epochs}) must not exceed max_epochs ({self.max_epochs})"
            )

    # Resolved values -----------------------------------------------------------------

    @property
    def resolved_precision(self) -> Precision:
        """``precision`` parsed: the one place a run reads its precision setting."""
        return parse_precision(self.precision)

    @property
    def fast_dev_batches(self) -> int:
        """Batches per loop under fast_dev_run (0 when off)."""
        if self.fast_dev_run is True:
            return 1
        return int(self.fast_dev_run) if self.fast_dev_run else 0

    def resolved_max_epochs(self) -> int:
        """max_epochs after Lightning's defaulting: 1000 unless steps or time bound the run."""
        if self.fast_dev_batches:
            return 1
        if self.max_epochs is not None:
            return self.max_epochs
        if self.max_steps != -1 or self.max_time is not None:
            return -1
        return 1000

    def resolved_max_steps(self) -> int:
        """max_steps, forced to the fast_dev_run count when that is on."""
        return self.fast_dev_batches or self.max_steps

    def resolved_min_epochs(self) -> int:
        """min_epochs: 1 when only min_steps is set (Lightning), else 0."""
        if self.min_epochs is not None:
            return self.min_epochs
        return 1 if self.min_steps is not None else 0

    def val_check_seconds(self) -> float | None:
        """A time-based val_check_interval in seconds, or None."""
        value = self.val_check_interval
        if isinstance(value, (str, Mapping, _dt.timedelta)):
            delta = parse_max_time(value)
            return None if delta is None else delta.total_seconds()
        return None

    def max_time_seconds(self) -> float | None:
        """max_time as seconds, or None."""
        delta = parse_max_time(self.max_time)
        return None if delta is None else delta.total_seconds()

    def clip_algorithm(self) -> str:
        """'norm' unless 'value' was asked."""
        return self.gradient_clip_algorithm or "norm"

    def replace(self, **changes: Any) -> FitConfig:
        """A copy with some flags changed (validated again)."""
        return attrs.evolve(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The flags as plain values (recorded in checkpoints and hyperparameters)."""
        out: dict[str, Any] = {}
        for field in attrs.fields(FitConfig):
            value = getattr(self, field.name)
            if isinstance(value, _dt.timedelta):
                value = value.total_seconds()
            elif isinstance(value, Mapping):
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, (list, tuple)):
                value = list(value)
            elif value is not None and not isinstance(value, (bool, int, float, str)):
                value = str(value)  # e.g. a Path: checkpoints hold plain values only
            out[field.name] = value
        return out

    @classmethod
    def flag_names(cls) -> tuple[str, ...]:
        """All flag names."""
        return tuple(f.name for f in attrs.fields(cls))
