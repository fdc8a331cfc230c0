"""Checkpoint policies, files and errors through ``fit``, and the users' checkpoint API.

A run of 5 epochs of 2 batches (one optimizer step per batch) validates once per
epoch on a scripted ``val_loss`` sequence, so the files each policy keeps are known:
epoch e ends at step 2e + 2 with val_loss ``VAL[e]``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.checkpoint import FORMAT_VERSION, CheckpointError, MissingMetricError
from ftrain.loggers import CSVLogger

VAL = (0.5, 0.3, 0.4, 0.2, 0.6)  # best: epoch 3, then 1, 2, 0, 4


def make_state(hidden: int = 4) -> ft.TrainState:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return ft.TrainState.create(model, opt, seed=1)


def loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


class Scripted:
    """A validation function returning the next scripted value each validation
    (one batch per validation)."""

    def __init__(self, values: tuple[float, ...], name: str = "val_loss") -> None:
        self.values, self.name, self.calls = values, name, 0

    def __call__(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        value = self.values[self.calls]
        self.calls += 1
        return {self.name: torch.tensor(value, dtype=torch.float64)}


def train_data() -> ft.TensorLoader:
    g = torch.Generator().manual_seed(0)
    return ft.TensorLoader(
        torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g), batch_size=4
    )


def run(
    root: Path,
    checkpoint: Any = None,
    *,
    state: ft.TrainState | None = None,
    val: Scripted | None = None,
    max_epochs: int = 5,
    logger: Any = False,
    **flags: Any,
) -> ft.FitResult:
    return ft.fit(
        state or make_state(),
        ft.train_step(loss_fn),
        train_data(),
        val_step=ft.eval_step(val or Scripted(VAL)),
        val_data=torch.utils.data.DataLoader(
            [(torch.zeros(2, 3), torch.zeros(2, 1))], batch_size=None
        ),
        checkpoint=checkpoint,
        max_epochs=max_epochs,
        logger=logger,
        default_root_dir=root,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        **flags,
    )


def files(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("k", "kept"),
    [
        (1, {3}),
        (3, {1, 2, 3}),
        (-1, {0, 1, 2, 3, 4}),
        (0, set()),
    ],
)
def test_top_k_by_val_loss_keeps_the_k_best(tmp_path: Path, k: int, kept: set[int]) -> None:
    """``save_top_k`` with ``monitor="val_loss"``: the k lowest values are kept (k=-1 all,
    k=0 none); a worse value is never written; ``best_checkpoint`` is the lowest."""
    result = run(tmp_path, ft.checkpoint.ModelCheckpoint(monitor="val_loss", save_top_k=k))
    assert files(tmp_path / "checkpoints") == {f"epoch={e}-step={2 * e + 2}.ckpt" for e in kept}
    if k == 0:
        assert result.best_checkpoint is None and result.last_checkpoint is None
    else:
        assert result.best_checkpoint == str(tmp_path / "checkpoints" / "epoch=3-step=8.ckpt")
        payload = ft.load_checkpoint(result.best_checkpoint)
        assert payload["checkpoint_info"]["score"] == pytest.approx(0.2)


def test_last_ckpt_holds_the_final_state(tmp_path: Path) -> None:
    """``save_last=True`` with a monitor and an epoch interval that misses the last
    epoch: ``last.ckpt`` still holds the final state (not the best, as in Lightning
    2.6), equal to ``FitResult.state``; ``last_checkpoint`` names it."""
    policy = ft.checkpoint.ModelCheckpoint(
        monitor="val_loss", save_top_k=1, save_last=True, every_n_epochs=2
    )
    result = run(tmp_path, policy)
    folder = tmp_path / "checkpoints"
    assert files(folder) == {"last.ckpt", "epoch=3-step=8.ckpt"}
    assert result.last_checkpoint == str(folder / "last.ckpt")
    assert result.best_checkpoint == str(folder / "epoch=3-step=8.ckpt")
    assert_weights_equal(weights(folder / "last.ckpt"), result.state.model.state_dict())
    last = ft.load_checkpoint(folder / "last.ckpt")
    assert last["counters"]["step"] == result.state.step == 10
    now = result.state.optimizer.state_dict()["state"]
    for index, saved in last["optimizer"]["state"].items():
        assert torch.equal(saved["exp_avg"], now[index]["exp_avg"])


def test_filename_template_with_formats(tmp_path: Path) -> None:
    """Lightning's example template, with auto-inserted metric names."""
    policy = ft.checkpoint.ModelCheckpoint(
        monitor="val_loss", filename="sample-{epoch:02d}-{val_loss:.2f}", save_top_k=2
    )
    run(tmp_path, policy)
    assert files(tmp_path / "checkpoints") == {
        "sample-epoch=01-val_loss=0.30.ckpt",
        "sample-epoch=03-val_loss=0.20.ckpt",
    }


@pytest.mark.parametrize(
    ("auto", "template", "name"),
    [
        (True, "{epoch}-{val/loss:.2f}", "epoch=3-val_loss=0.20.ckpt"),
        (False, "{epoch}-val_loss{val/loss:.2f}", "3-val_loss0.20.ckpt"),
    ],
)
def test_metric_names_with_a_slash_keep_checkpoints_flat(
    tmp_path: Path, auto: bool, template: str, name: str
) -> None:
    """A '/' in a metric name never creates folders (Lightning's #4468), with or
    without ``auto_insert_metric_name``."""
    policy = ft.checkpoint.ModelCheckpoint(
        monitor="val/loss", filename=template, auto_insert_metric_name=auto
    )
    run(tmp_path, policy, val=Scripted(VAL, name="val/loss"))
    assert files(tmp_path / "checkpoints") == {name}
    assert all(p.is_file() for p in (tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize(
    "policy",
    [
        ft.checkpoint.ModelCheckpoint(monitor="val_acc"),
        ft.checkpoint.ModelCheckpoint(filename="{epoch}-{val_acc:.2f}"),
    ],
    ids=["monitor", "template"],
)
def test_an_unlogged_metric_is_an_error_listing_the_logged_ones(
    tmp_path: Path, policy: ft.checkpoint.Policy
) -> None:
    """A monitor or template naming a metric the run never logs stops the run at its
    first save, with the names that were logged (Lightning formats it as 0)."""
    with pytest.raises(
        MissingMetricError, match=r"'val_acc'.*\['epoch', 'loss', 'step', 'val_loss'\]"
    ):
        run(tmp_path, policy)
    assert files(tmp_path / "checkpoints") == set()


def test_an_unlogged_metric_without_validation_is_an_error(tmp_path: Path) -> None:
    """Without validation the epoch-end save is the first save: the same error there."""
    policy = ft.checkpoint.ModelCheckpoint(filename="{epoch}-{acc:.2f}")
    with pytest.raises(MissingMetricError, match=r"'acc'.*\['epoch', 'loss', 'step'\]"):
        ft.fit(
            make_state(),
            ft.train_step(loss_fn),
            train_data(),
            checkpoint=policy,
            max_epochs=2,
            logger=False,
            default_root_dir=tmp_path,
            enable_progress_bar=False,
            enable_model_summary=False,
        )


def test_weights_only_checkpoints_restore_but_cannot_resume(tmp_path: Path) -> None:
    """``save_weights_only``: the file holds the model only; resuming a run from it is a
    clear error pointing to ``ft.restore``, which loads the weights."""
    result = run(tmp_path, ft.checkpoint.ModelCheckpoint(save_weights_only=True))
    path = tmp_path / "checkpoints" / "epoch=4-step=10.ckpt"
    payload = ft.load_checkpoint(path)
    assert "optimizer" not in payload and payload["weights_only"] is True
    with pytest.raises(KeyError, match=r"only the model weights.*ft\.restore"):
        run(tmp_path / "again", state=make_state(), ckpt_path=path)
    fresh = ft.restore(make_state(), path)
    assert_weights_equal(fresh.model.state_dict(), result.state.model.state_dict())
    assert fresh.step == 10


def test_policy_state_survives_a_crash_and_resume(tmp_path: Path) -> None:
    """A run that crashes mid-epoch (an exception after 7 batches) and resumes from
    "last" keeps the same files as an uninterrupted run: the top-2 by val_loss plus a
    checkpoint every step, the evictions decided across the restart."""
    policy = ft.checkpoint.every(n_train_steps=1) | ft.checkpoint.top_k(
        2, monitor="val_loss", filename="best-{val_loss:.1f}"
    )
    run(tmp_path / "whole", policy)

    class Crash(ft.Callback):
        def on_train_batch_end(self, state: ft.TrainState, **_: Any) -> None:
            if state.micro_step == 7:
                raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path / "crashed", policy, callbacks=[Crash()])
    assert "best-val_loss=0.3.ckpt" in files(tmp_path / "crashed" / "checkpoints")
    result = run(tmp_path / "crashed", policy, ckpt_path="last", val=Scripted(VAL[3:]))
    assert result.state.step == 10
    assert files(tmp_path / "crashed" / "checkpoints") == files(tmp_path / "whole" / "checkpoints")
    assert {"best-val_loss=0.3.ckpt", "best-val_loss=0.2.ckpt"} <= files(
        tmp_path / "whole" / "checkpoints"
    )


def test_enable_checkpointing_false_writes_nothing(tmp_path: Path) -> None:
    """No policy, no file, no folder."""
    result = run(tmp_path, enable_checkpointing=False)
    assert list(tmp_path.rglob("*")) == []
    assert result.best_checkpoint is None and result.last_checkpoint is None


def test_default_policy_keeps_the_newest_epoch_in_the_logger_version(tmp_path: Path) -> None:
    """The default policy saves every epoch and keeps one newest ``epoch=E-step=S.ckpt``
    in the logger's version folder, as Lightning does."""
    result = run(tmp_path, logger=CSVLogger(tmp_path, name="logs"), log_every_n_steps=1)
    folder = tmp_path / "logs" / "version_0" / "checkpoints"
    assert files(folder) == {"epoch=4-step=10.ckpt"}
    assert result.best_checkpoint == result.last_checkpoint == str(folder / "epoch=4-step=10.ckpt")


def test_resume_logs_into_the_same_version(tmp_path: Path) -> None:
    """A resume with a fresh logger continues the interrupted run's version folder."""
    run(tmp_path, logger=CSVLogger(tmp_path, name="logs"), max_epochs=2, log_every_n_steps=1)
    run(
        tmp_path,
        logger=CSVLogger(tmp_path, name="logs"),
        val=Scripted(VAL[2:]),
        ckpt_path="last",
        log_every_n_steps=1,
    )
    assert files(tmp_path / "logs") == {"version_0"}
    with open(tmp_path / "logs" / "version_0" / "metrics.csv", newline="") as f:
        loss_steps = [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]
    assert loss_steps == list(range(10))


def test_ckpt_path_best_without_a_best_checkpoint_is_an_error(tmp_path: Path) -> None:
    """``ckpt_path="best"`` with nothing saved names where it looked."""
    with pytest.raises(ValueError, match="no best checkpoint"):
        run(tmp_path, ckpt_path="best")


def test_ckpt_path_best_resumes_from_the_best(tmp_path: Path) -> None:
    """``ckpt_path="best"`` picks the monitored best, not the newest."""
    policy = ft.checkpoint.ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    run(tmp_path, policy)
    result = run(tmp_path, policy, ckpt_path="best", max_epochs=4, val=Scripted(()))
    assert result.state.step == 8  # epoch 3's checkpoint, already at max_epochs=4


def test_dirpath_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    """A ``dirpath`` naming an existing file fails before training, naming it."""
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises((ValueError, NotADirectoryError), match="taken"):
        run(tmp_path, ft.checkpoint.ModelCheckpoint(dirpath=target))


# --------------------------------------------------------------------------- users' API


def test_save_load_restore_round_trip_inside_an_accumulation_window(tmp_path: Path) -> None:
    """``save_checkpoint`` / ``load_checkpoint`` / ``restore`` give back the state:
    weights, optimizer, counters, and the gradients accumulated so far in a window, so
    the next step is the same as without the round trip."""
    step = ft.train_step(loss_fn, accumulate=2)
    batches = list(train_data())
    state = make_state()
    for batch in batches[:2] + batches[:1]:  # one optimizer step, then half a window
        state, _ = step(state, batch)
    path = tmp_path / "mid.ckpt"
    ft.save_checkpoint(state, path)
    payload = ft.load_checkpoint(path)
    assert payload["counters"]["micro_step"] == 3 and "grads" in payload
    restored = ft.restore(make_state(), path)
    assert (restored.step, restored.micro_step, restored.batch_idx) == (1, 3, 3)
    finished, _ = step(state, batches[1])
    again, _ = step(restored, batches[1])
    assert_weights_equal(again.model.state_dict(), finished.model.state_dict())


def test_model_weights_load_with_plain_torch(tmp_path: Path) -> None:
    """The ``model`` entry is an ordinary state_dict: plain ``torch.load(weights_only=True)``
    and ``load_state_dict`` on a fresh module, without ftrain."""
    result = run(tmp_path)
    (path,) = (tmp_path / "checkpoints").iterdir()
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    fresh.load_state_dict(torch.load(path, weights_only=True)["model"])
    assert_weights_equal(fresh.state_dict(), result.state.model.state_dict())


def test_a_checkpoint_of_another_model_is_refused_with_the_keys(tmp_path: Path) -> None:
    """Missing/unexpected keys and shape mismatches are ``CheckpointError`` naming the
    file and the keys; the target model is left untouched."""
    path = tmp_path / "a.ckpt"
    ft.save_checkpoint(make_state(hidden=4), path)
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    state = ft.TrainState.create(other, torch.optim.SGD(other.parameters(), lr=0.1))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"a\.ckpt.*missing keys \['1\.bias', '1\.weight'.*unexpected keys \['2\.bias'",
    ):
        ft.restore(state, path)
    assert_weights_equal(other.state_dict(), before)
    with pytest.raises(CheckpointError, match=r"a\.ckpt.*'0\.weight'.*\(4, 3\).*\(8, 3\)"):
        ft.restore(make_state(hidden=8), path)


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    """A file written by a newer ftrain says so, by ``load_checkpoint`` and by ``fit``."""
    path = tmp_path / "new.ckpt"
    ft.save_checkpoint(make_state(), path)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "ftrain_format": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match=r"new\.ckpt.*newer ftrain"):
        ft.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="newer ftrain"):
        run(tmp_path, ckpt_path=path)


def test_an_unsafe_file_is_refused_before_running_its_code(tmp_path: Path) -> None:
    """A pickle holding an arbitrary object is refused by ``weights_only`` loading."""
    path = tmp_path / "evil.ckpt"
    torch.save({"ftrain_format": 1, "model": {}, "hook": Path("x")}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        ft.load_checkpoint(path)
