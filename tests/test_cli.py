"""The command line: every FitConfig flag, config files, round trips and argparse errors."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

import ftrain as ft
from ftrain.cli import (
    add_args,
    add_fit_args,
    config_from_args,
    dump_config,
    parse_config,
    parse_value,
    to_argv,
)

CLI_FLAGS = [f.name for f in attrs.fields(ft.FitConfig) if f.metadata.get("cli", True)]

CONFIGS = [
    ft.FitConfig(),
    ft.FitConfig(max_epochs=3, min_epochs=1, max_steps=100, min_steps=5),
    ft.FitConfig(
        max_time="00:01:30:00",
        limit_train_batches=0.5,
        limit_val_batches=3,
        limit_test_batches=0,
        val_check_interval=0.25,
        num_sanity_val_steps=-1,
        fast_dev_run=3,
        reload_dataloaders_every_n_epochs=2,
    ),
    ft.FitConfig(
        accumulate_grad_batches={0: 1, 4: 2},
        gradient_clip_val=0.5,
        gradient_clip_algorithm="value",
        precision="bf16-mixed",
        accelerator="cpu",
        devices="1,3",
        strategy="ddp",
        num_nodes=2,
    ),
    ft.FitConfig(
        val_check_interval=50,
        check_val_every_n_epoch=None,
        benchmark=False,
        deterministic="warn",
        default_root_dir="2024",  # a path that looks like a number stays a string
        seed=7,
        log_every_n_steps=5,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        profiler="simple",
        use_distributed_sampler=False,
        max_time={"hours": 2},
        devices=[0, 2],
        precision=16,
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_to_argv_round_trip(config: ft.FitConfig) -> None:
    """parse_config(to_argv(config)) rebuilds the same config, with only the changed flags or
    with all of them."""
    assert parse_config(to_argv(config))[0] == config
    full = to_argv(config, only_changed=False)
    assert len(full) == 2 * len(CLI_FLAGS)
    assert parse_config(full)[0] == config


def test_one_batch_is_not_all_batches() -> None:
    """limit_val_batches=1 (one batch) survives the round trip as the int 1, although it
    compares equal to the default 1.0 (all batches)."""
    config = ft.FitConfig(limit_val_batches=1, limit_train_batches=1)
    argv = to_argv(config)
    assert argv == ["--limit_train_batches", "1", "--limit_val_batches", "1"]
    back = parse_config(argv)[0]
    assert type(back.limit_val_batches) is int and type(back.limit_train_batches) is int


def test_timedelta_max_time_round_trip() -> None:
    """A timedelta max_time is written as 'D:HH:MM:SS' (or a dict with microseconds) and
    comes back as the same duration."""
    for delta in [datetime.timedelta(days=1, hours=2, seconds=5), datetime.timedelta(seconds=1.5)]:
        config = ft.FitConfig(max_time=delta)
        back = parse_config(to_argv(config))[0]
        assert back.max_time_seconds() == config.max_time_seconds()
    assert to_argv(ft.FitConfig(max_time=datetime.timedelta(hours=30))) == [
        "--max_time",
        "1:06:00:00",
    ]


def test_help_lists_every_flag_with_its_default(capsys: Any) -> None:
    """--help shows --config and each FitConfig flag with its help text and default."""
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--help"])
    assert exit_info.value.code == 0
    # Undo argparse's line wrapping (which also breaks after "--no-").
    text = " ".join(capsys.readouterr().out.split()).replace("--no- ", "--no-")
    assert "--config FILE" in text
    for field in attrs.fields(ft.FitConfig):
        if not field.metadata.get("cli", True):
            assert f"--{field.name} " not in text
            continue
        metavar = "[BOOL]" if field.type == "bool" else "VALUE"
        assert f"--{field.name} {metavar}" in text
        help_text = " ".join(field.metadata["help"].split())
        shown = field.metadata.get("default_text") or repr(field.default)
        if field.type == "bool":
            shown += f"; --no-{field.name} for False"
        assert f"{help_text} (default: {shown})" in text
        # One default per flag, the real one: the help text itself states none.
        assert "default" not in help_text.lower().replace("default_root_dir", "")
    assert text.count("(default: ") >= len(attrs.fields(ft.FitConfig)) - 1


def test_own_flags_kept_and_overrides_win() -> None:
    """add_fit_args adds to the user's parser; config_from_args applies file < flags <
    overrides."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    assert add_fit_args(parser) is parser
    args = parser.parse_args(["--lr", "0.5", "--max_epochs", "4", "--precision", "bf16-mixed"])
    assert args.lr == 0.5
    config = config_from_args(args, max_epochs=9)
    assert (config.max_epochs, config.precision) == (9, "bf16-mixed")
    config, args = parse_config(["--max_steps", "3"], parser=parser)
    assert config.max_steps == 3 and args.lr == 0.1


@pytest.mark.parametrize("ext", ["toml", "json"])
def test_config_file_with_command_line_override(ext: str, tmp_path: Path) -> None:
    """A .toml or .json file sets fit options (top level or under [fit]); flags given on the
    command line win over it."""
    path = tmp_path / f"run.{ext}"
    if ext == "toml":
        path.write_text(
            '[fit]\nmax_epochs = 5\nprecision = "bf16-mixed"\nval_check_interval = 0.5\n'
            'max_time = "00:00:10:00"\n[fit.accumulate_grad_batches]\n0 = 1\n3 = 4\n'
        )
    else:
        path.write_text(
            json.dumps(
                {
                    "max_epochs": 5,
                    "precision": "bf16-mixed",
                    "val_check_interval": 0.5,
                    "max_time": "00:00:10:00",
                    "accumulate_grad_batches": {"0": 1, "3": 4},
                }
            )
        )
    config, _ = parse_config(["--config", str(path), "--max_epochs", "2"])
    assert config.max_epochs == 2
    assert config.precision == "bf16-mixed"
    assert config.val_check_interval == 0.5
    assert config.max_time_seconds() == 600.0
    assert config.accumulate_grad_batches == {0: 1, 3: 4}


def test_dump_config_reads_back(tmp_path: Path) -> None:
    """dump_config writes the changed flags as JSON that --config reads into the same config."""
    for config in CONFIGS:
        path = tmp_path / "dumped.json"
        dump_config(config, path)
        assert parse_config(["--config", str(path)])[0] == config
    delta = ft.FitConfig(max_time=datetime.timedelta(minutes=5))
    dump_config(delta, tmp_path / "d.json")
    assert parse_config(["--config", str(tmp_path / "d.json")])[0].max_time_seconds() == 300.0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--max_epochs", "abc"], "max_epochs must be an int >= -1"),
        (["--val_check_interval", "1.5"], "val_check_interval must be a float in (0.0, 1.0]"),
        (["--precision", "fp8"], "precision: unknown value 'fp8'"),
        (["--max_time", "12h"], "max_time: expected 'DD:HH:MM:SS'"),
        (["--limit_train_batches", "-1"], "limit_train_batches must be an int >= 0"),
        (["--devices", "0"], "devices must be an int >= 1"),
        (["--enable_progress_bar", "maybe"], "expected true or false, got 'maybe'"),
        (["--acelerator", "cpu"], "('--acelerator': did you mean '--accelerator'?)"),
        (["--gpus", "1"], "'--gpus' is a Lightning 1.x flag, use accelerator='gpu', devices=N"),
        (["--config", "missing.toml"], "argument --config: no such file: 'missing.toml'"),
        (["--accumulate_grad_batches", "{bad"], "argument --accumulate_grad_batches: cannot parse"),
        (["--epochs", "3"], "unrecognized arguments: --epochs 3"),
        (["--max_epochs"], "argument --max_epochs: expected one argument"),
    ],
)
def test_bad_values_are_argparse_errors_naming_the_flag(
    argv: list[str], fragment: str, capsys: Any
) -> None:
    """A bad value exits with argparse's usage error (code 2) and a message naming the flag."""
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert fragment in err


@pytest.mark.parametrize(
    ("content", "name", "fragment"),
    [
        ('{"max_epoch": 3}', "a.json", "'max_epoch': did you mean 'max_epochs'?"),
        ('{"fit": {"max_epoch": 3}}', "a.json", "unknown fit options ['max_epoch']"),
        ('{"lr": 3}', "a.json", "unknown options (neither fit options nor the script's own"),
        ("[1, 2]", "b.json", "expected a table of fit options, got list"),
        ("max_epochs: 3", "c.ini", "unknown file type '.ini'"),
    ],
)
def test_bad_config_files(
    content: str, name: str, fragment: str, tmp_path: Path, capsys: Any
) -> None:
    """An unknown option, a non-table or an unknown file type in --config is a usage error."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SystemExit):
        parse_config(["--config", str(path)])
    assert fragment in capsys.readouterr().err


def test_parse_value_forms() -> None:
    """Values: None/null, true/false, int, float, JSON list/dict (int keys), else the text."""
    assert parse_value("null") is None and parse_value("None") is None
    assert parse_value("TRUE") is True and parse_value("false") is False
    assert parse_value("-1") == -1 and parse_value("1e-3") == 0.001
    assert parse_value("[0, 1]") == [0, 1]
    assert parse_value('{"0": 1, "x": 2}') == {0: 1, "x": 2}
    assert parse_value("00:12:00:00") == "00:12:00:00"
    with pytest.raises(argparse.ArgumentTypeError, match="cannot parse"):
        parse_value("[1,")


def test_boolean_flags_both_spellings() -> None:
    """A boolean fit flag is --x, --no-x, or --x with a value; the last one given wins."""
    assert parse_config(["--no-enable_progress_bar"])[0].enable_progress_bar is False
    assert parse_config(["--barebones"])[0].barebones is True
    assert parse_config(["--enable_checkpointing", "false"])[0].enable_checkpointing is False
    flags = ["--no-enable_model_summary", "--enable_model_summary"]
    assert parse_config(flags)[0].enable_model_summary is True
    assert parse_config([])[0].enable_progress_bar is True


@attrs.define
class Args:
    """The script's own arguments."""

    lr: float = attrs.field(default=0.1, metadata={"help": "learning rate"})
    layers: int = 2
    name: str = "run"
    dropout: bool = False
    sizes: list = attrs.field(factory=lambda: [8, 8])  # type: ignore[type-arg]


def test_config_file_holds_the_scripts_own_arguments(tmp_path: Path) -> None:
    """With an attrs class of the script's arguments, the file sets them and fit's options
    (flat or under [fit]); command-line flags win over the file."""
    flat = tmp_path / "flat.toml"
    flat.write_text('lr = 0.01\nname = "big"\ndropout = true\nmax_epochs = 7\n')
    config, args = parse_config(["--config", str(flat), "--layers", "4"], args=Args)
    assert args == Args(lr=0.01, layers=4, name="big", dropout=True, sizes=[8, 8])
    assert config.max_epochs == 7
    tables = tmp_path / "tables.toml"
    tables.write_text("lr = 0.5\nsizes = [1, 2]\n[fit]\nmax_steps = 3\n")
    config, args = parse_config(["--config", str(tables), "--lr", "0.2"], args=Args)
    assert (args.lr, args.sizes, config.max_steps) == (0.2, [1, 2], 3)
    # The same with the script's own argparse flags.
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    with_lr = tmp_path / "lr.toml"
    with_lr.write_text("lr = 0.5\nmax_steps = 3\n")
    config, namespace = parse_config(["--config", str(with_lr)], parser=parser)
    assert namespace.lr == 0.5 and config.max_steps == 3
    with pytest.raises(SystemExit):  # sizes is not one of this parser's arguments
        parse_config(["--config", str(tables)], parser=parser)


def test_add_args_help_and_required(capsys: Any) -> None:
    """add_args shows each field's help and default; a field without default is required."""

    @attrs.define
    class Needs:
        data: str
        epochs_per_eval: int = 1

    parser = add_args(argparse.ArgumentParser(), Args)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr LR learning rate (default: 0.1)" in text
    assert "--dropout [BOOL] (default: False; --no-dropout for False)" in text
    with pytest.raises(SystemExit) as exit_info:
        add_args(argparse.ArgumentParser(), Needs).parse_args([])
    assert exit_info.value.code == 2
    assert "required: --data" in capsys.readouterr().err
    with pytest.raises(TypeError, match="must be an attrs class"):
        add_args(argparse.ArgumentParser(), dict)


def test_fit_suggests_flag_names() -> None:
    """fit(**flags) names a misspelled flag's likely meaning and a 1.x flag's new spelling."""
    model = torch.nn.Linear(1, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"'max_epoch': did you mean 'max_epochs'\?"):
        ft.fit(state, ft.train_step(lambda m, b: m(b).sum()), [torch.ones(1)], max_epoch=1)
    with pytest.raises(TypeError, match=r"'resume_from_checkpoint' is a Lightning 1.x flag, use"):
        ft.fit(state, ft.train_step(lambda m, b: m(b).sum()), [torch.ones(1)],
               resume_from_checkpoint="x.ckpt")  # fmt: skip
