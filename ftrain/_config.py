"""The fit configuration: Lightning's Trainer flags as one checked value.

``FitConfig`` holds every loop flag with Lightning's name, default and meaning.
Each field is validated when the config is built, so no run starts with a bad
value, and the message names the flag, what was given and what is accepted.
The CLI builds its parser from these fields (their ``help`` metadata).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
import re
import signal
from collections.abc import Mapping
from typing import Any

import attrs

from ._precision import PRECISIONS, parse_precision

__all__ = ["LIGHTNING_1X", "FitConfig", "flag_name_error", "parse_max_time"]

# Lightning 1.x Trainer arguments removed in 2.x, and what ftrain calls them.
LIGHTNING_1X: dict[str, str] = {
    "gpus": "accelerator='gpu', devices=N",
    "num_processes": "accelerator='cpu', devices=N",
    "tpu_cores": "accelerator and devices (ftrain runs on cpu, cuda and mps)",
    "ipus": "accelerator and devices (ftrain runs on cpu, cuda and mps)",
    "auto_select_gpus": "devices='auto' or a count",
    "resume_from_checkpoint": "fit(..., ckpt_path=PATH)",
    "progress_bar_refresh_rate": "enable_progress_bar=True/False",
    "weights_summary": "enable_model_summary=True/False",
    "checkpoint_callback": "enable_checkpointing=True/False",
    "distributed_backend": "strategy='ddp' (or 'fsdp', ...)",
    "replace_sampler_ddp": "use_distributed_sampler",
    "reload_dataloaders_every_epoch": "reload_dataloaders_every_n_epochs=1",
    "terminate_on_nan": "detect_anomaly=True, or the ft.skip_nonfinite combinator",
    "amp_backend": "precision='16-mixed' (or 'bf16-mixed')",
    "amp_level": "precision='16-mixed' (or 'bf16-mixed')",
    "track_grad_norm": "the grad_norm metric that gradient clipping reports",
    "flush_logs_every_n_steps": "nothing: loggers write at each log point",
    "move_metrics_to_cpu": "nothing: metrics stay on the device until a log point",
    "stochastic_weight_avg": "torch.optim.swa_utils in a callback",
    "truncated_bptt_steps": "splitting the sequence inside your step",
    "log_gpu_memory": "a callback reading torch.cuda.memory_allocated()",
    "multiple_trainloader_mode": "combining the loaders into one iterable yourself",
}


def flag_name_error(
    names: Any, known: Any, where: str, *, prefix: str = "", options: str = "flags"
) -> str | None:
    """The message for flag names that are not ``known``, or None when all are.

    Lightning 1.x names get their current spelling; misspellings get "did you mean".

    Args:
        names: the names given.
        known: the accepted names.
        where: what is complaining (``"fit"``, ``"--config run.toml"``).
        prefix: put before each name (``"--"`` on the command line).
        options: what the accepted names are called in the message.

    Returns:
        The message, or None.

    Example:
        >>> print(flag_name_error(["max_epoch", "gpus"], FitConfig.flag_names(), "fit"))
        fit: unknown flags ['max_epoch', 'gpus']: 'gpus' is a Lightning 1.x flag, use accelerator='gpu', devices=N; 'max_epoch': did you mean 'max_epochs'?
    """
    known = list(known)
    unknown = [n for n in names if n not in known]
    if not unknown:
        return None
    hints = []
    for name in sorted(unknown, key=lambda n: n not in LIGHTNING_1X):
        if name in LIGHTNING_1X:
            hints.append(f"'{prefix}{name}' is a Lightning 1.x flag, use {LIGHTNING_1X[name]}")
            continue
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.8)
        if close:
            hints.append(
                f"'{prefix}{name}': did you mean "
                + " or ".join(f"'{prefix}{c}'" for c in close)
                + "?"
            )
    listed = [prefix + n for n in unknown]
    tail = "; ".join(hints) if hints else f"accepted: {sorted(known)}"
    return f"{where}: unknown {options} {listed}: {tail}"


_TIME_RE = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")
_TIME_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


def parse_max_time(value: Any) -> _dt.timedelta | None:
    """Parse ``max_time``: "DD:HH:MM:SS", a dict of timedelta keywords, or a timedelta.

    Raises:
        ValueError: any other form.

    Example:
        >>> parse_max_time("00:12:00:00")
        datetime.timedelta(seconds=43200)
        >>> parse_max_time({"days": 1, "hours": 5})
        datetime.timedelta(days=1, seconds=18000)
    """
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        delta = value
    elif isinstance(value, str):
        match = _TIME_RE.match(value.strip())
        if not match:
            raise ValueError(
                f"max_time: expected 'DD:HH:MM:SS' (e.g. '00:12:00:00'), a dict like "
                f"{{'days': 1, 'hours': 5}} or a timedelta, got {value!r}"
            )
        d, h, m, s = (int(g) for g in match.groups())
        delta = _dt.timedelta(days=d, hours=h, minutes=m, seconds=s)
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - set(_TIME_KEYS))
        if unknown:
            raise ValueError(f"max_time: unknown keys {unknown}; accepted: {list(_TIME_KEYS)}")
        for key, part in value.items():
            if isinstance(part, bool) or not isinstance(part, (int, float)):
                raise ValueError(f"max_time: {key!r} must be a number, got {part!r}")
        try:
            delta = _dt.timedelta(**value)
        except OverflowError:
            raise ValueError(f"max_time: {dict(value)!r} is too long a time") from None
    else:
        raise ValueError(
            f"max_time: expected 'DD:HH:MM:SS', a dict or a timedelta, got {type(value).__name__}"
        )
    if delta.total_seconds() <= 0:
        raise ValueError(f"max_time must be positive, got {value!r}")
    return delta


def _int_at_least(low: int, *, none: bool = False) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            extra = " or None" if none else ""
            raise ValueError(f"{attribute.name} must be an int >= {low}{extra}, got {value!r}")

    return check


def _check_limit(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool):
        raise ValueError(
            f"{attribute.name} must be an int >= 0 or a float in [0.0, 1.0], got {value!r}"
        )
    if isinstance(value, int) and value >= 0:
        return
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return
    if isinstance(value, float) and value > 1.0 and value.is_integer():
        return
    raise ValueError(
        f"{attribute.name} must be an int >= 0 (a number of batches) or a float in [0.0, 1.0] "
        f"(a fraction of the data), got {value!r}"
    )


def _check_val_check_interval(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, Mapping, _dt.timedelta)):
        try:
            parse_max_time(value)
        except ValueError as exc:
            raise ValueError(str(exc).replace("max_time", "val_check_interval")) from None
        return
    if isinstance(value, bool):
        raise ValueError(
            f"val_check_interval must be a float in (0.0, 1.0] or an int >= 1, got {value!r}"
        )
    if isinstance(value, int) and value >= 1:
        return
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return
    raise ValueError(
        "val_check_interval must be a float in (0.0, 1.0] (a fraction of the training epoch) "
        f"or an int >= 1 (a number of training batches), got {value!r}; or a time: "
        "'DD:HH:MM:SS', a dict of timedelta keywords, or a timedelta"
    )


def _check_accumulate(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    from ._step import _check_accumulate as check

    try:
        check(value)
    except ValueError as err:  # name the flag, not the combinator
        raise ValueError(str(err).replace("accumulate:", f"{attribute.name}:", 1)) from None


def _check_precision(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    parse_precision(value)


def _check_choice(*choices: Any) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        # Compared with the type: 1 and 0 are not the choices True and False.
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ValueError(
                f"{attribute.name}: unknown value {value!r}; accepted: "
                + ", ".join(repr(c) for c in choices)
            )

    return check


def _check_devices(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    from ._devices import parse_devices

    parse_devices(value)


def _check_clip(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"gradient_clip_val must be a number or None, got {type(value).__name__} {value!r}"
        )
    if math.isnan(value):
        raise ValueError("gradient_clip_val must not be NaN")


def _check_max_time(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    parse_max_time(value)


def _check_fast_dev_run(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and value >= 0:
        return
    raise ValueError(f"fast_dev_run must be a bool or an int >= 0, got {value!r}")


def _check_max_epochs(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(
            f"{attribute.name} must be an int >= -1 (-1 = no limit) or None, got {value!r}"
        )


def _check_deterministic(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in (None, True, False, "warn"):
        raise ValueError(f"deterministic must be None, True, False or 'warn', got {value!r}")


def _check_profiler(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in (None, "simple", "advanced", "pytorch"):
        raise ValueError(
            f"profiler: unknown value {value!r}; accepted: None, 'simple', 'advanced', 'pytorch'"
        )


STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "single_device")
_UNUSED_SUFFIXES = {"_find_unused_parameters_true": True, "_find_unused_parameters_false": False}


def split_strategy(name: str) -> tuple[str, bool | None]:
    """A strategy name without Lightning's ``_find_unused_parameters_*`` suffix, and the
    value the suffix sets (None without one).

    Example:
        >>> split_strategy("ddp_find_unused_parameters_true")
        ('ddp', True)
    """
    for suffix, value in _UNUSED_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], value
    return name, None


def _check_strategy(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    base, unused = split_strategy(value) if isinstance(value, str) else (value, None)
    ddp = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
    if base not in STRATEGIES or (unused is not None and base not in ddp):
        raise ValueError(
            f"strategy: unknown value {value!r}; accepted: "
            + ", ".join(repr(c) for c in STRATEGIES)
            + ", or a DDP one ending in '_find_unused_parameters_true'/'_false'"
        )


def _check_signal(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    names = sorted(s.name for s in signal.Signals)
    if not isinstance(value, str) or value not in names:
        raise ValueError(
            f"{attribute.name} must be a signal name such as 'SIGUSR1' or 'SIGHUP', got {value!r}"
        )


def _check_positive(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number of seconds > 0, got {value!r}")


def _check_callable_or_none(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{attribute.name} must be a function module -> submodules, or None, "
            f"got {type(value).__name__}"
        )


def _check_path(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{attribute.name} must be a path (str or os.PathLike) or None, "
            f"got {type(value).__name__} {value!r}"
        )
    if isinstance(value, str) and _URL.match(value):
        raise ValueError(
            f"{attribute.name}={value!r}: URL paths (s3://, gs://, memory://, ...) are not "
            "supported; logs and checkpoints are written with the local file API. Use a "
            "local folder (a bucket mounted as a folder works)"
        )


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _flag(
    default: Any, help: str, validator: Any = None, cli: bool = True, shown: str | None = None
) -> Any:
    # ``shown``: how --help states the default when None stands for a resolved value.
    metadata = {"help": help, "cli": cli, "default_text": shown}
    return attrs.field(default=default, validator=validator, metadata=metadata)


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
