"""The checks of ``FitConfig``'s flags, and parsers of flag values and names."""

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

from ._devices import parse_devices
from ._fs import check_url, is_url
from ._precision import parse_precision
from ._step import _check_accumulate as check_accumulate

__all__ = ["LIGHTNING_1X", "STRATEGIES", "flag_name_error", "parse_max_time", "split_strategy"]

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
        >>> from ftrain import FitConfig
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
    try:
        check_accumulate(value)
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
    if is_url(value):
        check_url(value, attribute.name)  # an unknown protocol or a missing package fails here


def _flag(
    default: Any, help: str, validator: Any = None, cli: bool = True, shown: str | None = None
) -> Any:
    # ``shown``: how --help states the default when None stands for a resolved value.
    metadata = {"help": help, "cli": cli, "default_text": shown}
    return attrs.field(default=default, validator=validator, metadata=metadata)
