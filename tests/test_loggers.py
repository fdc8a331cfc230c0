"""Loggers: TensorBoard and CSV files read back with their own readers, JSONL, as_loggers."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ftrain.loggers import (
    CSVLogger,
    JSONLinesLogger,
    Logger,
    TensorBoardLogger,
    _select,
    _tensorboard,
    as_loggers,
)


def _scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _csv_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# --- TensorBoard ---------------------------------------------------------------


def test_tensorboard_scalars_read_back(tmp_path: Path) -> None:
    """Each metric is a TensorBoard scalar with its name, step and value."""
    logger = TensorBoardLogger(tmp_path)
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.5}, step=step)
    logger.finalize("success")
    scalars = _scalars(logger.log_dir)
    assert sorted(scalars) == ["lr", "train/loss"]
    assert [s for s, _ in scalars["train/loss"]] == [0, 1, 2]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert scalars["lr"] == [(0, 0.5), (1, 0.5), (2, 0.5)]


def test_tensorboard_hparams_recorded(tmp_path: Path) -> None:
    """Hyperparameters reach the HPARAMS plugin flattened with '/', and hparams.json nested."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    logger = TensorBoardLogger(tmp_path, name="exp")
    params = {"optim": {"lr": 0.1, "name": "adam"}, "layers": [2, 3], "seed": 7}
    logger.log_hyperparams(params)
    logger.finalize("success")

    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optim/lr"].number_value == pytest.approx(0.1)
    assert hparams["optim/name"].string_value == "adam"
    assert hparams["layers"].string_value == "[2, 3]"
    assert hparams["seed"].number_value == 7
    with open(os.path.join(logger.log_dir, "hparams.json")) as f:
        assert json.load(f) == params


def _hparams_table(log_dir: str) -> Any:
    """The HPARAMS tab's experiment as TensorBoard's own hparams plugin computes it."""
    from tensorboard import context
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(log_dir)
    mux.Reload()
    provider = MultiplexerDataProvider(mux, log_dir)
    plugin = backend_context.Context(
        base_plugin.TBContext(logdir=log_dir, data_provider=provider, multiplexer=mux)
    )
    ctx = context.RequestContext()
    found = plugin.hparams_metadata(ctx, "")
    return plugin.experiment_from_metadata(
        ctx, "", True, found, plugin.hparams_from_data_provider(ctx, "", None)
    )


def test_tensorboard_hparams_table_has_metric_columns(tmp_path: Path) -> None:
    """The HPARAMS table lists the hyperparameters and every logged scalar as a metric
    column, also those first logged after the hyperparameters."""
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1, "batch_size": 32})
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    logger.log_metrics({"val_loss": 2.0, "val_acc": 0.5, "epoch": 0}, step=0)
    logger.finalize("success")
    experiment = _hparams_table(str(tmp_path))
    assert sorted(h.name for h in experiment.hparam_infos) == ["batch_size", "lr"]
    assert sorted(m.name.tag for m in experiment.metric_infos) == [
        "epoch", "loss", "val_acc", "val_loss",
    ]  # fmt: skip


def _layouts(log_dir: str) -> list[tuple[int, dict[str, list[tuple[str, list[str]]]]]]:
    """Every custom-scalars layout of the run, read back with tensorboard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    out = []
    for event in acc.Tensors("custom_scalars__config__"):
        layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
        out.append(
            (
                event.step,
                {
                    c.title: [(ch.title, list(ch.multiline.tag)) for ch in c.chart]
                    for c in layout.category
                },
            )
        )
    return out


def test_tensorboard_layout_puts_train_and_val_on_one_chart(tmp_path: Path) -> None:
    """Once val_loss is logged beside loss, a custom-scalars chart 'loss' overlays both; a
    later new pair rewrites the layout, and the newest one is complete."""
    logger = TensorBoardLogger(tmp_path)
    for step in range(4):
        logger.log_metrics({"loss": 1.0 / (step + 1), "train_acc": 0.5, "epoch": 0}, step)
    logger.log_metrics({"val_loss": 0.4, "epoch": 0}, step=3)
    logger.log_metrics({"loss": 0.2, "train_acc": 0.7, "epoch": 1}, step=4)
    logger.log_metrics({"val_loss": 0.3, "val_acc": 0.6, "epoch": 1}, step=7)
    logger.finalize("success")
    category = _tensorboard.LAYOUT_CATEGORY
    assert _layouts(logger.log_dir) == [
        (3, {category: [("loss", ["^loss$", "^val_loss$"])]}),
        (
            7,
            {
                category: [
                    ("acc", ["^train_acc$", "^val_acc$"]),
                    ("loss", ["^loss$", "^val_loss$"]),
                ]
            },
        ),
    ]
    # The regexes select exactly those scalars.
    tags = list(_scalars(logger.log_dir))
    for _, series in _layouts(logger.log_dir)[-1][1][category]:
        for regex in series:
            assert len([t for t in tags if re.search(regex, t)]) == 1


def test_train_val_layout_pairs() -> None:
    """Pairs are made across the naming schemes; a metric without a partner has no chart."""
    layout = _tensorboard.train_val_layout
    assert layout(["loss", "lr", "epoch"]) == {}
    assert layout(["val_loss"]) == {}
    charts = layout(["train/loss", "val/loss", "mae_step", "mae_epoch", "val_mae", "val_x"])
    assert charts[_tensorboard.LAYOUT_CATEGORY] == {
        "loss": ["Multiline", ["^train/loss$", "^val/loss$"]],
        "mae": ["Multiline", ["^mae_epoch$", "^mae_step$", "^val_mae$"]],
    }


def test_tensorboard_epoch_once_per_step(tmp_path: Path) -> None:
    """'epoch' passed with the step values and again with the validation values of the same
    step is written once."""
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=9)
    logger.log_metrics({"val_loss": 1.0, "epoch": 0}, step=9)
    logger.log_metrics({"loss": 1.0, "epoch": 1}, step=19)
    logger.finalize("success")
    assert _scalars(logger.log_dir)["epoch"] == [(9, 0.0), (19, 1.0)]


def test_tensorboard_versions(tmp_path: Path) -> None:
    """Versions count up from version_0; int and str versions name the folder; nothing is
    created before the version is first used, which claims its folder."""
    first = TensorBoardLogger(tmp_path)
    assert not os.path.exists(tmp_path / "ftrain_logs")
    assert first.version == 0
    assert first.log_dir == os.path.join(tmp_path, "ftrain_logs", "version_0")
    assert os.path.isdir(tmp_path / "ftrain_logs" / "version_0")
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")

    second = TensorBoardLogger(tmp_path)
    assert second.version == 1
    assert os.path.basename(TensorBoardLogger(tmp_path, version=7).log_dir) == "version_7"
    assert os.path.basename(TensorBoardLogger(tmp_path, version="run-a").log_dir) == "run-a"
    os.makedirs(tmp_path / "ftrain_logs" / "version_9")
    os.makedirs(tmp_path / "ftrain_logs" / "version_x")
    assert TensorBoardLogger(tmp_path).version == 10


def test_tensorboard_resume_purges_later_steps(tmp_path: Path) -> None:
    """After resume(version=0, step=5), the reader sees one value per step 0..9, the new ones
    from step 5 on."""
    logger = TensorBoardLogger(tmp_path)
    for step in range(10):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.finalize("interrupted")

    resumed = TensorBoardLogger(tmp_path)
    resumed.resume(version=0, step=5)
    for step in range(5, 10):
        resumed.log_metrics({"loss": 100.0 + step}, step=step)
    resumed.finalize("success")

    assert resumed.log_dir == logger.log_dir
    assert _scalars(logger.log_dir)["loss"] == [
        (s, float(s) if s < 5 else 100.0 + s) for s in range(10)
    ]


def test_tensorboard_resume_within_the_same_second(tmp_path: Path) -> None:
    """Resume still purges when the old event file was created this second and sorts after
    the name the new file would get in that second."""
    logger = TensorBoardLogger(tmp_path)
    for step in range(4):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.finalize("interrupted")
    (old,) = Path(logger.log_dir).glob("events.out.tfevents.*")
    old.rename(old.with_name(f"events.out.tfevents.{int(time.time()):010d}.zzzz.1.99"))

    logger.resume(version=0, step=2)
    logger.log_metrics({"loss": 20.0}, step=2)
    logger.finalize("success")
    assert _scalars(logger.log_dir)["loss"] == [(0, 0.0), (1, 1.0), (2, 20.0)]


def test_tensorboard_finalize_is_idempotent(tmp_path: Path) -> None:
    """finalize twice is harmless, and a write after finalize still lands in the same run."""
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.finalize("success")
    logger.finalize("success")
    logger.log_metrics({"a": 2.0}, step=1)
    logger.flush()
    logger.finalize("success")
    assert _scalars(logger.log_dir)["a"] == [(0, 1.0), (1, 2.0)]


# --- CSV -----------------------------------------------------------------------


def test_csv_rows_header_widening_and_epoch_column(tmp_path: Path) -> None:
    """One row per call; a new key widens the header (step, epoch, then sorted) and earlier
    rows keep empty cells for it."""
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"train_loss": 0.5}, step=0)
    logger.log_metrics({"train_loss": 0.25}, step=1)
    logger.log_metrics({"val_loss": 0.75, "epoch": 0, "acc": 0.5}, step=1)
    logger.finalize("success")

    header, rows = _csv_rows(os.path.join(logger.log_dir, "metrics.csv"))
    assert header == ["step", "epoch", "acc", "train_loss", "val_loss"]
    assert rows == [
        {"step": "0", "epoch": "", "acc": "", "train_loss": "0.5", "val_loss": ""},
        {"step": "1", "epoch": "", "acc": "", "train_loss": "0.25", "val_loss": ""},
        {"step": "1", "epoch": "0", "acc": "0.5", "train_loss": "", "val_loss": "0.75"},
    ]


def test_csv_buffers_until_n_rows_or_flush(tmp_path: Path) -> None:
    """Rows are written every n rows and at flush; floats keep their full precision."""
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"a": 0.1}, step=0)
    logger.log_metrics({"a": 0.2}, step=1)
    assert not os.path.exists(path)
    logger.log_metrics({"a": 0.3}, step=2)
    assert len(_csv_rows(path)[1]) == 3
    logger.log_metrics({"a": 1 / 3}, step=3)
    assert len(_csv_rows(path)[1]) == 3
    logger.flush()
    _, rows = _csv_rows(path)
    assert [float(r["a"]) for r in rows] == [0.1, 0.2, 0.3, 1 / 3]


def _run(logger: Logger, steps: range, scale: float = 1.0) -> None:
    for step in steps:
        logger.log_metrics({"loss": scale * step}, step=step)
        if step % 4 == 3:
            logger.log_metrics({"val_loss": scale * step, "epoch": step // 4}, step=step)


def test_csv_resume_truncates_to_an_uninterrupted_run(tmp_path: Path) -> None:
    """resume(version, step) drops rows at steps >= step, so the resumed file equals an
    uninterrupted run's, header included."""
    whole = CSVLogger(tmp_path, name="whole")
    _run(whole, range(10))
    whole.finalize("success")

    # Interrupted after step 8; the checkpoint it resumes from was taken before step 2,
    # and only rows after step 3 ever saw the val_loss/epoch columns.
    broken = CSVLogger(tmp_path, name="broken", flush_logs_every_n_steps=1)
    _run(broken, range(2))
    _run(broken, range(2, 9), scale=-1.0)  # values the resumed run must not keep
    broken.finalize("interrupted")
    resumed = CSVLogger(tmp_path, name="broken")
    resumed.resume(version=0, step=2)
    _, kept = _csv_rows(os.path.join(resumed.log_dir, "metrics.csv"))
    assert [r["step"] for r in kept] == ["0", "1"]
    assert list(kept[0]) == ["step", "loss"]
    _run(resumed, range(2, 10))
    resumed.finalize("success")

    with (
        open(os.path.join(whole.log_dir, "metrics.csv")) as a,
        open(os.path.join(resumed.log_dir, "metrics.csv")) as b,
    ):
        assert b.read() == a.read()


def test_csv_hparams_json_and_lazy_dir(tmp_path: Path) -> None:
    """Building a CSVLogger writes nothing; hyperparameters merge into hparams.json."""
    logger = CSVLogger(tmp_path, name="exp", version="v")
    assert not os.path.exists(tmp_path / "exp")
    logger.log_hyperparams({"lr": 0.1})
    logger.log_hyperparams({"batch_size": 32})
    with open(os.path.join(logger.log_dir, "hparams.json")) as f:
        assert json.load(f) == {"lr": 0.1, "batch_size": 32}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flush_logs_every_n_steps": 0}, "flush_logs_every_n_steps must be an int >= 1, got 0"),
        ({"version": -1}, "version must be None, an int >= 0 or a non-empty str, got -1"),
        ({"name": ""}, "name must be a non-empty str, got ''"),
    ],
)
def test_csv_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    """Wrong constructor arguments are refused with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        CSVLogger(tmp_path, **kwargs)


# --- JSON lines ----------------------------------------------------------------


def test_jsonl_round_trip_and_resume(tmp_path: Path) -> None:
    """Each call is one JSON line; resume drops lines at steps >= step and keeps hparams."""
    logger = JSONLinesLogger(tmp_path)
    assert isinstance(logger, Logger)
    logger.log_hyperparams({"lr": 0.1})
    for step in range(4):
        logger.log_metrics({"loss": step / 2}, step=step)
    logger.finalize("interrupted")
    logger.finalize("interrupted")

    logger.resume(version=0, step=2)
    logger.log_metrics({"loss": 9.0}, step=2)
    logger.finalize("success")
    with open(tmp_path / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert lines == [
        {"hparams": {"lr": 0.1}},
        {"step": 0, "loss": 0.0},
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 9.0},
    ]
    assert JSONLinesLogger(tmp_path / "run.jsonl").path == os.path.join(tmp_path, "run.jsonl")


# --- as_loggers ----------------------------------------------------------------


class _Partial:
    name = "partial"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass


def test_as_loggers_cases(tmp_path: Path) -> None:
    """True/None give one TensorBoard logger under the root, False none; one logger or a
    list pass through."""
    for version, value in enumerate((True, None)):
        (default,) = as_loggers(value, str(tmp_path))
        assert isinstance(default, TensorBoardLogger)
        # Each logger claims its own version folder.
        assert default.log_dir == os.path.join(tmp_path, "ftrain_logs", f"version_{version}")
    assert as_loggers(False, str(tmp_path)) == []
    csv_logger, jsonl = CSVLogger(tmp_path), JSONLinesLogger(tmp_path)
    assert as_loggers(csv_logger, str(tmp_path)) == [csv_logger]
    assert as_loggers([csv_logger, jsonl], str(tmp_path)) == [csv_logger, jsonl]
    assert as_loggers((jsonl,), str(tmp_path)) == [jsonl]


def test_as_loggers_type_errors(tmp_path: Path) -> None:
    """Something that is not a logger is a TypeError naming `logger` and what is missing."""
    with pytest.raises(TypeError, match=r"logger\[1\] must implement .*_Partial.*missing: version"):
        as_loggers([CSVLogger(tmp_path), _Partial()], str(tmp_path))  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^logger must be True, False, None.*got str"):
        as_loggers("tensorboard", str(tmp_path))  # type: ignore[arg-type]


def test_as_loggers_falls_back_to_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tensorboard installed, the default logger is a CSVLogger, with a warning."""
    monkeypatch.setattr(_select, "tensorboard_available", lambda: False)
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        (logger,) = as_loggers(True, str(tmp_path))
    assert isinstance(logger, CSVLogger)


def test_import_is_light() -> None:
    """Importing the loggers and the progress bar imports neither tensorboard nor tqdm."""
    # torch itself imports tqdm (torch.hub), so forget torch's copy before importing ours.
    code = (
        "import sys, torch\n"
        "for m in [m for m in sys.modules if m.split('.')[0] in ('tqdm', 'tensorboard')]:\n"
        "    del sys.modules[m]\n"
        "import ftrain.loggers, ftrain.driver._progress\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tqdm', 'tensorboard')\n"
        "       or m.startswith('torch.utils.tensorboard')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
