"""fit: parity with a hand-written loop, and exactly which batches train and validate when.

Counting tests use a recording callback and eval function and compare with the rules
of LIGHTNING_SPEC section 2 (Trainer flags).
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import ftrain as ft

QUIET: dict[str, Any] = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def _tensors(batches: int, bs: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batches * bs, 3, generator=g), torch.randn(batches * bs, 1, generator=g)


def _loader(batches: int, bs: int = 2, seed: int = 1) -> ft.TensorLoader:
    return ft.TensorLoader(*_tensors(batches, bs, seed), batch_size=bs, shuffle=False)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _state(lr: float = 0.05, scheduler: Any = None) -> ft.TrainState:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = scheduler(opt) if scheduler is not None else None
    return ft.TrainState.create(model, opt, sched)


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


class Recorder(ft.Callback):
    """Records trained batches, validation points and the number of validation batches."""

    def __init__(self) -> None:
        self.trained: list[tuple[int, int]] = []  # (epoch, batch_idx)
        self.validated: list[tuple[int, int]] = []  # (epoch, batches trained in the epoch)
        self.val_batches: list[int] = []  # batches per validation run
        self.epoch_ends: list[int] = []
        self.train_end = 0
        self._counter = 0

    def val_fn(self, model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        self._counter += 1
        return {"val_loss": _loss(model, batch)}

    def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
        self.trained.append((state.epoch, batch_idx))

    def on_validation_start(self, state: Any) -> None:
        self._counter = 0

    def on_validation_end(self, state: Any, metrics: Any) -> None:
        self.validated.append((state.epoch, state.batch_idx))
        self.val_batches.append(self._counter)

    def on_train_epoch_end(self, state: Any, metrics: Any) -> None:
        self.epoch_ends.append(state.epoch)

    def on_train_end(self, state: Any) -> None:
        self.train_end += 1

    def per_epoch(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for epoch, _ in self.trained:
            out[epoch] = out.get(epoch, 0) + 1
        return out


def _run(
    tmp_path: Path,
    batches: int = 10,
    val_batches: int | None = 5,
    callbacks: list[Any] | None = None,
    data: Any = None,
    **flags: Any,
) -> tuple[ft.FitResult, Recorder]:
    rec = Recorder()
    options = {**QUIET, "default_root_dir": tmp_path, **flags}
    result = ft.fit(
        _state(),
        ft.train_step(_loss),
        data if data is not None else _loader(batches),
        val_step=ft.eval_step(rec.val_fn) if val_batches is not None else None,
        val_data=_loader(val_batches, seed=2) if val_batches is not None else None,
        callbacks=[rec, *(callbacks or [])],
        **options,
    )
    return result, rec


def _params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


# --- parity with a hand-written PyTorch loop -------------------------------------------------


def _hand_loop(
    x: torch.Tensor, y: torch.Tensor, epochs: int, bs: int, acc: int = 1, clip: float | None = None
) -> torch.nn.Module:
    """The nanoGPT-order loop; a short last window is rescaled to an exact mean (ftrain's rule)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n = len(x) // bs
    for _ in range(epochs):
        for i in range(n):
            loss = _loss(model, (x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]))
            (loss / acc if acc > 1 else loss).backward()
            seen = i % acc + 1
            if seen == acc or i == n - 1:
                if seen < acc:
                    torch._foreach_mul_([p.grad for p in model.parameters()], acc / seen)
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
                opt.step()
                opt.zero_grad(set_to_none=True)
    return model


@pytest.mark.parametrize("kind", ["DataLoader", "TensorLoader"])
def test_fit_equals_hand_loop(kind: str, tmp_path: Path) -> None:
    """fit for 3 epochs gives bit-identical parameters to the hand loop over the same
    unshuffled batches, for a torch DataLoader and for a TensorLoader."""
    x, y = _tensors(12, bs=4)
    if kind == "DataLoader":
        data: Any = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    else:
        data = ft.TensorLoader(x, y, batch_size=4, shuffle=False)
    result = ft.fit(
        _state(), ft.train_step(_loss), data, max_epochs=3, default_root_dir=tmp_path, **QUIET
    )
    assert result.state.step == 36
    assert _params_equal(result.state.model, _hand_loop(x, y, epochs=3, bs=4))


@pytest.mark.parametrize("batches", [12, 10])
def test_fit_flags_accumulate_and_clip_equal_hand_loop(batches: int, tmp_path: Path) -> None:
    """accumulate_grad_batches=4 and gradient_clip_val=1.0 as fit flags: bit-identical to the
    hand loop (loss / 4, clip_grad_norm_, step every 4 batches). With 10 batches the last
    window of 2 is rescaled to an exact mean (Lightning leaves it at 2/4: documented)."""
    x, y = _tensors(batches, bs=4)
    result = ft.fit(
        _state(),
        ft.train_step(_loss),
        ft.TensorLoader(x, y, batch_size=4, shuffle=False),
        max_epochs=2,
        accumulate_grad_batches=4,
        gradient_clip_val=1.0,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result.state.step == 2 * -(-batches // 4)
    assert result.state.micro_step == 2 * batches
    expected = _hand_loop(x, y, epochs=2, bs=4, acc=4, clip=1.0)
    assert _params_equal(result.state.model, expected)


def test_batches_train_in_data_order(tmp_path: Path) -> None:
    """Every batch of the unshuffled loader trains once per epoch, in order."""
    seen: list[float] = []

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        seen.append(float(batch[0][0, 0]))
        return _loss(model, batch)

    x, y = _tensors(5)
    ft.fit(
        _state(),
        ft.train_step(loss),
        DataLoader(TensorDataset(x, y), batch_size=2, shuffle=False),
        max_epochs=2,
        default_root_dir=tmp_path,
        **QUIET,
    )
    firsts = [float(v) for v in x[::2, 0]]
    assert seen == firsts + firsts


def test_module_modes_kept_through_training_and_validation(tmp_path: Path) -> None:
    """A submodule frozen with .eval() before fit stays in eval mode in every training batch,
    also after mid-epoch validations (which run in eval mode); the rest trains in train mode
    (Lightning >= 2.2 keeps submodule modes the same way)."""
    state = _state()
    state.model[0].eval()
    seen: list[tuple[bool, bool]] = []

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        seen.append((model.training, model[0].training))
        return _loss(model, batch)

    def val(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        seen.append((model.training, model[0].training))
        return {"val_loss": _loss(model, batch)}

    result = ft.fit(
        state,
        ft.train_step(loss),
        _loader(4),
        val_step=ft.eval_step(val),
        val_data=_loader(1),
        val_check_interval=0.5,
        max_epochs=2,
        default_root_dir=tmp_path,
        **QUIET,
    )
    train, evaluate = (True, False), (False, False)
    epoch = [train, train, evaluate, train, train, evaluate]
    assert seen == epoch + epoch
    assert result.state.model.training and not result.state.model[0].training


# --- when validation runs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # 0.3 of 10: after batches 3, 6, 9 and not at the epoch's end (LIGHTNING_SPEC).
        ({"val_check_interval": 0.3}, [(0, 3), (0, 6), (0, 9), (1, 3), (1, 6), (1, 9)]),
        (
            {"val_check_interval": 0.25},
            [(e, b) for e in range(2) for b in (2, 4, 6, 8, 10)],
        ),
        ({"val_check_interval": 1.0}, [(0, 10), (1, 10)]),
        ({}, [(0, 10), (1, 10)]),
        ({"val_check_interval": 4}, [(0, 4), (0, 8), (1, 4), (1, 8)]),
        # Counted across epochs: global batches 4, 8, 12, 16, 20.
        (
            {"val_check_interval": 4, "check_val_every_n_epoch": None},
            [(0, 4), (0, 8), (1, 2), (1, 6), (1, 10)],
        ),
        ({"val_check_interval": 15, "check_val_every_n_epoch": None}, [(1, 5)]),
    ],
)
def test_validation_points(
    flags: dict[str, Any], expected: list[tuple[int, int]], tmp_path: Path
) -> None:
    """Validation runs after exactly these (epoch, batches trained) points over 2 epochs of 10."""
    _, rec = _run(tmp_path, max_epochs=2, **flags)
    assert rec.validated == expected
    assert rec.per_epoch() == {0: 10, 1: 10}


def test_check_val_every_n_epoch(tmp_path: Path) -> None:
    """check_val_every_n_epoch=2 validates at the end of epochs 1 and 3 (0-based) only, and
    with val_check_interval=0.5 twice within those epochs."""
    _, rec = _run(tmp_path, batches=4, max_epochs=4, check_val_every_n_epoch=2)
    assert rec.validated == [(1, 4), (3, 4)]
    _, rec = _run(
        tmp_path, batches=4, max_epochs=4, check_val_every_n_epoch=2, val_check_interval=0.5
    )
    assert rec.validated == [(1, 2), (1, 4), (3, 2), (3, 4)]


@pytest.mark.parametrize(
    ("limit", "expected"), [(1.0, [5]), (0.4, [2]), (2, [2]), (1, [1]), (9, [5])]
)
def test_limit_val_batches(limit: float | int, expected: list[int], tmp_path: Path) -> None:
    """limit_val_batches: a fraction of the 5 val batches, or a count capped at 5."""
    _, rec = _run(tmp_path, batches=3, max_epochs=1, limit_val_batches=limit)
    assert rec.val_batches == expected


def test_limit_val_batches_zero_disables_validation(tmp_path: Path) -> None:
    """limit_val_batches=0: no validation run, no validation hooks, no sanity check."""
    _, rec = _run(tmp_path, batches=3, max_epochs=2, limit_val_batches=0, num_sanity_val_steps=2)
    assert rec.validated == [] and rec.val_batches == []
    assert rec._counter == 0
    assert rec.per_epoch() == {0: 3, 1: 3}


@pytest.mark.parametrize(("sanity", "expected"), [(2, 2), (0, 0), (-1, 5)])
def test_num_sanity_val_steps(sanity: int, expected: int, tmp_path: Path) -> None:
    """num_sanity_val_steps batches are evaluated before the first training batch (-1: all),
    without validation hooks; then the epoch-end validation runs all 5."""
    events: list[str] = []

    class Order(ft.Callback):
        def on_train_start(self, state: Any) -> None:
            events.append("train_start")

        def on_validation_start(self, state: Any) -> None:
            events.append("validation_start")

    def val_fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        events.append("val_batch")
        return {"val_loss": _loss(model, batch)}

    ft.fit(
        _state(),
        ft.train_step(_loss),
        _loader(3),
        val_step=ft.eval_step(val_fn),
        val_data=_loader(5, seed=2),
        callbacks=[Order()],
        max_epochs=1,
        default_root_dir=tmp_path,
        **{**QUIET, "num_sanity_val_steps": sanity},
    )
    assert (
        events == ["val_batch"] * expected + ["train_start", "validation_start"] + ["val_batch"] * 5
    )


def test_sanity_check_respects_limit_val_batches(tmp_path: Path) -> None:
    """The sanity check runs min(num_sanity_val_steps, limit_val_batches) batches."""
    calls: list[int] = []

    def val_fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        calls.append(1)
        return {"val_loss": _loss(model, batch)}

    ft.fit(
        _state(),
        ft.train_step(_loss),
        _loader(3),
        val_step=ft.eval_step(val_fn),
        val_data=_loader(5, seed=2),
        max_epochs=1,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        **{**QUIET, "num_sanity_val_steps": -1},
    )
    assert len(calls) == 1 + 1


# --- when the run stops ---------------------------------------------------------------


def test_max_epochs(tmp_path: Path) -> None:
    """max_epochs=2: two full epochs, validation at each end, the epoch counter at 2."""
    result, rec = _run(tmp_path, max_epochs=2)
    assert rec.per_epoch() == {0: 10, 1: 10}
    assert rec.validated == [(0, 10), (1, 10)]
    assert (result.state.step, result.state.epoch) == (20, 2)
    assert rec.train_end == 1


def test_max_steps_mid_epoch_skips_that_epochs_validation(tmp_path: Path) -> None:
    """max_steps=13 on 10-batch epochs: 10 + 3 batches; the cut epoch does not validate."""
    result, rec = _run(tmp_path, max_steps=13)
    assert rec.per_epoch() == {0: 10, 1: 3}
    assert rec.validated == [(0, 10)]
    assert result.state.step == 13
    assert rec.epoch_ends == [0, 1]  # the cut epoch still ends (its hooks run)


def test_first_limit_reached_wins(tmp_path: Path) -> None:
    """max_epochs and max_steps together: whichever comes first stops the run."""
    result, _ = _run(tmp_path, max_epochs=1, max_steps=13)
    assert result.state.step == 10
    result, _ = _run(tmp_path, max_epochs=5, max_steps=13)
    assert result.state.step == 13


def test_max_epochs_defaults_to_1000_with_a_warning(tmp_path: Path) -> None:
    """Without max_epochs, max_steps or max_time the run stops after 1000 epochs and warns
    (Lightning's default)."""
    with pytest.warns(UserWarning, match="max_epochs was not set, so training stops after 1000"):
        result, _ = _run(tmp_path, batches=1, val_batches=None)
    assert (result.state.epoch, result.state.step) == (1000, 1000)


def test_max_steps_alone_means_no_epoch_limit(tmp_path: Path) -> None:
    """With max_steps set, max_epochs defaults to -1: 1005 one-batch epochs run, no warning."""
    result, _ = _run(tmp_path, batches=1, val_batches=None, max_steps=1005)
    assert (result.state.epoch, result.state.step) == (1005, 1005)
    result, _ = _run(tmp_path, batches=1, val_batches=None, max_epochs=-1, max_steps=1003)
    assert result.state.step == 1003


class StopAtValidation(ft.Callback):
    """Asks to stop at the n-th validation end (as EarlyStopping would)."""

    def __init__(self, n: int = 1) -> None:
        self.n, self.count = n, 0

    def on_validation_end(self, state: Any, metrics: Any) -> bool:
        self.count += 1
        return self.count >= self.n


def test_stop_request_at_epoch_end(tmp_path: Path) -> None:
    """A stop request at the first epoch-end validation ends the run after that epoch."""
    result, rec = _run(tmp_path, max_epochs=5, callbacks=[StopAtValidation()])
    assert rec.per_epoch() == {0: 10}
    assert result.state.epoch == 1
    assert rec.train_end == 1


def test_stop_request_mid_epoch_ends_after_that_batch(tmp_path: Path) -> None:
    """A stop asked for by a mid-epoch validation (val_check_interval=0.25, after batch 2) ends
    training after that batch: no further batch and no second validation (Lightning's
    should_stop); the epoch's end hooks still run."""
    result, rec = _run(
        tmp_path, max_epochs=5, val_check_interval=0.25, callbacks=[StopAtValidation()]
    )
    assert rec.trained == [(0, 0), (0, 1)]
    assert rec.validated == [(0, 2)]
    assert rec.epoch_ends == [0]
    assert result.state.step == 2


def test_min_epochs_holds_off_a_stop_request(tmp_path: Path) -> None:
    """min_epochs=3 keeps training through a stop request made in epoch 0, then stops at once;
    validation keeps its own rhythm meanwhile."""
    result, rec = _run(
        tmp_path,
        max_epochs=10,
        min_epochs=3,
        val_check_interval=0.5,
        callbacks=[StopAtValidation()],
    )
    assert rec.per_epoch() == {0: 10, 1: 10, 2: 10}
    assert rec.validated == [(e, b) for e in range(3) for b in (5, 10)]
    assert result.state.epoch == 3


def test_min_steps_holds_off_a_stop_request(tmp_path: Path) -> None:
    """min_steps=13: a stop requested at step 10 takes effect after step 13, and validation
    runs once more there (Lightning validates when a stop may take effect)."""
    result, rec = _run(tmp_path, max_epochs=10, min_steps=13, callbacks=[StopAtValidation()])
    assert result.state.step == 13
    assert rec.validated == [(0, 10), (1, 3)]


def test_min_limits_do_not_hold_off_max_limits(tmp_path: Path) -> None:
    """max_steps stops even when min_epochs/min_steps are not met (they only hold requests)."""
    result, _ = _run(tmp_path, max_steps=15, min_epochs=3)
    assert result.state.step == 15
    result, _ = _run(tmp_path, max_steps=15, min_steps=30)
    assert result.state.step == 15
    result, _ = _run(tmp_path, max_epochs=1, min_steps=30)
    assert result.state.step == 10


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 5), (0.25, 2), (3, 3), (1, 1), (99, 10)])
def test_limit_train_batches(limit: float | int, expected: int, tmp_path: Path) -> None:
    """limit_train_batches: int(10 * f) or min(10, n) batches per epoch; validation at the
    limited epoch's end."""
    _, rec = _run(tmp_path, max_epochs=2, limit_train_batches=limit)
    assert rec.per_epoch() == {0: expected, 1: expected}
    assert rec.validated == [(0, expected), (1, expected)]


def test_limit_train_batches_zero_trains_nothing(tmp_path: Path) -> None:
    """limit_train_batches=0: no batch, no validation, the state untouched."""
    result, rec = _run(tmp_path, max_epochs=2, limit_train_batches=0)
    assert rec.trained == [] and rec.validated == []
    assert result.state.step == 0


@pytest.mark.parametrize(("fast", "n"), [(True, 1), (3, 3)])
def test_fast_dev_run(fast: bool | int, n: int, tmp_path: Path) -> None:
    """fast_dev_run: n training and n validation batches, one epoch, no sanity check, and
    nothing written, even with the default logger and checkpointing on."""
    result, rec = _run(
        tmp_path,
        fast_dev_run=fast,
        max_epochs=5,
        logger=True,
        enable_checkpointing=True,
        num_sanity_val_steps=2,
    )
    assert rec.per_epoch() == {0: n}
    assert rec.val_batches == [n]
    assert rec.validated == [(0, n)]
    assert result.state.step == n
    assert list(tmp_path.iterdir()) == []
    assert result.best_checkpoint is None and result.log_dir is None


# --- data ------------------------------------------------------------------------------


def test_reload_dataloaders_every_n_epochs(tmp_path: Path) -> None:
    """Factories epoch -> loader are called at epochs 0, 2, 4 with n=2 (train and validation
    counted separately), and once with n=0."""
    train_calls: list[int] = []
    val_calls: list[int] = []

    def train_factory(epoch: int) -> ft.TensorLoader:
        train_calls.append(epoch)
        return _loader(3)

    def val_factory(epoch: int) -> ft.TensorLoader:
        val_calls.append(epoch)
        return _loader(2, seed=2)

    for n, expected in [(2, [0, 2, 4]), (0, [0])]:
        train_calls.clear()
        val_calls.clear()
        ft.fit(
            _state(),
            ft.train_step(_loss),
            train_factory,
            val_step=ft.eval_step(lambda m, b: {"val_loss": _loss(m, b)}),
            val_data=val_factory,
            max_epochs=5,
            reload_dataloaders_every_n_epochs=n,
            default_root_dir=tmp_path,
            **{**QUIET, "num_sanity_val_steps": 1},
        )
        assert train_calls == expected
        assert val_calls == expected


class _Stream(IterableDataset):  # type: ignore[type-arg]
    """An unsized stream of batches (no __len__)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bs: int) -> None:
        self.x, self.y, self.bs = x, y, bs

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.x), self.bs):
            yield self.x[i : i + self.bs], self.y[i : i + self.bs]


def test_iterable_dataset_without_len_with_max_steps(tmp_path: Path) -> None:
    """An IterableDataset without __len__: epochs end when it is exhausted; max_steps=15
    stops mid-way through the second; validation at each full epoch's end."""
    stream = DataLoader(_Stream(*_tensors(10), bs=2), batch_size=None)
    result, rec = _run(tmp_path, data=stream, max_steps=15)
    assert rec.per_epoch() == {0: 10, 1: 5}
    assert rec.validated == [(0, 10)]
    assert result.state.step == 15


def test_unsized_data_with_int_interval_and_limit(tmp_path: Path) -> None:
    """Unsized data: an int val_check_interval validates every N batches (not at the end);
    an int limit_train_batches cuts each epoch; fractions are refused."""
    stream = _Stream(*_tensors(10), bs=2)
    _, rec = _run(tmp_path, data=stream, max_epochs=1, val_check_interval=3)
    assert rec.validated == [(0, 3), (0, 6), (0, 9)]
    _, rec = _run(tmp_path, data=stream, max_epochs=2, limit_train_batches=4)
    assert rec.per_epoch() == {0: 4, 1: 4}
    with pytest.raises(ValueError, match=r"val_check_interval=0\.5: a fraction of the epoch"):
        _run(tmp_path, data=stream, max_epochs=1, val_check_interval=0.5)
    with pytest.raises(ValueError, match=r"limit_train_batches=0\.5: a fraction needs data"):
        _run(tmp_path, data=stream, max_epochs=1, limit_train_batches=0.5)


def test_accumulate_window_closes_at_unsized_epoch_end(tmp_path: Path) -> None:
    """accumulate_grad_batches=4 over an unsized epoch of 10 batches steps 3 times per epoch
    (4, 4, then the last 2 at the epoch's end, found by looking one batch ahead), exactly as
    over the same batches with a length."""
    x, y = _tensors(10, bs=2)
    flags = dict(max_epochs=2, accumulate_grad_batches=4, default_root_dir=tmp_path, **QUIET)
    unsized = ft.fit(_state(), ft.train_step(_loss), _Stream(x, y, 2), **flags)
    sized = ft.fit(_state(), ft.train_step(_loss), _loader(10), **flags)
    assert unsized.state.step == sized.state.step == 6
    assert _params_equal(unsized.state.model, sized.state.model)
    assert _params_equal(unsized.state.model, _hand_loop(x, y, epochs=2, bs=2, acc=4))


def test_exhausted_one_shot_iterator_stops_with_a_warning(tmp_path: Path) -> None:
    """A generator is consumed by the first epoch; the next yields nothing, so fit warns and
    stops instead of spinning through empty epochs (max_steps alone has no epoch limit)."""
    batches = list(_loader(4))
    with pytest.warns(RuntimeWarning, match="yielded no batches in epoch 1; stopping"):
        result, rec = _run(tmp_path, data=(b for b in batches), val_batches=None, max_steps=100)
    assert rec.per_epoch() == {0: 4}
    assert result.state.step == 4


# --- max_time with an injected clock ---------------------------------------------------------


class FakeClock:
    """A clock the test moves: each training batch takes ``dt`` seconds."""

    def __init__(self, dt: float = 1.0) -> None:
        self.now = 100.0
        self.dt = dt

    def __call__(self) -> float:
        return self.now


class Tick(ft.Callback):
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
        self.clock.now += self.clock.dt


@pytest.mark.parametrize("max_time", ["00:00:00:05", {"seconds": 5}, datetime.timedelta(seconds=5)])
def test_max_time_stops_after_the_batch_that_reaches_it(max_time: Any, tmp_path: Path) -> None:
    """max_time of 5 s at 1 s per batch: the 5th batch finishes, validation runs once more,
    the epoch ends; the run is not 'interrupted'. All three forms behave the same."""
    clock = FakeClock()
    result, rec = _run(tmp_path, max_time=max_time, clock=clock, callbacks=[Tick(clock)])
    assert rec.per_epoch() == {0: 5}
    assert rec.validated == [(0, 5)]
    assert rec.epoch_ends == [0]
    assert result.interrupted is False
    assert result.state.step == 5


def test_max_time_spans_epochs_and_excludes_setup(tmp_path: Path) -> None:
    """max_time=25 s over 10-batch epochs stops after batch 5 of epoch 2; time spent before
    training starts (here: in on_fit_start) does not count, as Lightning's Timer starts at
    on_train_start."""
    clock = FakeClock()

    class SlowSanity(ft.Callback):
        def on_fit_start(self, state: Any) -> None:
            clock.now += 1000.0

    result, rec = _run(
        tmp_path,
        val_batches=None,
        max_time={"seconds": 25},
        clock=clock,
        callbacks=[SlowSanity(), Tick(clock)],
    )
    assert rec.per_epoch() == {0: 10, 1: 10, 2: 5}
    assert result.state.step == 25


def test_max_time_is_held_off_by_min_epochs(tmp_path: Path) -> None:
    """max_time is a stop request: min_epochs=2 keeps training to the end of epoch 1."""
    clock = FakeClock()
    result, rec = _run(
        tmp_path,
        val_batches=None,
        max_time={"seconds": 5},
        min_epochs=2,
        clock=clock,
        callbacks=[Tick(clock)],
    )
    assert rec.per_epoch() == {0: 10, 1: 10}
    assert result.state.step == 20


def test_max_time_reached_at_epoch_end_stops_before_next_epoch(tmp_path: Path) -> None:
    """Time that runs out during the epoch-end validation stops the run before epoch 1."""
    clock = FakeClock(dt=0.0)

    class SlowValidation(ft.Callback):
        def on_validation_end(self, state: Any, metrics: Any) -> None:
            clock.now += 60.0

    result, rec = _run(
        tmp_path, max_time={"seconds": 30}, clock=clock, callbacks=[SlowValidation()]
    )
    assert rec.per_epoch() == {0: 10}
    assert result.state.epoch == 1


# --- LR schedulers -------------------------------------------------------------------------


class LRs(ft.Callback):
    def __init__(self) -> None:
        self.per_batch: list[float] = []

    def on_train_batch_start(self, state: Any, batch: Any, batch_idx: int) -> None:
        self.per_batch.append(state.optimizer.param_groups[0]["lr"])


def _halving(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5**k)


def test_epoch_interval_scheduler_steps_once_per_epoch(tmp_path: Path) -> None:
    """A bare scheduler (interval='epoch', Lightning's default) steps at each epoch's end."""
    lrs = LRs()
    state = _state(lr=1.0, scheduler=_halving)
    result = ft.fit(
        state,
        ft.train_step(_loss),
        _loader(4),
        callbacks=[lrs],
        max_epochs=3,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert lrs.per_batch == [1.0] * 4 + [0.5] * 4 + [0.25] * 4
    assert result.state.scheduler.scheduler.last_epoch == 3


@pytest.mark.parametrize(("acc", "expected_steps"), [(1, 8), (4, 2)])
def test_step_interval_scheduler_steps_per_optimizer_step(
    acc: int, expected_steps: int, tmp_path: Path
) -> None:
    """interval='step' steps after every optimizer step, never on accumulating batches."""
    lrs = LRs()
    state = _state(lr=1.0, scheduler=lambda o: ft.SchedulerConfig(_halving(o), interval="step"))
    ft.fit(
        state,
        ft.train_step(_loss),
        _loader(4),
        callbacks=[lrs],
        max_epochs=2,
        accumulate_grad_batches=acc,
        default_root_dir=tmp_path,
        **QUIET,
    )
    if acc == 1:
        assert lrs.per_batch == [0.5**k for k in range(8)]
    else:
        assert lrs.per_batch == [1.0] * 4 + [0.5] * 4
    assert state.scheduler.scheduler.last_epoch == expected_steps


def test_reduce_lr_on_plateau_fed_the_validation_metric(tmp_path: Path) -> None:
    """ReduceLROnPlateau(monitor='val_loss') receives each epoch's validation value: with
    patience 0 the lr halves after each epoch whose val_loss is no improvement."""
    values = iter([1.0, 2.0, 3.0, 0.5, 0.6])
    current: list[float] = []

    class Feed(ft.Callback):
        def on_validation_start(self, state: Any) -> None:
            current[:] = [next(values)]

    def plateau(opt: torch.optim.Optimizer) -> ft.SchedulerConfig:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        return ft.SchedulerConfig(sched, monitor="val_loss")

    lrs = LRs()
    state = _state(lr=1.0, scheduler=plateau)
    ft.fit(
        state,
        ft.train_step(_loss),
        _loader(2),
        val_step=ft.eval_step(lambda m, b: {"val_loss": torch.tensor(current[0])}),
        val_data=_loader(1),
        callbacks=[Feed(), lrs],
        max_epochs=5,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert lrs.per_batch[::2] == [1.0, 1.0, 0.5, 0.25, 0.25]
    assert state.optimizer.param_groups[0]["lr"] == 0.125
    assert state.scheduler.scheduler.best == 0.5


def test_reduce_lr_on_plateau_missing_monitor_is_an_error(tmp_path: Path) -> None:
    """A plateau scheduler whose monitor was never logged fails at the epoch's end, naming the
    logged metrics (strict=True, Lightning's default)."""

    def plateau(opt: torch.optim.Optimizer) -> ft.SchedulerConfig:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return ft.SchedulerConfig(sched, monitor="val_acc")

    with pytest.raises(ValueError, match=r"monitors 'val_acc', which was not logged; logged: \["):
        ft.fit(
            _state(scheduler=plateau),
            ft.train_step(_loss),
            _loader(2),
            max_epochs=1,
            default_root_dir=tmp_path,
            **QUIET,
        )


# --- model summary ----------------------------------------------------------------------


@pytest.mark.parametrize("bar", [True, False])
def test_model_summary_printed_once(bar: bool, tmp_path: Path, capsys: Any) -> None:
    """enable_model_summary=True prints the summary table once (with or without the progress
    bar); False prints none."""
    flags = {**QUIET, "enable_progress_bar": bar, "default_root_dir": tmp_path}
    ft.fit(
        _state(),
        ft.train_step(_loss),
        _loader(3),
        max_epochs=2,
        **{**flags, "enable_model_summary": True},
    )
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("total params") == 1
    assert text.count("Tanh") == 1
    ft.fit(_state(), ft.train_step(_loss), _loader(3), max_epochs=2, **flags)
    out = capsys.readouterr()
    assert "total params" not in out.out + out.err


def test_no_warning_in_a_plain_run(tmp_path: Path) -> None:
    """A well-configured run emits no warning at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(tmp_path, max_epochs=1)
