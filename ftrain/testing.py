"""Helpers for testing your own steps: ``check_step`` and tiny fixtures.

A step is a function, so a unit test needs no trainer, no data loader and no
files: build a small state, call the step, look at the result. ``check_step``
runs the checks every step should pass (reproducible in isolation, finite
metrics, parameters trained or frozen as intended, inputs left alone), and the
fixtures give a model, a state and batches that run in milliseconds on a CPU.

Example:
    >>> import ftrain as ft
    >>> from ftrain.testing import check_step, classification_loss, tiny_batches, tiny_state
    >>> metrics = check_step(ft.train_step(classification_loss), tiny_state(), tiny_batches(1)[0])
    >>> sorted(metrics)
    ['acc', 'loss']
"""

from __future__ import annotations

import copy
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ._state import TrainState
from ._step import Metrics

__all__ = [
    "check_step",
    "classification_loss",
    "tiny_batches",
    "tiny_model",
    "tiny_state",
]


def tiny_model(
    in_features: int = 4, hidden: int = 8, out: int = 2, dropout: float = 0.0, seed: int = 0
) -> nn.Sequential:
    """A two-layer MLP whose initial weights depend only on ``seed``.

    The layers are named ``fc1``, ``act``, ``drop`` and ``fc2`` whatever the
    arguments, so parameter names (``fc1.weight``, ...) are stable. Building it
    leaves torch's global generator untouched.

    Args:
        in_features: input width.
        hidden: hidden width.
        out: output width (classes).
        dropout: dropout probability after the activation.
        seed: the initialisation seed.

    Returns:
        A module in training mode.

    Example:
        >>> [name for name, _ in tiny_model().named_parameters()]
        ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(in_features, hidden),
                act=nn.Tanh(),
                drop=nn.Dropout(dropout),
                fc2=nn.Linear(hidden, out),
            )
        )


def tiny_state(
    optimizer: str = "sgd",
    lr: float = 0.1,
    *,
    seed: int = 0,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    **model_kwargs: Any,
) -> TrainState:
    """A ``TrainState`` over :func:`tiny_model` with an SGD or Adam optimizer.

    Args:
        optimizer: "sgd" (momentum 0.9) or "adam".
        lr: the learning rate.
        seed: the model's initialisation seed and the run seed.
        scheduler: an optional ``optimizer -> scheduler`` factory (a scheduler or a
            ``SchedulerConfig``).
        **model_kwargs: passed to :func:`tiny_model`.

    Returns:
        A fresh state with all counters at zero.

    Raises:
        ValueError: an unknown optimizer name.

    Example:
        >>> type(tiny_state("adam").optimizer).__name__
        'Adam'
    """
    model = tiny_model(seed=seed, **model_kwargs)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise ValueError(f"tiny_state: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    sched = scheduler(opt) if scheduler is not None else None
    return TrainState.create(model, opt, sched, seed=seed)


def tiny_batches(
    n: int, batch_size: int = 8, in_features: int = 4, classes: int = 2, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` classification batches ``(x, y)`` that depend only on ``seed``.

    ``x`` is float32 of shape ``(batch_size, in_features)``; ``y`` holds int64
    labels in ``[0, classes)`` given by a fixed linear rule, so a model can learn.

    Example:
        >>> x, y = tiny_batches(3, batch_size=5)[0]
        >>> tuple(x.shape), y.dtype
        ((5, 4), torch.int64)
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(in_features, classes, generator=g)
    batches = []
    for _ in range(n):
        x = torch.randn(batch_size, in_features, generator=g)
        batches.append((x, (x @ w).argmax(dim=-1)))
    return batches


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, Metrics]:
    """Cross-entropy loss of ``model`` on ``(x, y)``, with accuracy as a metric.

    Example:
        >>> loss, metrics = classification_loss(tiny_model(), tiny_batches(1)[0])
        >>> loss.ndim, sorted(metrics)
        (0, ['acc'])
    """
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    acc = (logits.argmax(dim=-1) == y).float().mean()
    return loss, {"acc": acc}


def check_step(
    step: Callable[[TrainState, Any], tuple[TrainState, Metrics]],
    state: TrainState,
    batch: Any,
    *,
    expect_change: bool = True,
    frozen: Iterable[str] = (),
    atol: float = 0.0,
) -> Metrics:
    """Check that ``step`` behaves as a step should on ``(state, batch)``.

    The step runs twice, each time on ``state.clone()``, with calls to torch's,
    Python's and numpy's global generators in between. The checks:

    * both runs give the same parameters, buffers and metrics (bit-identical for
      ``atol=0``): the step's randomness derives from the state alone;
    * every metric is finite;
    * with ``expect_change``, every trainable parameter outside ``frozen``
      changed; without it, none did;
    * parameters whose names start with a prefix in ``frozen`` did not change
      (names are ``model.named_parameters()``, prefixed ``"key."`` for a
      mapping of models);
    * ``batch`` was not modified;
    * ``state`` itself was not touched (parameters, gradients, buffers,
      optimizer state): the step worked on the state it was given.

    Args:
        step: the step under test.
        state: the state to start from; it is only cloned, never stepped.
        batch: one batch.
        expect_change: whether the step should update the parameters (False for
            an accumulating batch or an evaluation step).
        frozen: parameter-name prefixes that must not change.
        atol: tolerance between the two runs (0: bit-identical).

    Returns:
        The metrics of the first run.

    Raises:
        AssertionError: a failed check, saying which and where.
        ValueError: a prefix in ``frozen`` that matches no parameter.

    Example:
        >>> import ftrain as ft
        >>> step = ft.train_step(classification_loss)
        >>> check_step(step, tiny_state(), tiny_batches(1)[0], frozen=("fc1.",))
        Traceback (most recent call last):
        ...
        AssertionError: check_step: frozen parameters changed: fc1.weight, fc1.bias
    """
    frozen = tuple(frozen)
    trainable = {name: p.requires_grad for name, p in _named_params(state)}
    _check_prefixes(frozen, trainable)
    original = _snapshot(state)
    batch_copy = copy.deepcopy(batch)

    first, metrics = _run(step, state.clone(), batch, "first")
    # Whatever ran before a step must not change it: disturb every global generator.
    torch.rand(3)
    random.random()
    np.random.random()
    second, metrics_again = _run(step, state.clone(), batch, "second")

    _check_inputs_untouched(batch_copy, batch, original, state)
    _check_reproducible((first, metrics), (second, metrics_again), atol)
    bad = [name for name, value in metrics.items() if not _finite(value)]
    if bad:
        shown = ", ".join(f"{name}={metrics[name]!r}" for name in bad)
        raise AssertionError(f"check_step: non-finite metrics: {shown}")
    before = {name: original[name] for name in trainable}
    after = {name: p.detach() for name, p in _named_params(first)}
    _check_updates(before, after, trainable, frozen, expect_change)
    return metrics


def _check_prefixes(frozen: tuple[str, ...], trainable: Mapping[str, bool]) -> None:
    for prefix in frozen:
        if not any(name.startswith(prefix) for name in trainable):
            raise ValueError(
                f"check_step: frozen prefix {prefix!r} matches no parameter; "
                f"parameters: {', '.join(trainable)}"
            )


def _check_inputs_untouched(batch_copy: Any, batch: Any, original: Any, state: TrainState) -> None:
    difference = _tree_difference(batch_copy, batch, "batch", 0.0)
    if difference:
        raise AssertionError(f"check_step: the step modified its input batch: {difference}")
    difference = _tree_difference(original, _snapshot(state), "state", 0.0)
    if difference:
        raise AssertionError(
            "check_step: the state passed in changed although the step ran on clones; "
            f"does the step train something other than state.model? {difference}"
        )


def _check_reproducible(
    first: tuple[TrainState, Metrics], second: tuple[TrainState, Metrics], atol: float
) -> None:
    difference = _tree_difference(_snapshot(first[0]), _snapshot(second[0]), "state", atol)
    if difference:
        raise AssertionError(
            f"check_step: two runs from the same state differ in {difference}; the step "
            "uses randomness not derived from the state (seed, micro_step, rank), or "
            "state outside TrainState"
        )
    difference = _tree_difference(first[1], second[1], "metrics", atol)
    if difference:
        raise AssertionError(f"check_step: two runs from the same state differ in {difference}")


def _check_updates(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    trainable: Mapping[str, bool],
    frozen: tuple[str, ...],
    expect_change: bool,
) -> None:
    if set(after) != set(before):
        raise AssertionError(
            "check_step: the step changed the set of parameters: "
            f"{sorted(set(before) ^ set(after))}"
        )
    is_frozen = [name for name in before if name.startswith(frozen)] if frozen else []
    moved = [name for name in is_frozen if not _same(before[name], after[name])]
    if moved:
        raise AssertionError(f"check_step: frozen parameters changed: {', '.join(moved)}")
    free = [name for name in before if name not in is_frozen and trainable[name]]
    if expect_change:
        still = [name for name in free if _same(before[name], after[name])]
        if still:
            raise AssertionError(
                f"check_step: parameters did not change (expect_change=True): {', '.join(still)}"
            )
    else:
        moved = [name for name in free if not _same(before[name], after[name])]
        if moved:
            raise AssertionError(
                f"check_step: parameters changed (expect_change=False): {', '.join(moved)}"
            )


def _run(step: Any, state: TrainState, batch: Any, which: str) -> tuple[TrainState, Metrics]:
    out = step(state, batch)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], TrainState)):
        raise AssertionError(
            f"check_step: the step must return (TrainState, metrics), got {type(out).__name__} "
            f"on the {which} run"
        )
    new, metrics = out
    if not isinstance(metrics, Mapping):
        raise AssertionError(
            f"check_step: the step's metrics must be a mapping, got {type(metrics).__name__}"
        )
    return new, dict(metrics)


def _named_params(state: TrainState) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(state.model, nn.Module):
        yield from state.model.named_parameters()
        return
    for key, module in state.model.items():
        for name, p in module.named_parameters():
            yield f"{key}.{name}", p


def _snapshot(state: TrainState) -> dict[str, Any]:
    """Detached copies of everything a step may update in place."""
    models = {"": state.model} if isinstance(state.model, nn.Module) else dict(state.model)
    snap: dict[str, Any] = {}
    for key, module in models.items():
        prefix = f"{key}." if key else ""
        for name, p in module.named_parameters():
            snap[f"{prefix}{name}"] = p.detach().clone()
            if p.grad is not None:
                snap[f"{prefix}{name}.grad"] = p.grad.detach().clone()
        for name, b in module.named_buffers():
            snap[f"{prefix}{name}"] = b.detach().clone()
    for index, opt in enumerate(state.optimizers):
        snap[f"optimizer[{index}]"] = copy.deepcopy(opt.state_dict()["state"])
    return snap


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and bool(torch.equal(a.detach(), b.detach()))


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            return bool(torch.isfinite(value).all())
        return True
    if isinstance(value, (float, int)):
        return math.isfinite(value)
    return True


def _tree_difference(a: Any, b: Any, path: str, atol: float) -> str:
    """The first place where ``a`` and ``b`` differ, or ``""``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{path}: {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if atol == 0.0 or not a.is_floating_point():
            equal = torch.equal(a, b) or (
                a.is_floating_point()
                and torch.equal(a.isnan(), b.isnan())
                and torch.equal(a.nan_to_num(), b.nan_to_num())
            )
        else:
            equal = torch.allclose(a, b, rtol=0.0, atol=atol, equal_nan=True)
        if not equal:
            if a.is_floating_point() and a.numel():
                gap = (a.double() - b.double()).abs().nan_to_num(math.inf).max().item()
                return f"{path} (max abs difference {gap:.3g})"
            return path
        return ""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            found = _tree_difference(a[key], b[key], f"{path}[{key!r}]", atol)
            if found:
                return found
        return ""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return f"{path}: {type(a).__name__} of {len(a)} vs {type(b).__name__} of {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _tree_difference(x, y, f"{path}[{index}]", atol)
            if found:
                return found
        return ""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return ""
    try:
        equal = bool(a == b)
    except Exception:  # objects whose == is not a bool (arrays): compare as arrays
        equal = bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=False))
    return "" if equal else f"{path}: {a!r} vs {b!r}"
