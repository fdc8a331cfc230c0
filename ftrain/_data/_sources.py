"""What ``fit`` accepts as data, each form with one meaning, checked before the first batch.

- An iterable of batches (a DataLoader, a ``TensorLoader``, ``RandomWindows``, any
  re-iterable object): used as is.
- ``per_epoch(fn)``: ``fn(epoch) -> data``, re-called every
  ``reload_dataloaders_every_n_epochs`` epochs (a bare callable means the same).
- ``per_batch_size(fn)``: ``fn(batch_size) -> data``, for ``auto_scale_batch_size``.
- ``per_validation(fn)``: ``fn(seed) -> data``, called at every validation run with
  ``mix_seed(run_seed, -1, index)``, so every run sees fresh batches and a resumed run
  the same ones as an uninterrupted run.
- For validation, several sets: ``{name: loader}`` or a list of loaders.

A map-style ``Dataset`` where batches are expected is refused with the wrapping to use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch.utils.data import Dataset, IterableDataset

from .._seed import mix_seed

__all__ = [
    "DataFactory",
    "ValidationData",
    "check_eval_data",
    "check_train_data",
    "one_set",
    "per_batch_size",
    "per_epoch",
    "per_validation",
    "refuse_dataset",
    "validation_seed",
]

_KINDS = ("epoch", "batch_size", "validation")
_VALIDATION_STREAM = -1  # as 2**64 - 1: no epoch or step counter takes it


def _check_fn(kind: str, fn: Any) -> Any:
    if not callable(fn) or isinstance(fn, DataFactory):
        raise TypeError(
            f"per_{kind}: fn must be a function {kind} -> data, got {type(fn).__name__}"
        )
    return fn


@attrs.frozen(slots=True, repr=False)
class DataFactory:
    """A data-making function marked with what its argument is: see ``per_epoch``,
    ``per_batch_size`` and ``per_validation``.

    Attributes:
        kind: "epoch", "batch_size" or "validation".
        fn: the function; calling the factory calls it.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(_KINDS))
    fn: Callable[[int], Any]

    def __call__(self, value: int) -> Any:
        return self.fn(value)

    def __repr__(self) -> str:
        return f"per_{self.kind}({self.fn!r})"


def per_epoch(fn: Callable[[int], Any]) -> DataFactory:
    """Data made per epoch: ``fn(epoch) -> data``.

    ``fit`` calls it for the first epoch and again every
    ``reload_dataloaders_every_n_epochs`` epochs (Lightning's reload).

    Raises:
        TypeError: ``fn`` is not callable.

    Example:
        >>> per_epoch(lambda epoch: [epoch]).kind
        'epoch'
    """
    return DataFactory("epoch", _check_fn("epoch", fn))


def per_batch_size(fn: Callable[[int], Any]) -> DataFactory:
    """Data made for a batch size: ``fn(batch_size) -> data``.

    The form ``auto_scale_batch_size`` (and :func:`ftrain.tune.scale_batch_size`) takes:
    the search calls it with each size it tries, and ``fit`` trains on ``fn(found)``.

    Raises:
        TypeError: ``fn`` is not callable.

    Example:
        >>> per_batch_size(lambda size: [torch.zeros(size)])(3)[0].shape
        torch.Size([3])
    """
    return DataFactory("batch_size", _check_fn("batch_size", fn))


def per_validation(fn: Callable[[int], Any]) -> DataFactory:
    """Validation data made afresh for each validation run: ``fn(seed) -> data``.

    Validation run ``index`` (0, 1, ... in order; the sanity check uses index 0's data)
    calls ``fn(validation_seed(run_seed, index))``, so each run evaluates freshly drawn
    batches and a resumed run draws what the uninterrupted run drew. The data may be one
    loader, a list of loaders or ``{name: loader}``.

    Raises:
        TypeError: ``fn`` is not callable.

    Example:
        >>> factory = per_validation(lambda seed: [torch.tensor([seed % 7])])
        >>> factory.kind
        'validation'
    """
    return DataFactory("validation", _check_fn("validation", fn))


def validation_seed(seed: int, index: int) -> int:
    """The seed ``per_validation`` data of validation run ``index`` is made with.

    ``mix_seed(seed, -1, index)``: the -1 keeps it apart from the epoch orders
    (``mix_seed(seed, epoch)``) and the steps' streams.

    Example:
        >>> validation_seed(0, 1) == mix_seed(0, -1, 1) != validation_seed(0, 2)
        True
    """
    return mix_seed(seed, _VALIDATION_STREAM, index)


def _is_map_dataset(data: Any) -> bool:
    return isinstance(data, Dataset) and not isinstance(data, IterableDataset)


def refuse_dataset(owner: str, data: Any) -> None:
    """Raise TypeError naming the wrapping to use when ``data`` is a map-style Dataset."""
    if not _is_map_dataset(data):
        return
    try:
        size = f" of {len(data)} samples"  # type: ignore[arg-type]
    except TypeError:
        size = ""
    hint = (
        f"ftrain.TensorLoader(*{owner}.tensors, batch_size=64)"
        if isinstance(data, torch.utils.data.TensorDataset)
        else f"DataLoader({owner}, batch_size=64, shuffle=True)"
    )
    raise TypeError(
        f"{owner} is a map-style {type(data).__name__}{size}, whose items are single "
        f"samples, not batches; wrap it in a loader that batches it, e.g. {hint}"
    )


def _is_batch_like(item: Any) -> bool:
    return isinstance(item, (torch.Tensor, tuple, list, Mapping, str, bytes))


def _is_loader(item: Any) -> bool:
    return not _is_batch_like(item) and not _is_map_dataset(item) and hasattr(item, "__iter__")


def check_train_data(data: Any, *, scale_batch_size: bool) -> None:
    """Refuse training data ``fit`` cannot use as given, naming what to pass.

    Raises:
        TypeError: a map-style Dataset, or a factory of the wrong kind.
        ValueError: ``auto_scale_batch_size`` without a ``per_batch_size`` factory.
    """
    kind = data.kind if isinstance(data, DataFactory) else None
    if scale_batch_size:
        if kind != "batch_size":
            got = f"per_{kind}(...)" if kind else type(data).__name__
            raise ValueError(
                "fit: auto_scale_batch_size needs train_data=ftrain.per_batch_size(make_data), "
                f"make_data(batch_size) -> loader; got {got}"
            )
        return
    if kind == "batch_size":
        raise ValueError(
            "fit: train_data=per_batch_size(...) is for auto_scale_batch_size; without it, pass "
            "a loader or per_epoch(fn) with fn(epoch) -> loader"
        )
    if kind == "validation":
        raise ValueError(
            "fit: per_validation(...) makes validation data; pass it as val_data, and a loader "
            "or per_epoch(fn) as train_data"
        )
    refuse_dataset("train_data", data)


def check_eval_data(
    owner: str, data: Any, *, factories: bool = False
) -> list[tuple[str, Any]] | None:
    """The named sets of several evaluation loaders, or None for one set.

    A mapping ``{name: loader}`` gives its names; a list or tuple of loaders gives
    ``dataloader_idx_{i}`` (Lightning's names), a one-item list one set.

    Args:
        owner: the argument's name, for messages.
        data: what was passed.
        factories: ``per_epoch``/``per_validation`` factories are accepted (``fit``'s
            ``val_data``); elsewhere (``validate``, ``test``) data must be batches.

    Raises:
        TypeError: a map-style Dataset, a factory where none applies, or a list/mapping
            with an item that is not a loader (a tensor, tuple, list or dict is a batch).
    """
    if isinstance(data, DataFactory) and (data.kind == "batch_size" or not factories):
        where = (
            "auto_scale_batch_size's train_data"
            if data.kind == "batch_size"
            else "fit's val_data (validate and test take a loader: call the function)"
        )
        raise TypeError(f"{owner}: per_{data.kind}(...) is for {where}")
    refuse_dataset(owner, data)
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
        if not items:
            raise TypeError(f"{owner}: the mapping of validation sets is empty")
    elif isinstance(data, (list, tuple)):
        items = [(f"dataloader_idx_{i}", v) for i, v in enumerate(data)]
    else:
        return None
    for name, item in items:
        if not _is_loader(item):
            refuse_dataset(f"{owner}[{name!r}]", item)
            raise TypeError(
                f"{owner}: a {type(data).__name__} holds several evaluation sets, one loader "
                f"each, but item {name!r} is a {type(item).__name__}, which is a batch, not a "
                "loader. Pass one loader (a DataLoader, TensorLoader, RandomWindows or other "
                "iterable of batches), a list or {name: loader} of loaders; a fixed list of "
                "batches b is the loader DataLoader(b, batch_size=None)"
            )
    if isinstance(data, (list, tuple)) and len(items) == 1:
        return None
    return items


def one_set(data: Any) -> Any:
    """The loader of a one-item list or tuple of loaders; any other data itself."""
    return data[0] if isinstance(data, (list, tuple)) and len(data) == 1 else data


class ValidationData:
    """The validation data of each validation run: fixed, per epoch or per run.

    ``runs`` counts the validation runs that drew data (the sanity check does not
    count); a checkpoint stores it so that a resume continues the sequence.
    """

    def __init__(self, data: Any, seed: int, reload_every: int) -> None:
        self.data = data
        self.seed = seed
        self.reload_every = reload_every
        self.runs = 0
        self._current: Any = None
        self._loaded_epoch = -1

    def get(self, epoch: int, *, sanity: bool = False) -> Any:
        """The data of the next validation run (of the sanity check when ``sanity``)."""
        data = self.data
        if isinstance(data, DataFactory) and data.kind == "validation":
            made = data(validation_seed(self.seed, 0 if sanity else self.runs))
            if not sanity:
                self.runs += 1
            check_eval_data("val_data (made by per_validation)", made)
            return one_set(made)
        if not sanity:
            self.runs += 1
        if not callable(data) or hasattr(data, "__iter__"):
            return one_set(data)
        # Counted apart from the training data's reloads (as Lightning does).
        if self._current is None or (
            self.reload_every and epoch - self._loaded_epoch >= self.reload_every
        ):
            self._current = data(epoch)
            self._loaded_epoch = epoch
            check_eval_data("val_data (made per epoch)", self._current)
            self._current = one_set(self._current)
        return self._current
