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
installed) sets defaults; flags on the command line override it. With
``parse_config`` the file also holds the script's own arguments (``lr = 0.01``),
declared with ``parser.add_argument`` or as an attrs class (``args=``). Boolean
fit flags are ``--enable_progress_bar`` / ``--no-enable_progress_bar``. A
misspelled flag gets "did you mean", a Lightning 1.x flag (``--gpus``) its
current spelling.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._cli_commands import COMMANDS, command_of, config_text, run_command
from ._config import FitConfig, flag_name_error

__all__ = [
    "COMMANDS",
    "add_args",
    "add_fit_args",
    "config_from_args",
    "dump_config",
    "main",
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


def _bool_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_bool(group: Any, name: str, default: Any, help: str, dest: str | None = None) -> None:
    """``--name`` (optionally ``--name false``) and ``--no-name``."""
    dest = dest or name
    group.add_argument(
        f"--{name}", dest=dest, nargs="?", const=True, type=_bool_text, default=default,
        metavar="BOOL", help=help,
    )  # fmt: skip
    group.add_argument(
        f"--no-{name}", dest=dest, action="store_false", default=default, help=argparse.SUPPRESS
    )


def _existing_file(path: str) -> str:
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"no such file: {path!r}")
    return path


_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$")


def _suggesting_error(parser: argparse.ArgumentParser, error: Any) -> Any:
    """``parser.error`` that adds "did you mean" and Lightning 1.x spellings."""

    def fail(message: str) -> Any:
        match = _UNRECOGNIZED.match(message)
        if match:
            given = [w[2:].split("=")[0] for w in match[1].split() if w.startswith("--")]
            known = [s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--")]
            better = flag_name_error(given, known, "", prefix="--", options="arguments")
            if better:
                message = f"{message} ({better.split(': ', 2)[2]})"
        return error(message)

    return fail


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
        type=_existing_file,
        help="read options from a .toml, .json or .yaml file (command-line flags win)",
    )
    for field in _fit_fields():
        shown = field.metadata.get("default_text") or repr(field.default)
        help = f"{field.metadata.get('help', '')} (default: {shown})"
        if field.type == "bool":
            help = f"{help[:-1]}; --no-{field.name} for False)"
            _add_bool(group, field.name, argparse.SUPPRESS, help)
            continue
        group.add_argument(
            f"--{field.name}",
            type=_parse_text if field.type in ("str", "str | None") else parse_value,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=help,
        )
    if not getattr(parser.error, "_ftrain", False):
        error = _suggesting_error(parser, parser.error)
        error._ftrain = True  # type: ignore[attr-defined]
        parser.error = error  # type: ignore[method-assign]
    return parser


def add_args(parser: argparse.ArgumentParser, cls: type) -> argparse.ArgumentParser:
    """Add ``--<field>`` for every field of the attrs class ``cls`` (your own arguments).

    A field's default is the flag's default; a field without one is a required flag;
    ``bool`` fields are ``--x`` / ``--no-x``; ``int``, ``float`` and ``str`` fields are
    parsed as such, others with ``parse_value``. ``metadata={"help": ...}`` is the help.

    Args:
        parser: your parser.
        cls: an attrs class.

    Returns:
        The same parser.

    Raises:
        TypeError: ``cls`` is not an attrs class.

    Example:
        >>> @attrs.define
        ... class Args:
        ...     lr: float = 0.1
        ...     layers: int = 2
        ...     dropout: bool = False
        >>> parser = add_args(argparse.ArgumentParser(), Args)
        >>> Args(**vars(parser.parse_args(["--lr", "0.01", "--dropout"])))
        Args(lr=0.01, layers=2, dropout=True)
    """
    if not attrs.has(cls):
        raise TypeError(f"add_args: cls must be an attrs class, got {cls!r}")
    attrs.resolve_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} (the script's own arguments)")
    for field in attrs.fields(cls):
        required = field.default is attrs.NOTHING
        default: Any = None if required else field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        help = field.metadata.get("help", "")
        help = f"{help} (required)" if required else f"{help} (default: {default!r})"
        if field.type is bool:
            _add_bool(group, field.name, default, f"{help[:-1]}; --no-{field.name} for False)")
            continue
        kind = field.type if field.type in (int, float, str) else parse_value
        group.add_argument(
            f"--{field.name}", type=kind, default=default, required=required, help=help.strip()
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
    return data


def _split_file(path: str, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fit options, the script's own arguments) of a config file's table.

    Fit options are the ``[fit]`` table, or the top-level keys that are fit flags.
    """
    names = set(FitConfig.flag_names())
    if isinstance(data.get("fit"), dict):
        fit = dict(data["fit"])
        own = {k: v for k, v in data.items() if k != "fit"}
        unknown = sorted(set(fit) - names)
        if unknown:
            raise ValueError(
                flag_name_error(unknown, names, f"--config {path}", options="fit options")
            )
    else:
        fit = {k: v for k, v in data.items() if k in names}
        own = {k: v for k, v in data.items() if k not in names}
    return {k: _int_keys(v) for k, v in fit.items()}, own


def _own_names(args: Any) -> list[str]:
    return [k for k in vars(args) if k not in FitConfig.flag_names() and k != "config"]


def config_from_args(args: argparse.Namespace, **overrides: Any) -> FitConfig:
    """Build a checked ``FitConfig`` from parsed arguments (file, then flags, then overrides).

    Raises:
        ValueError: the ``--config`` file holds a name that is neither a fit option nor
            one of the script's own arguments (an attribute of ``args``).
    """
    values: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path:
        with_own = _read_file(path)
        fit, own = _split_file(path, with_own)
        mine = _own_names(args)
        unknown = [k for k in own if k not in mine]
        if unknown:
            raise ValueError(
                flag_name_error(
                    unknown,
                    [*FitConfig.flag_names(), *mine],
                    f"--config {path}",
                    options="options (neither fit options nor the script's own arguments)",
                )
            )
        values.update(fit)
    names = set(FitConfig.flag_names())
    values.update({k: v for k, v in vars(args).items() if k in names})
    values.update(overrides)
    return FitConfig(**values)


def parse_config(
    argv: Sequence[str] | None = None,
    *,
    parser: argparse.ArgumentParser | None = None,
    args: type | None = None,
) -> tuple[FitConfig, Any]:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into a ``FitConfig`` and your arguments.

    The ``--config`` file may hold your own arguments beside the fit options (flat,
    or fit options under ``[fit]``); command-line flags win over the file.

    Args:
        argv: the arguments.
        parser: your parser with your own arguments (fit's are added).
        args: an attrs class of your own arguments (see ``add_args``).

    Returns:
        ``(config, namespace)``, or ``(config, args instance)`` when ``args`` is given.

    Example:
        >>> config, _ = parse_config(["--max_steps", "10", "--precision", "bf16-mixed"])
        >>> config.max_steps, config.precision
        (10, 'bf16-mixed')
    """
    parser = parser or argparse.ArgumentParser(description="ftrain fit options")
    if args is not None:
        add_args(parser, args)
    if not any(g.title == _GROUP for g in parser._action_groups):
        add_fit_args(parser)
    # The file first: its values for the script's own arguments become their defaults.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config", type=_existing_file, default=None)
    early.error = parser.error  # type: ignore[method-assign]
    found, _ = early.parse_known_args(argv)
    if found.config:
        try:
            own = _split_file(found.config, _read_file(found.config))[1]
        except (ValueError, OSError) as exc:
            parser.error(str(exc))
        dests = {a.dest for a in parser._actions}
        parser.set_defaults(**{k: v for k, v in own.items() if k in dests})
    namespace = parser.parse_args(argv)
    try:
        config = config_from_args(namespace)
        if args is None:
            return config, namespace
        fields = {f.name for f in attrs.fields(args)}
        return config, args(**{k: v for k, v in vars(namespace).items() if k in fields})
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


def main(
    build: Callable[[Any, FitConfig], Mapping[str, Any]],
    argv: Sequence[str] | None = None,
    *,
    args: type | None = None,
    prog: str | None = None,
) -> Any:
    """LightningCLI's subcommands: ``fit``, ``validate``, ``test``, ``predict``.

    ``python train.py fit --max_epochs 3 --lr 0.01``: the fit options and the script's
    own arguments are parsed (``--config FILE`` too), ``build(own, config)`` returns
    the parts, and the verb runs. ``--print_config`` prints the resolved options as a
    config file and exits; ``fit`` writes the same text to ``config.yaml`` in the run's
    log folder, so ``fit --config <that file>`` repeats the run. ``--ckpt_path`` is the
    verb's ``ckpt_path``.

    Args:
        build: ``(own arguments, config) -> parts``: ``state``; for fit ``train_step``,
            ``train_data`` and optionally ``val_step``, ``val_data``, ``checkpoint``,
            ``callbacks``, ``logger``, ``hparams``; for validate ``val_step``,
            ``val_data``; for test ``test_step``, ``test_data``; for predict
            ``predict_fn``, ``predict_data``.
        argv: the arguments, subcommand first (default: ``sys.argv[1:]``).
        args: an attrs class of the script's own arguments (see ``add_args``).
        prog: the program name in messages.

    Returns:
        What the verb returns: a ``FitResult``, a metrics dict, or the predictions.

    Raises:
        SystemExit: no or an unknown subcommand or a bad option (status 2, with a
            suggestion), or ``--print_config`` (status 0).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0] or "train.py")
    command = command_of(argv, prog)
    parser = argparse.ArgumentParser(prog=f"{prog} {command}")
    parser.add_argument("--print_config", action="store_true", help="print the options and exit")
    parser.add_argument("--ckpt_path", default=None, help='a checkpoint file, "last" or "best"')
    config, own = parse_config(argv[1:], parser=parser, args=args)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--print_config", action="store_true")
    early.add_argument("--ckpt_path", default=None)
    extra = early.parse_known_args(argv[1:])[0]
    names = [f.name for f in attrs.fields(args)] if args is not None else []
    changed = {
        f.name: _text_value(getattr(config, f.name))
        for f in _fit_fields()
        if not _is_default(getattr(config, f.name), f.default)
    }
    text = config_text(changed, {n: _text_value(getattr(own, n)) for n in names})
    if extra.print_config:
        print(text, end="")
        raise SystemExit(0)
    return run_command(command, build(own, config), config, text, extra.ckpt_path)
