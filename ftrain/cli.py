"""Command-line flags for every ``fit`` option, built from ``FitConfig``.

``python main.py --accelerator cpu --devices 1 --max_steps 10 --precision bf16-mixed``
works without declaring a flag by hand::

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)   # your own flags
    ftrain.cli.add_fit_args(parser)
    args = parser.parse_args()
    config = ftrain.cli.config_from_args(args)            # a checked FitConfig
    ftrain.fit(state, step, data, config=config)

A config file (``--config run.toml`` or ``.json``; ``.yaml`` when PyYAML is
installed) sets defaults; flags on the command line override it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._config import FitConfig

__all__ = [
    "add_fit_args",
    "config_from_args",
    "dump_config",
    "parse_config",
    "parse_value",
    "to_argv",
]

_GROUP = "fit options (ftrain.FitConfig)"


def parse_value(text: str) -> Any:
    """Parse a flag value: None/null, true/false, int, float, JSON list/dict, else the string.

    Example:
        >>> parse_value("10"), parse_value("0.25"), parse_value("None"), parse_value("bf16-mixed")
        (10, 0.25, None, 'bf16-mixed')
        >>> parse_value('{"0": 1, "4": 2}')
        {0: 1, 4: 2}
    """
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.strip()[:1] in ("[", "{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"cannot parse {text!r}: {exc}") from None
        return _int_keys(value)
    return text


def _int_keys(value: Any) -> Any:
    # JSON object keys are strings; the accumulate schedule needs int epochs.
    if isinstance(value, dict):
        return {
            int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v
            for k, v in value.items()
        }
    return value


def _parse_text(text: str) -> str | None:
    """A path or name flag keeps its text ("1" stays a string); None/null is None."""
    return None if text.strip().lower() in ("none", "null") else text


def _text_value(value: Any) -> Any:
    """A flag value in a form ``parse_value`` (and a JSON config file) reads back."""
    if isinstance(value, datetime.timedelta):
        if value.microseconds:
            return {
                "days": value.days,
                "seconds": value.seconds,
                "microseconds": value.microseconds,
            }
        hours, rest = divmod(value.seconds, 3600)
        return f"{value.days}:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def _is_default(value: Any, default: Any) -> bool:
    # By type too: limit_*_batches=1 (one batch) is not the default 1.0 (all of them).
    return type(value) is type(default) and value == default


def _fit_fields() -> list[attrs.Attribute[Any]]:
    return [f for f in attrs.fields(FitConfig) if f.metadata.get("cli", True)]


def add_fit_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--<flag>`` for every ``FitConfig`` field, and ``--config FILE``.

    Args:
        parser: your parser (it keeps its own flags).

    Returns:
        The same parser.
    """
    group = parser.add_argument_group(_GROUP)
    group.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="read fit options from a .toml, .json or .yaml file (command-line flags win)",
    )
    for field in _fit_fields():
        default = field.default
        group.add_argument(
            f"--{field.name}",
            type=_parse_text if field.type in ("str", "str | None") else parse_value,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"{field.metadata.get('help', '')} (default: {default!r})",
        )
    return parser


def _read_file(path: str) -> dict[str, Any]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        with open(path) as f:
            data = json.load(f)
    elif ext == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        with open(path, "rb") as f:
            data = tomllib.load(f)
    elif ext in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ModuleNotFoundError:
            raise ValueError(
                f"--config {path}: reading YAML needs PyYAML (pip install pyyaml)"
            ) from None
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    else:
        raise ValueError(f"--config {path}: unknown file type {ext!r}; use .toml, .json or .yaml")
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path}: expected a table of fit options, got {type(data).__name__}"
        )
    data = dict(data.get("fit", data))
    unknown = sorted(set(data) - set(FitConfig.flag_names()))
    if unknown:
        raise ValueError(f"--config {path}: unknown fit options {unknown}")
    return {k: _int_keys(v) for k, v in data.items()}


def config_from_args(args: argparse.Namespace, **overrides: Any) -> FitConfig:
    """Build a checked ``FitConfig`` from parsed arguments (file, then flags, then overrides)."""
    values: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path:
        values.update(_read_file(path))
    names = set(FitConfig.flag_names())
    values.update({k: v for k, v in vars(args).items() if k in names})
    values.update(overrides)
    return FitConfig(**values)


def parse_config(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> tuple[FitConfig, argparse.Namespace]:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into a ``FitConfig`` and the namespace.

    Example:
        >>> config, _ = parse_config(["--max_steps", "10", "--precision", "bf16-mixed"])
        >>> config.max_steps, config.precision
        (10, 'bf16-mixed')
    """
    parser = parser or argparse.ArgumentParser(description="ftrain fit options")
    if not any(g.title == _GROUP for g in parser._action_groups):
        add_fit_args(parser)
    args = parser.parse_args(argv)
    try:
        return config_from_args(args), args
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def to_argv(config: FitConfig, *, only_changed: bool = True) -> list[str]:
    """The command-line flags that rebuild ``config`` (round trip of ``parse_config``)."""
    argv: list[str] = []
    for field in _fit_fields():
        value = getattr(config, field.name)
        if only_changed and _is_default(value, field.default):
            continue
        value = _text_value(value)
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        argv += [f"--{field.name}", text]
    return argv


def dump_config(config: FitConfig, path: str | os.PathLike[str]) -> None:
    """Write the flags that differ from the defaults to a JSON file ``--config`` reads."""
    changed = {
        f.name: getattr(config, f.name)
        for f in _fit_fields()
        if not _is_default(getattr(config, f.name), f.default)
    }
    serial: Mapping[str, Any] = {k: _text_value(v) for k, v in changed.items()}
    with open(path, "w") as f:
        json.dump(dict(serial), f, indent=2, default=str)
