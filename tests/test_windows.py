"""RandomWindows: random token windows whose batch k is a function of (seed, epoch, k, rank);
iteration-based fit, exact resume without replay, and sharding across ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ftrain as ft
from ftrain._data._loader import prepare_loader

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}
VOCAB, BLOCK = 11, 6


def tokens(n: int = 300) -> torch.Tensor:
    return torch.randint(VOCAB, (n,), generator=torch.Generator().manual_seed(7))


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x))


def lm_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def make_state(seed: int = 0) -> ft.TrainState:
    torch.manual_seed(0)
    net = TinyLM()
    return ft.TrainState.create(net, torch.optim.AdamW(net.parameters(), lr=1e-2), seed=seed)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(BLOCK + 1, 400),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(0, 2**40),
    st.integers(0, 50),
)
def test_rank_batches_are_slices_of_the_global_batch(
    n: int, batch: int, world: int, seed: int, index: int
) -> None:
    """Rank r's offsets are rows [r*B, (r+1)*B) of the one-process batch of world*B, all
    within [0, n - block_size - 1]."""
    parts = [
        ft.window_offsets(
            n, BLOCK, batch, seed=seed, epoch=1, index=index, rank=r, world_size=world
        )
        for r in range(world)
    ]
    whole = ft.window_offsets(n, BLOCK, batch * world, seed=seed, epoch=1, index=index)
    assert torch.equal(torch.cat(parts), whole)
    assert int(whole.min()) >= 0 and int(whole.max()) <= n - BLOCK - 1


def test_windows_of_a_tensor_and_of_a_memmap_agree(tmp_path: Path) -> None:
    """x and y are the windows at the drawn offsets, y shifted by one; a uint16 memmap
    gives the same int64 batches as the tensor; every start offset can be drawn."""
    data = tokens()
    path = tmp_path / "train.bin"
    data.numpy().astype(np.uint16).tofile(path)
    memmap = np.memmap(path, dtype=np.uint16, mode="r")
    a = ft.RandomWindows(data, BLOCK, 4, num_batches=3, seed=5)
    b = ft.RandomWindows(memmap, BLOCK, 4, num_batches=3, seed=5)
    for k, ((xa, ya), (xb, yb)) in enumerate(zip(a, b, strict=True)):
        assert xa.dtype == torch.int64 and torch.equal(xa, xb) and torch.equal(ya, yb)
        offsets = ft.window_offsets(300, BLOCK, 4, seed=5, epoch=0, index=k)
        rows = torch.stack([data[o : o + BLOCK + 1] for o in offsets.tolist()])
        assert torch.equal(xa, rows[:, :-1]) and torch.equal(ya, rows[:, 1:])
    tiny = ft.RandomWindows(torch.arange(BLOCK + 2), BLOCK, 64, seed=0)
    x, _ = next(iter(tiny))
    assert set(x[:, 0].tolist()) == {0, 1}


def test_bad_windows_arguments_are_refused() -> None:
    """Not 1-D, float, too short, bad sizes: errors name the argument and the value."""
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (torch.zeros(4, 4, dtype=torch.long), {}, "1-D integer token ids"),
        (torch.zeros(100), {}, "1-D integer token ids"),
        ([1, 2, 3], {}, "got list"),
        (torch.arange(BLOCK), {}, f"at least block_size \\+ 1 = {BLOCK + 1}"),
        (torch.arange(100), {"num_batches": 0}, "num_batches must be an int >= 1, got 0"),
        (torch.arange(100), {"seed": 1.5}, "seed must be an int or None"),
    ]
    for data, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ft.RandomWindows(data, BLOCK, 2, **kwargs)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        ft.RandomWindows(torch.arange(100), BLOCK, 0)
    with pytest.raises(TypeError, match="endless"):
        len(ft.RandomWindows(torch.arange(100), BLOCK, 2))


def hand_loop(steps: int, seed: int, batch: int = 4) -> TinyLM:
    """The nanoGPT-order loop on the same windows: the oracle."""
    state = make_state()
    model, opt = state.model, state.optimizer
    data = tokens()
    for k in range(steps):
        offsets = ft.window_offsets(300, BLOCK, batch, seed=seed, epoch=0, index=k)
        rows = torch.stack([data[o : o + BLOCK + 1] for o in offsets.tolist()])
        loss = lm_loss(model, (rows[:, :-1], rows[:, 1:]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model


def test_iteration_based_fit_equals_the_hand_loop_and_resumes_without_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_steps without epochs over endless windows (seeded by the run seed) trains
    exactly as the hand loop; resumed to step 9 from the checkpoint of step 4 (as after a
    kill: mid-epoch), the parameters are bit-identical and the resumed run draws no batch
    before index 4."""
    expected = hand_loop(9, seed=3)
    windows = ft.RandomWindows(tokens(), BLOCK, 4)
    step = ft.train_step(lm_loss)
    whole = ft.fit(make_state(seed=3), step, windows, max_steps=9, **QUIET, checkpoint=False)
    assert whole.state.step == 9
    for p, q in zip(whole.state.model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(p, q)

    policy = ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1)
    flags = {**QUIET, "default_root_dir": str(tmp_path), "checkpoint": policy}
    ft.fit(make_state(seed=3), step, ft.RandomWindows(tokens(), BLOCK, 4), max_steps=5, **flags)
    drawn: list[int] = []
    original = ft.RandomWindows.batch

    def spy(self: ft.RandomWindows, index: int) -> Any:
        drawn.append(index)
        return original(self, index)

    monkeypatch.setattr(ft.RandomWindows, "batch", spy)
    resumed = ft.fit(
        make_state(seed=3),
        step,
        ft.RandomWindows(tokens(), BLOCK, 4),
        max_steps=9,
        ckpt_path=next(tmp_path.glob("**/*step=4*.ckpt")),
        **flags,
    )
    assert min(drawn) == 4 and len(drawn) <= 6  # 5 trained, at most one looked ahead
    for p, q in zip(resumed.state.model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(p, q)


def test_prepare_loader_shards_and_skips_windows() -> None:
    """Under prepare_loader, rank r of 2 gets its half of the 1-process batch of 2B, and a
    skip of k starts at batch k; the loader's own seed wins over the run's."""
    single = ft.RandomWindows(tokens(), BLOCK, 8)
    halves = [ft.RandomWindows(tokens(), BLOCK, 4) for _ in range(2)]
    whole = next(iter(prepare_loader(single, seed=2, epoch=1, skip_batches=3)))
    parts = [
        next(iter(prepare_loader(h, seed=2, epoch=1, skip_batches=3, rank=r, world_size=2)))
        for r, h in enumerate(halves)
    ]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
    own = ft.RandomWindows(tokens(), BLOCK, 8, seed=9)
    first = next(iter(prepare_loader(own, seed=2, epoch=0)))
    again = next(iter(prepare_loader(own, seed=4, epoch=0)))
    assert torch.equal(first[0], again[0])


def _ddp_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    return lm_loss(model, batch)


@pytest.mark.slow
def test_two_ranks_of_b_train_as_one_process_of_2b(tmp_path: Path) -> None:
    """DDP over 2 gloo ranks x 4 windows gives the parameters of 1 process x 8 windows:
    the ranks draw their halves of the same global batch."""
    step = ft.train_step(_ddp_loss)
    one = ft.fit(
        make_state(), step, ft.RandomWindows(tokens(), BLOCK, 8), max_steps=4, checkpoint=False,
        **QUIET,
    )  # fmt: skip
    two = ft.fit(
        make_state(),
        step,
        ft.RandomWindows(tokens(), BLOCK, 4),
        max_steps=4,
        devices=2,
        strategy="ddp_spawn",
        accelerator="cpu",
        checkpoint=False,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    for p, q in zip(one.state.model.parameters(), two.state.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
