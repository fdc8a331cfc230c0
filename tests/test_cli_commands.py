"""``ft.cli.main``: fit/validate/test/predict subcommands, --print_config, and the
config.yaml a fit leaves in its log folder, which repeats the run with --config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
import yaml

import ftrain as ft

X = torch.linspace(-1.0, 1.0, 48).reshape(16, 3)
Y = X.sum(1, keepdim=True).sin()


@attrs.define
class Args:
    lr: float = 0.1
    hidden: int = 4


def build(args: Args, config: ft.FitConfig) -> dict[str, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, args.hidden), torch.nn.Tanh(), torch.nn.Linear(args.hidden, 1)
    )
    data = ft.TensorLoader(X, Y, batch_size=4)
    metric = ft.eval_step(lambda m, b: {"val_loss": ((m(b[0]) - b[1]) ** 2).mean()})
    return {
        "state": ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=args.lr), seed=1),
        "train_step": ft.train_step(lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()),
        "train_data": data,
        "val_step": metric,
        "val_data": data,
        "test_step": metric,
        "test_data": data,
        "predict_fn": lambda m, b: m(b[0]),
        "predict_data": data,
    }


QUIET = [
    "--no-enable_progress_bar",
    "--no-enable_model_summary",
    "--num_sanity_val_steps",
    "0",
    "--log_every_n_steps",
    "2",
]


def test_fit_saves_a_config_that_repeats_the_run(tmp_path: Path, capsys: Any) -> None:
    """fit writes config.yaml (own arguments, changed fit options) in its log folder;
    --print_config prints that text; fit --config <it> trains to the same weights."""
    argv = ["--max_epochs", "2", "--lr", "0.05", "--default_root_dir", str(tmp_path / "a"), *QUIET]
    first = ft.cli.main(build, ["fit", *argv], args=Args)
    assert first.log_dir is not None
    saved = Path(first.log_dir) / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    assert data["lr"] == 0.05 and data["hidden"] == 4 and data["fit"]["max_epochs"] == 2
    with pytest.raises(SystemExit) as done:
        ft.cli.main(build, ["fit", *argv, "--print_config"], args=Args)
    assert done.value.code == 0 and capsys.readouterr().out == saved.read_text()

    again = ft.cli.main(build, ["fit", "--config", str(saved), "--default_root_dir", str(tmp_path / "b")],
                        args=Args)  # fmt: skip
    for a, b in zip(first.state.model.parameters(), again.state.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_validate_test_and_predict_subcommands(tmp_path: Path) -> None:
    """validate/test with --ckpt_path last evaluate the fitted weights; predict returns
    one output per batch."""
    root = ["--default_root_dir", str(tmp_path), *QUIET]
    result = ft.cli.main(build, ["fit", "--max_epochs", "1", *root], args=Args)
    want = ft.validate(
        result.state, build(Args(), ft.FitConfig())["val_step"], ft.TensorLoader(X, Y, batch_size=4)
    )
    got = ft.cli.main(build, ["validate", "--ckpt_path", "last", *root], args=Args)
    assert got == want
    assert ft.cli.main(build, ["test", "--ckpt_path", "last", *root], args=Args) == want
    outputs = ft.cli.main(build, ["predict", "--accelerator", "cpu"], args=Args)
    assert [o.shape for o in outputs] == [(4, 1)] * 4


def test_a_missing_or_misspelled_subcommand_is_a_usage_error(capsys: Any) -> None:
    for argv, hint in ((["fti"], "did you mean 'fit'?"), ([], "got ''")):
        with pytest.raises(SystemExit) as done:
            ft.cli.main(build, argv, args=Args, prog="train.py")
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert "must be a subcommand: fit, validate, test, predict" in err and hint in err
