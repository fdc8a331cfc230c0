"""What differs between ranks, saved and restored per rank: partial gradients, epoch sums.

Under DDP, batches of a window before its last one run inside ``no_sync``: each rank
sums its own gradients and nothing is reduced until the window's last batch. A
checkpoint taken inside a window (a validation in the middle of it, an interrupt)
therefore needs every rank's partial gradients, not rank 0's: they are gathered to
rank 0 as ``grads_per_rank`` (one entry per rank) and each rank takes its own back
on resume. Between windows there are none and nothing is gathered.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from .._batch import map_tensors
from .._checkpointing import partial_grads

__all__ = ["gather_partial_grads", "own_partial_grads", "own_train_metrics", "to_cpu"]


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor of its nesting detached and on the CPU (to gather it)."""
    return map_tensors(lambda t: t.detach().cpu(), value)


def gather_partial_grads(state: Any, gather: Callable[[Any], list[Any] | None]) -> list[Any] | None:
    """Every rank's partial gradients on rank 0 (None elsewhere, or between windows).

    Args:
        state: this rank's state.
        gather: a collective that takes this rank's object and returns the list of all
            ranks' objects on rank 0 (None on the others). Called on every rank, or on
            none: whether gradients are pending is the same on every rank.
    """
    grads = partial_grads(state)
    if grads is None:
        return None
    return gather(to_cpu(grads))


def own_partial_grads(payload: Mapping[str, Any], rank: int, world_size: int) -> Mapping[str, Any]:
    """The payload with ``grads`` replaced by this rank's entry of ``grads_per_rank``.

    A checkpoint from another number of ranks keeps rank 0's gradients, with a warning:
    the resumed window is then not exact.
    """
    per_rank = payload.get("grads_per_rank")
    if per_rank is None:
        return payload
    if len(per_rank) != world_size:
        warnings.warn(
            f"the checkpoint was saved inside an accumulation window by {len(per_rank)} ranks; "
            f"resumed on {world_size}, every rank starts the window from rank 0's gradients",
            RuntimeWarning,
            stacklevel=3,
        )
        return payload
    return {**payload, "grads": per_rank[rank]}


def own_train_metrics(payload: Mapping[str, Any], rank: int, world_size: int) -> Any:
    """This rank's partial training epoch reductions saved in ``payload``, or None.

    Checkpoints written at events every rank reaches (a validation's end, an interrupt,
    an epoch's end) hold every rank's (``train_metrics_per_rank``); from the same
    number of ranks each takes its own. Otherwise rank 0 takes the saved ones
    (``loop.train_metrics``, rank 0's) and the others none: loaded on every rank they
    would count twice when ``sync_dist`` reduces them.
    """
    per_rank = payload.get("train_metrics_per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        return per_rank[rank]
    if rank == 0:
        return (payload.get("loop") or {}).get("train_metrics")
    return None
