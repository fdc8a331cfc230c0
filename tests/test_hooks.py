"""The hooks a functional design still needs: setup/teardown, checkpoint hooks, the
validation/test/predict hooks, and on_train_batch_start returning -1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain._callbacks._base import HOOKS

QUIET: dict[str, Any] = {
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
X = torch.linspace(-1.0, 1.0, 32).reshape(16, 2)
Y = X.sum(1, keepdim=True) ** 2


def _state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=0)


def _loss(net: torch.nn.Module, batch: Any) -> torch.Tensor:
    return ((net(batch[0]) - batch[1]) ** 2).mean()


def _data() -> ft.TensorLoader:
    return ft.TensorLoader(X, Y, batch_size=4, shuffle=False)


class Record:
    """Records (hook, stage or batch_idx) for every hook called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        for hook in HOOKS:
            setattr(self, hook, self._recorder(hook))

    def _recorder(self, hook: str) -> Any:
        def record(**kw: Any) -> None:
            self.calls.append((hook, kw.get("stage", kw.get("batch_idx"))))

        return record


@pytest.mark.parametrize(("run", "stage"), [(ft.validate, "validation"), (ft.test, "test")])
def test_validate_and_test_call_their_hooks(run: Any, stage: str) -> None:
    """Standalone validate/test: setup, start, epoch start, each batch, epoch end, end,
    teardown; the end hooks receive the returned metrics."""
    rec = Record()
    step = ft.eval_step(lambda net, b: {"l": _loss(net, b)})
    got = run(_state(), step, ft.TensorLoader(X[:8], Y[:8], batch_size=4, shuffle=False),
              callbacks=[rec])  # fmt: skip
    name = "validate" if stage == "validation" else "test"
    assert rec.calls == [
        ("setup", name),
        (f"on_{stage}_start", None),
        (f"on_{stage}_epoch_start", None),
        (f"on_{stage}_batch_start", 0),
        (f"on_{stage}_batch_end", 0),
        (f"on_{stage}_batch_start", 1),
        (f"on_{stage}_batch_end", 1),
        (f"on_{stage}_epoch_end", None),
        (f"on_{stage}_end", None),
        ("teardown", name),
    ]
    assert set(got) == {"l"}


def test_predict_hooks_and_teardown_after_an_error() -> None:
    """predict calls its hooks with each batch's outputs; teardown runs after a failing
    batch too."""
    seen: list[Any] = []

    class Outputs(ft.Callback):
        def on_predict_batch_end(self, outputs: Any, batch_idx: int, **_: Any) -> None:
            seen.append((batch_idx, outputs.shape))

        def teardown(self, stage: str, state: Any) -> None:
            seen.append(("teardown", stage))

    ft.predict(_state(), lambda net, b: net(b[0]), ft.TensorLoader(X[:8], Y[:8], batch_size=4),
               callbacks=[Outputs()])  # fmt: skip
    assert seen == [(0, (4, 1)), (1, (4, 1)), ("teardown", "predict")]

    def broken(net: torch.nn.Module, batch: Any) -> Any:
        raise RuntimeError("bad batch")

    seen.clear()
    with pytest.raises(RuntimeError, match="bad batch"):
        ft.predict(_state(), broken, _data(), callbacks=[Outputs()])
    assert seen == [("teardown", "predict")]


class Counter(ft.Callback):
    """Counts batches and keeps the count in the checkpoint through the checkpoint hooks."""

    def __init__(self) -> None:
        self.batches = 0
        self.loaded: Any = None

    def on_train_batch_end(self, **_: Any) -> None:
        self.batches += 1

    def on_save_checkpoint(self, state: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["counter"] = {"batches": self.batches, "step": state.step}

    def on_load_checkpoint(self, state: Any, checkpoint: Any) -> None:
        self.loaded = checkpoint["counter"]
        self.batches = checkpoint["counter"]["batches"]


def test_checkpoint_hooks_add_to_and_read_from_the_file(tmp_path: Path) -> None:
    """on_save_checkpoint's key is in the file; on_load_checkpoint reads it on resume."""
    first = Counter()
    ft.fit(_state(), ft.train_step(_loss), _data(), max_epochs=1, callbacks=[first],
           default_root_dir=str(tmp_path), **QUIET)  # fmt: skip
    [path] = (tmp_path / "checkpoints").glob("*.ckpt")
    assert ft.checkpoint.safe_load(path)["counter"] == {"batches": 4, "step": 4}
    second = Counter()
    ft.fit(_state(), ft.train_step(_loss), _data(), max_epochs=2, callbacks=[second],
           ckpt_path="last", default_root_dir=str(tmp_path), **QUIET)  # fmt: skip
    assert second.loaded == {"batches": 4, "step": 4} and second.batches == 8


class SkipFrom(ft.Callback):
    """Returns -1 at batch ``at`` (every epoch): the rest of the epoch is skipped."""

    def __init__(self, at: dict[int, int]) -> None:
        self.at = at
        self.epoch_ends: list[int] = []

    def on_train_batch_start(self, state: Any, batch: Any, batch_idx: int) -> Any:
        return -1 if self.at.get(state.epoch) == batch_idx else None

    def on_train_epoch_end(self, state: Any, metrics: Any) -> None:
        self.epoch_ends.append(state.epoch)


def test_batch_start_returning_minus_one_skips_the_rest_of_the_epoch(tmp_path: Path) -> None:
    """Epoch 0 stops before batch 2, epoch 1 before batch 0, epoch 2 runs whole: the
    parameters equal a hand loop over those batches (bit for bit), every epoch ends
    normally, and training goes on after an epoch skipped from its first batch."""
    skip = SkipFrom({0: 2, 1: 0})
    result = ft.fit(_state(), ft.train_step(_loss), _data(), max_epochs=3, callbacks=[skip],
                    enable_checkpointing=False, default_root_dir=str(tmp_path), **QUIET)  # fmt: skip
    hand = _state()
    net, opt = hand.model, hand.optimizer
    for batches in (2, 0, 4):
        for i in range(batches):
            loss = _loss(net, (X[4 * i : 4 * i + 4], Y[4 * i : 4 * i + 4]))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert result.state.step == 6 and skip.epoch_ends == [0, 1, 2]
    for a, b in zip(result.state.model.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b)
