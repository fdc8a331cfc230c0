"""``ftrain.cli.main``: LightningCLI's subcommands (fit, validate, test, predict) for a
script that builds its state, steps and data from its own arguments.

``python train.py fit --max_epochs 3 --lr 0.01`` parses the fit options and the
script's own arguments (an attrs class), calls ``build(args, config)`` for the parts,
and runs the verb. ``--print_config`` prints the resolved options and exits; a fit
saves them as ``config.yaml`` in the run's log folder, so ``python train.py fit
--config <log folder>/config.yaml`` repeats the run.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from . import _fs
from ._config import FitConfig
from .driver import fit, predict, test, validate
from .loggers import as_loggers

__all__ = ["COMMANDS", "command_of", "config_text", "run_command"]

COMMANDS = ("fit", "validate", "test", "predict")


def config_text(changed: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    """A config file ``--config`` reads back: the script's own arguments at the top, the
    fit options that differ from the defaults under ``fit``. YAML, or JSON (which YAML
    also reads) without PyYAML.

    Example:
        >>> print(config_text({"max_epochs": 3}, {"lr": 0.1}), end="")
        lr: 0.1
        fit:
          max_epochs: 3
    """
    data = json.loads(json.dumps({**own, "fit": dict(changed)}, default=str))
    try:
        import yaml  # type: ignore[import-untyped]
    except ModuleNotFoundError:
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False))


def command_of(argv: Sequence[str], prog: str) -> str:
    """The subcommand ``argv`` starts with; exits with status 2 and a suggestion if none."""
    if argv and argv[0] in COMMANDS:
        return argv[0]
    given = argv[0] if argv else ""
    close = difflib.get_close_matches(given, COMMANDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    print(
        f"usage: {prog} {{{','.join(COMMANDS)}}} [options]\n{prog}: error: the first argument "
        f"must be a subcommand: {', '.join(COMMANDS)}; got {given!r}{hint}",
        file=sys.stderr,
    )
    raise SystemExit(2)


class _SaveConfig:
    """Writes ``config.yaml`` into the first logger's folder when the fit starts (rank 0)."""

    def __init__(self, text: str, loggers: Sequence[Any], root: str) -> None:
        self.text, self.loggers, self.root = text, loggers, root

    def on_fit_start(self, state: Any) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        folder = (self.loggers[0].log_dir if self.loggers else None) or self.root
        if _fs.is_url(folder):
            _fs.write_bytes(_fs.join(folder, "config.yaml"), self.text.encode("utf-8"))
            return
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(self.text)


_EVAL_FLAGS = (
    "accelerator",
    "devices",
    "precision",
    "seed",
    "fast_dev_run",
    "default_root_dir",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
)


def run_command(
    command: str, parts: Mapping[str, Any], config: FitConfig, text: str, ckpt_path: Any
) -> Any:
    """Run ``command`` on the parts ``build`` returned (see ``ftrain.cli.main``)."""
    parts = dict(parts)
    state = parts.pop("state")
    if command == "fit":
        root = os.fspath(config.default_root_dir or os.getcwd())
        loggers = as_loggers(parts.pop("logger", True), root)
        callbacks = [_SaveConfig(text, loggers, root), *parts.pop("callbacks", ())]
        extra = {
            k: parts[k] for k in ("val_step", "val_data", "checkpoint", "hparams") if k in parts
        }
        return fit(state, parts["train_step"], parts["train_data"], config=config,
                   logger=loggers, callbacks=callbacks, ckpt_path=ckpt_path, **extra)  # fmt: skip
    flags = {name: getattr(config, name) for name in _EVAL_FLAGS}
    callbacks = parts.get("callbacks", ())
    if command == "predict":
        return predict(state, parts["predict_fn"], parts["predict_data"], ckpt_path=ckpt_path,
                       callbacks=callbacks, **flags)  # fmt: skip
    verb, step, data = (
        (validate, "val_step", "val_data")
        if command == "validate"
        else (test, "test_step", "test_data")
    )
    return verb(state, parts[step], parts[data], ckpt_path=ckpt_path, verbose=True,
                checkpoint=parts.get("checkpoint"), callbacks=callbacks, **flags)  # fmt: skip
