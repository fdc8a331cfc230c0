"""Tests for ftrain._data._loader: epoch order, resume by index, sharding, loaders, batch walking."""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from typing import Any, NamedTuple

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
)

from ftrain._batch import batch_size_of, move_to_device
from ftrain._data._loader import TensorLoader, loader_length, prepare_loader
from ftrain._data._sampler import SeededBatchSampler, epoch_permutation
from ftrain._seed import mix_seed

CPU = torch.device("cpu")
META = torch.device("meta")


class CountingDataset(Dataset[int]):
    """Sample i is i; counts __getitem__ calls."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.calls += 1
        return i


class ReversedSampler(Sampler[int]):
    """A deterministic user sampler: n-1 .. 0."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return iter(range(self.n - 1, -1, -1))


class Stream(IterableDataset[int]):
    def __iter__(self) -> Any:
        return iter(range(10))


def batches(loader: Any) -> list[list[int]]:
    return [b.tolist() if isinstance(b, torch.Tensor) else list(b) for b in loader]


# -- seeds and epoch order ---------------------------------------------------------


@given(st.lists(st.integers(-(2**70), 2**70), max_size=4))
def test_mix_seed_is_deterministic_63_bit(values: list[int]) -> None:
    """mix_seed is a pure function of its arguments with values in [0, 2**63)."""
    s = mix_seed(*values)
    assert s == mix_seed(*values)
    assert 0 <= s < 2**63


def test_mix_seed_spreads_nearby_inputs() -> None:
    """Nearby (seed, epoch) pairs, and swapped arguments, give distinct seeds."""
    seeds = {mix_seed(s, e) for s in range(30) for e in range(30)}
    assert len(seeds) == 900
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_epoch_permutation_is_randperm_seeded_by_mix_seed() -> None:
    """epoch_permutation is torch.randperm under a generator seeded by mix_seed(seed, epoch)."""
    oracle = torch.randperm(50, generator=torch.Generator().manual_seed(mix_seed(3, 4)))
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(epoch_permutation(50, 3, 4), oracle)
    assert not torch.equal(epoch_permutation(50, 3, 5), oracle)


def test_order_is_a_function_of_seed_and_epoch_only() -> None:
    """Two shuffling DataLoaders over one dataset give equal batches for equal (seed, epoch)."""
    ds = CountingDataset(20)
    a = DataLoader(ds, batch_size=4, shuffle=True)
    b = DataLoader(ds, batch_size=4, shuffle=True)
    torch.manual_seed(1)
    first = batches(prepare_loader(a, seed=7, epoch=2))
    torch.manual_seed(2)
    assert batches(prepare_loader(b, seed=7, epoch=2)) == first
    assert batches(prepare_loader(a, seed=7, epoch=3)) != first
    assert batches(prepare_loader(b, seed=8, epoch=2)) != first
    flat = list(itertools.chain.from_iterable(first))
    assert flat == epoch_permutation(20, 7, 2).tolist()


def test_sequential_loader_keeps_dataset_order() -> None:
    """A SequentialSampler loader yields 0..n-1 in order, every epoch."""
    loader = DataLoader(CountingDataset(7), batch_size=3)
    for epoch in range(2):
        assert batches(prepare_loader(loader, seed=5, epoch=epoch)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_shuffle_default_overrides_stock_samplers() -> None:
    """shuffle_default=True shuffles a sequential loader; False unshuffles a random one."""
    seq = DataLoader(CountingDataset(9), batch_size=3)
    rnd = DataLoader(CountingDataset(9), batch_size=3, shuffle=True)
    shuffled = list(
        itertools.chain.from_iterable(
            batches(prepare_loader(seq, seed=0, epoch=0, shuffle_default=True))
        )
    )
    assert shuffled == epoch_permutation(9, 0, 0).tolist()
    plain = batches(prepare_loader(rnd, seed=0, epoch=0, shuffle_default=False))
    assert plain == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_iteration_order_is_fixed_at_the_first_batch() -> None:
    """set_epoch/set_skip after the first batch do not change an iteration under way."""
    sampler = SeededBatchSampler(12, 4, shuffle=True, seed=0)
    it = iter(sampler)
    first = next(it)
    sampler.set_epoch(5)
    sampler.set_skip(2)
    assert [first, *it] == epoch_permutation(12, 0, 0).reshape(3, 4).tolist()
    tl = TensorLoader(torch.arange(12), batch_size=4, seed=0)
    it2 = iter(tl)
    first2 = next(it2)
    tl.set_epoch(5)
    assert torch.cat([first2, *it2]).tolist() == epoch_permutation(12, 0, 0).tolist()


# -- resume ------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_skip_resumes_by_index_without_loading(shuffle: bool, drop_last: bool) -> None:
    """For every k, skip=k yields the full epoch's batches from k on and loads only those."""
    ds = CountingDataset(23)
    loader = DataLoader(ds, batch_size=4, shuffle=shuffle, drop_last=drop_last)
    full = batches(prepare_loader(loader, seed=1, epoch=3))
    assert len(full) == loader_length(prepare_loader(loader, seed=1, epoch=3))
    for k in range(len(full) + 2):
        ds.calls = 0
        tail = batches(prepare_loader(loader, seed=1, epoch=3, skip_batches=k))
        assert tail == full[k:]
        assert ds.calls == sum(len(b) for b in full[k:])


def test_skip_applies_to_one_iteration() -> None:
    """After a skipped iteration the next one is the full epoch again."""
    sampler = SeededBatchSampler(10, 3, shuffle=False, seed=0)
    sampler.set_skip(2)
    assert list(sampler) == [[6, 7, 8], [9]]
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(sampler) == 4


# -- sharding ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 13])
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_match_distributed_sampler(n: int, world: int, drop_last: bool) -> None:
    """Each rank's batches equal BatchSampler(DistributedSampler(shuffle=False)) over the base order."""
    base = [(7 * i + 3) % 17 + 100 for i in range(n)]  # any order, any index values
    for rank in range(world):
        ours = SeededBatchSampler(
            n,
            2,
            shuffle=False,
            seed=0,
            drop_last=drop_last,
            rank=rank,
            world_size=world,
            base_order=base,
        )
        dist: DistributedSampler[int] = DistributedSampler(
            CountingDataset(n), world, rank, shuffle=False, drop_last=drop_last
        )
        oracle = [[base[i] for i in b] for b in BatchSampler(dist, 2, drop_last)]
        assert list(ours) == oracle
        assert len(ours) == len(oracle)


def test_two_ranks_split_the_shuffled_epoch() -> None:
    """Two ranks' shards are disjoint, their union is the epoch, and interleaved give its order."""
    loader = DataLoader(CountingDataset(16), batch_size=4, shuffle=True)
    shards = [
        list(
            itertools.chain.from_iterable(
                batches(prepare_loader(loader, seed=2, epoch=1, rank=r, world_size=2))
            )
        )
        for r in range(2)
    ]
    assert not set(shards[0]) & set(shards[1])
    interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
    assert interleaved == epoch_permutation(16, 2, 1).tolist()


def test_drop_last_drops_the_uneven_tail_across_ranks() -> None:
    """With drop_last, 11 samples over 2 ranks give 5 each and the epoch's last one is dropped."""
    shards = [
        list(SeededBatchSampler(11, 5, shuffle=False, seed=0, drop_last=True, rank=r, world_size=2))
        for r in range(2)
    ]
    assert shards == [[[0, 2, 4, 6, 8]], [[1, 3, 5, 7, 9]]]


# -- rebuilt DataLoaders -----------------------------------------------------------


def collate_sum(samples: list[int]) -> int:
    return sum(samples)


def test_rebuilt_loader_keeps_settings_and_is_cached() -> None:
    """The rebuilt loader keeps dataset, collate_fn, drop_last, num_workers; built once per shard."""
    ds = CountingDataset(10)
    loader = DataLoader(ds, batch_size=3, shuffle=True, drop_last=True, collate_fn=collate_sum)
    out = prepare_loader(loader, seed=0, epoch=0)
    assert isinstance(out, DataLoader) and out is not loader
    assert out.dataset is ds and out.collate_fn is collate_sum and out.num_workers == 0
    assert isinstance(out.batch_sampler, SeededBatchSampler) and out.batch_sampler.drop_last
    perm = epoch_permutation(10, 0, 0).tolist()
    assert list(out) == [sum(perm[i : i + 3]) for i in (0, 3, 6)]
    assert prepare_loader(loader, seed=0, epoch=1) is out
    assert prepare_loader(loader, seed=0, epoch=1, rank=1, world_size=2) is not out


def test_rebuilt_loader_with_a_worker_process() -> None:
    """num_workers=1 is kept, and the worker loads the same batches as the main process."""
    loader = DataLoader(TensorDataset(torch.arange(12)), batch_size=5, shuffle=True, num_workers=1)
    out = prepare_loader(loader, seed=4, epoch=2, skip_batches=1)
    assert isinstance(out, DataLoader) and out.num_workers == 1
    got = [b[0].tolist() for b in out]
    perm = epoch_permutation(12, 4, 2).tolist()
    assert got == [perm[5:10], perm[10:]]


def test_seed_workers_sets_worker_init_fn(monkeypatch: pytest.MonkeyPatch) -> None:
    """With FTRAIN_SEED_WORKERS=1 a rebuilt worker loader gets ftrain's worker_init_fn for its rank."""
    from ftrain._seed import worker_init_fn

    monkeypatch.setenv("FTRAIN_SEED_WORKERS", "1")
    loader = DataLoader(CountingDataset(4), batch_size=2, num_workers=1)
    out = prepare_loader(loader, seed=0, epoch=0, rank=1, world_size=2)
    assert isinstance(out, DataLoader)
    fn = out.worker_init_fn
    assert isinstance(fn, functools.partial) and fn.func is worker_init_fn
    assert fn.keywords == {"rank": 1}
    monkeypatch.setenv("FTRAIN_SEED_WORKERS", "0")
    assert prepare_loader(loader, seed=0, epoch=0).worker_init_fn is None  # type: ignore[attr-defined]


def test_custom_sampler_order_is_kept_with_a_warning() -> None:
    """A user sampler's order is read each epoch (warned once), sharded and skippable."""
    ds = CountingDataset(7)
    loader = DataLoader(ds, batch_size=2, sampler=ReversedSampler(7))
    with pytest.warns(UserWarning, match="ReversedSampler is read in full"):
        out = prepare_loader(loader, seed=0, epoch=0)
    assert batches(out) == [[6, 5], [4, 3], [2, 1], [0]]
    ds.calls = 0
    assert batches(prepare_loader(loader, seed=0, epoch=1, skip_batches=3)) == [[0]]
    assert ds.calls == 1


def test_user_distributed_sampler_is_not_sharded_again() -> None:
    """A DistributedSampler gets set_epoch and is used as this rank's shard."""
    ds = CountingDataset(10)
    dist: DistributedSampler[int] = DistributedSampler(
        ds, num_replicas=2, rank=1, shuffle=True, seed=3
    )
    loader = DataLoader(ds, batch_size=4, sampler=dist)
    got = batches(prepare_loader(loader, seed=0, epoch=2, rank=1, world_size=2))
    dist.set_epoch(2)
    assert got == [list(b) for b in BatchSampler(dist, 4, False)]


def test_user_batch_sampler_is_returned_as_is_and_skipped_by_loading() -> None:
    """A loader with its own batch_sampler is returned itself; a skip loads and drops batches."""
    ds = CountingDataset(6)
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 2, False))
    assert prepare_loader(loader, seed=0, epoch=0) is loader
    with pytest.warns(UserWarning, match="loading and discarding 2 batches"):
        out = prepare_loader(loader, seed=0, epoch=0, skip_batches=2)
    ds.calls = 0
    assert batches(out) == [[4, 5]]
    assert ds.calls == 6
    assert loader_length(out) == 3


def test_iterable_dataset_and_plain_iterables() -> None:
    """IterableDataset loaders and generators pass through; their length is None."""
    loader = DataLoader(Stream(), batch_size=4)
    assert prepare_loader(loader, seed=0, epoch=0) is loader
    assert loader_length(loader) is None
    with pytest.warns(UserWarning, match="loading and discarding"):
        out = prepare_loader(loader, seed=0, epoch=0, skip_batches=1)
    assert batches(out) == [[4, 5, 6, 7], [8, 9]]
    assert loader_length(out) is None
    assert loader_length(iter([1])) is None and loader_length([[1], [2]]) == 2


# -- TensorLoader ------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2)])
def test_tensor_loader_equals_dataloader(
    shuffle: bool, drop_last: bool, rank: int, world: int
) -> None:
    """TensorLoader yields DataLoader(TensorDataset, batch_sampler=SeededBatchSampler)'s batches."""
    x, y = torch.randn(11, 3), torch.arange(11)
    tl = TensorLoader(x, y, batch_size=3, shuffle=shuffle, drop_last=drop_last, seed=9)
    tl.shard(rank, world)
    sampler = SeededBatchSampler(
        11, 3, shuffle=shuffle, seed=9, drop_last=drop_last, rank=rank, world_size=world
    )
    dl = DataLoader(TensorDataset(x, y), batch_sampler=sampler)
    for epoch, skip in [(0, 0), (1, 0), (1, 1)]:
        tl.set_epoch(epoch)
        tl.set_skip(skip)
        sampler.set_epoch(epoch)
        sampler.set_skip(skip)
        ours, oracle = list(tl), list(dl)
        assert len(ours) == len(oracle) and len(tl) == len(dl)
        for (a, b), (c, d) in zip(ours, oracle, strict=True):
            assert isinstance(a, torch.Tensor) and a.dtype == c.dtype
            assert torch.equal(a, c) and torch.equal(b, d)


def test_tensor_loader_single_tensor_and_views() -> None:
    """One tensor gives tensors, not tuples; unshuffled batches are views of it."""
    x = torch.arange(5.0)
    got = list(TensorLoader(x, batch_size=2, shuffle=False))
    assert [b.tolist() for b in got] == [[0.0, 1.0], [2.0, 3.0], [4.0]]
    assert got[0].data_ptr() == x.data_ptr()


def test_tensor_loader_keeps_the_device() -> None:
    """Batches of tensors on another device are gathered there."""
    x = torch.zeros(6, 2, device=META)
    for b in TensorLoader(x, torch.arange(6), batch_size=4, seed=0):
        assert b[0].device == META and b[1].device == CPU
        assert b[0].shape[1:] == (2,) and b[0].shape[0] == b[1].shape[0]


def test_prepare_tensor_loader_seed_shard_and_shuffle() -> None:
    """prepare_loader sets epoch, skip and shard; a loader without seed takes the run's."""
    x = torch.arange(8)
    free, fixed = TensorLoader(x, batch_size=8), TensorLoader(x, batch_size=8, seed=1)
    assert (
        next(iter(prepare_loader(free, seed=5, epoch=2))).tolist()
        == epoch_permutation(8, 5, 2).tolist()
    )
    assert (
        next(iter(prepare_loader(fixed, seed=5, epoch=2))).tolist()
        == epoch_permutation(8, 1, 2).tolist()
    )
    out = prepare_loader(free, seed=5, epoch=2, rank=1, world_size=2, shuffle_default=False)
    assert [b.tolist() for b in out] == [[1, 3, 5, 7]] and loader_length(out) == 1
    assert list(prepare_loader(free, seed=5, epoch=2, skip_batches=1)) == []


# -- move_to_device and batch_size_of ----------------------------------------------


class Pair(NamedTuple):
    x: torch.Tensor
    label: str


@attrs.frozen
class AttrsBatch:
    x: torch.Tensor
    _mask: torch.Tensor
    n: int = 3
    extra: torch.Tensor = attrs.field(init=False, factory=lambda: torch.zeros(1))


@dataclasses.dataclass
class DataBatch:
    x: torch.Tensor
    names: list[str]


def test_move_to_device_nested() -> None:
    """Every tensor leaf moves with its dtype; containers keep their types; other leaves stay."""
    h = torch.ones(2, dtype=torch.float16)
    i = torch.arange(3)
    names = ["a", "b"]
    dd: collections.defaultdict[str, Any] = collections.defaultdict(list, {"t": i})
    batch = {
        "pair": Pair(h, "lbl"),
        "attrs": AttrsBatch(h, i),
        "data": DataBatch(i, names),
        "list": [h, (i, 5)],
        "dd": dd,
    }
    out = move_to_device(batch, META)
    assert type(out["pair"]) is Pair and out["pair"].label == "lbl"
    assert out["pair"].x.device == META and out["pair"].x.dtype == torch.float16
    a = out["attrs"]
    assert type(a) is AttrsBatch and a._mask.device == META and a.extra.device == META and a.n == 3
    assert out["data"].x.device == META and out["data"].x.dtype == torch.int64
    assert out["data"].names == names
    assert (
        out["list"][0].device == META
        and out["list"][1][0].device == META
        and out["list"][1][1] == 5
    )
    assert type(out["dd"]) is collections.defaultdict and out["dd"].default_factory is list
    assert out["dd"]["t"].device == META


def test_move_to_device_same_device_returns_the_tensors() -> None:
    """On the same device tensors come back themselves (no copy), inside new containers."""
    x, y = torch.ones(2), torch.zeros(2)
    assert move_to_device(x, CPU) is x
    moved = move_to_device((x, y), CPU)
    assert type(moved) is tuple and moved[0] is x and moved[1] is y
    d = move_to_device(DataBatch(x, []), CPU)
    assert d.x is x
    obj = object()
    assert move_to_device(obj, CPU) is obj and move_to_device("s", CPU) == "s"


def test_batch_size_of() -> None:
    """size(0) of the first tensor, depth-first; 0-dim counts 1; None without tensors."""
    x = torch.zeros(4, 2)
    assert batch_size_of(x) == 4
    assert batch_size_of((torch.zeros(3), x)) == 3
    assert batch_size_of({"ids": ["a", "b"], "x": x}) == 4
    assert batch_size_of([["a"], (1, Pair(torch.zeros(5), "l"))]) == 5
    assert batch_size_of(AttrsBatch(torch.zeros(6), x)) == 6
    assert batch_size_of(DataBatch(torch.zeros(7), [])) == 7
    assert batch_size_of(torch.tensor(1.0)) == 1
    assert (
        batch_size_of([]) is None
        and batch_size_of({"a": 1}) is None
        and batch_size_of("abc") is None
    )


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
        (
            {"rank": 2, "world_size": 2},
            r"rank must be in \[0, world_size\), got rank=2, world_size=2",
        ),
        ({"world_size": 0}, "world_size must be an int >= 1, got 0"),
        ({"base_order": [0, 1]}, "base_order must hold n=4 indices, got 2"),
        ({"seed": 1.5}, r"seed must be an int, got 1\.5"),
    ],
)
def test_sampler_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    """SeededBatchSampler refuses bad arguments with a message naming the field and value."""
    args: dict[str, Any] = {"batch_size": 2, "shuffle": False, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        SeededBatchSampler(4, **args)


def test_bad_skip_epoch_and_tensors() -> None:
    """Negative skip/epoch, mismatched or 0-dim tensors and no tensors are refused clearly."""
    sampler = SeededBatchSampler(4, 2, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="skip must be an int >= 0, got -1"):
        sampler.set_skip(-1)
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got -1"):
        prepare_loader([], seed=0, epoch=-1)
    with pytest.raises(ValueError, match=r"share size\(0\), got tensor 0: 3, tensor 1: 2"):
        TensorLoader(torch.zeros(3), torch.zeros(2), batch_size=1)
    with pytest.raises(
        ValueError, match=r"tensor 1 must be a torch\.Tensor with at least one dimension"
    ):
        TensorLoader(torch.zeros(3), torch.tensor(1.0), batch_size=1)
    with pytest.raises(ValueError, match="needs at least one tensor"):
        TensorLoader(batch_size=1)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\)"):
        TensorLoader(torch.zeros(3), batch_size=1).shard(1, 1)


def test_default_collate_is_the_rebuilt_collate() -> None:
    """A loader without collate_fn keeps torch's default collate after rebuilding."""
    out = prepare_loader(DataLoader(CountingDataset(4), batch_size=2), seed=0, epoch=0)
    assert isinstance(out, DataLoader) and out.collate_fn is default_collate


@pytest.mark.parametrize("n", [1, 64 * 256, 64 * 256 + 1, 64 * 600 + 17])
@pytest.mark.parametrize("skip", [0, 255, 256, 300])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_tensor_loader_yields_the_slices_a_loop_takes(
    n: int, skip: int, drop_last: bool
) -> None:
    """Batch i is x[i*bs:(i+1)*bs] (views), across the loader's chunks of 256 batches."""
    x, y = torch.arange(n * 3.0).reshape(n, 3), torch.arange(n)
    bs = 64
    loader = TensorLoader(x, y, batch_size=bs, shuffle=False, drop_last=drop_last)
    expected = [(x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]) for i in range(len(loader))]
    loader.set_skip(min(skip, len(loader)))
    got = list(loader)
    assert len(got) == len(expected[min(skip, len(loader)) :])
    for (gx, gy), (ex, ey) in zip(got, expected[min(skip, len(loader)) :], strict=True):
        assert torch.equal(gx, ex) and torch.equal(gy, ey)
        assert gx.data_ptr() == ex.data_ptr()  # a view, not a copy
    single = TensorLoader(x, batch_size=bs, shuffle=False, drop_last=drop_last)
    assert [b.shape[0] for b in single] == [e[0].shape[0] for e in expected]
