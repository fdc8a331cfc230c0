"""torchmetrics objects returned from a step keep their epoch state across a mid-epoch
resume: the epoch values equal those of an uninterrupted run, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

torchmetrics = pytest.importorskip("torchmetrics")

QUIET: dict[str, Any] = {
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
G = torch.Generator().manual_seed(3)
X, Y = torch.randn(32, 4, generator=G), torch.randint(0, 3, (32,), generator=G)


class EpochValues(ft.Callback):
    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def on_train_epoch_end(self, state: Any, metrics: Any) -> None:
        self.values.append({k: metrics[k] for k in ("acc", "mean_loss")})


def _run(root: Path, **flags: Any) -> EpochValues:
    """Fresh metric objects each run, as a new process would have."""
    acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
    mean = torchmetrics.MeanMetric()

    def loss_fn(net: torch.nn.Module, batch: Any) -> Any:
        x, y = batch
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        acc(logits.argmax(1), y)
        mean(loss.detach(), weight=x.shape[0])
        return loss, {
            "acc": ft.log(acc, on_step=False, on_epoch=True),
            "mean_loss": ft.log(mean, on_step=False, on_epoch=True),
        }

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.5), seed=1)
    seen = EpochValues()
    policy = ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1)
    ft.fit(state, ft.train_step(loss_fn), ft.TensorLoader(X, Y, batch_size=4), callbacks=[seen],
           checkpoint=policy, default_root_dir=str(root), **QUIET, **flags)  # fmt: skip
    return seen


def test_metric_objects_resume_mid_epoch_exactly(tmp_path: Path) -> None:
    """Stopped after 3 of 8 batches and resumed, the epoch's accuracy and mean equal the
    uninterrupted run's (the saved counts are merged in front of the new batches)."""
    whole = _run(tmp_path / "whole", max_epochs=2)
    _run(tmp_path / "cut", max_steps=4)  # the file at step 3 is inside epoch 0
    [mid] = (tmp_path / "cut" / "checkpoints").glob("*step=3.ckpt")
    saved = ft.checkpoint.safe_load(mid)["loop"]["train_metrics"]
    assert set(saved) == {"acc", "mean_loss"} and saved["acc"]["object"]["update_count"] == 3
    resumed = _run(tmp_path / "cut", max_epochs=2, ckpt_path=str(mid))
    assert resumed.values == whole.values
    assert whole.values[0]["acc"] != whole.values[1]["acc"]  # the epochs differ: a real check


class NoMerge:
    """A metric object with a state but no merge_state."""

    def __init__(self) -> None:
        self._forward_cache: Any = None
        self._update_count = 0
        self.total = torch.tensor(0.0)

    @property
    def metric_state(self) -> dict[str, torch.Tensor]:
        return {"total": self.total}

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        self._update_count += 1
        self.total = self.total + value
        self._forward_cache = value
        return value

    def compute(self) -> torch.Tensor:
        return self.total

    def reset(self) -> None:
        self.total, self._update_count = torch.tensor(0.0), 0


def test_a_metric_object_that_cannot_merge_warns(tmp_path: Path) -> None:
    """Without merge_state the saved state is dropped with a warning naming the metric."""

    def run(**flags: Any) -> None:
        metric = NoMerge()
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 3)
        state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))

        def loss_fn(net: torch.nn.Module, batch: Any) -> Any:
            loss = torch.nn.functional.cross_entropy(net(batch[0]), batch[1])
            metric(loss.detach())
            return loss, {"total": ft.log(metric, on_step=False, on_epoch=True)}

        ft.fit(state, ft.train_step(loss_fn), ft.TensorLoader(X, Y, batch_size=4),
               checkpoint=ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1),
               default_root_dir=str(tmp_path), **QUIET, **flags)  # fmt: skip

    run(max_steps=3)
    [mid] = (tmp_path / "checkpoints").glob("*step=2.ckpt")
    with pytest.warns(RuntimeWarning, match="metric 'total': its state from the checkpoint"):
        run(max_epochs=1, ckpt_path=str(mid))
