"""Metric values reduced across the ranks of a process group, at log points only.

Step values flagged ``sync_dist`` are reduced with their own ``reduce_fx``: mean
(sum / world size), max, min, sum; a callable is applied to the stacked values of
all ranks. Epoch values reduce the collector's accumulators before they are
finalized, so a batch-weighted mean adds up numerators and weights over every rank
and the result is the mean over all their batches. Everything travels as float64
on the CPU (over gloo), so no CUDA stream is synchronized by the collective itself.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["reduce_epoch_values", "reduce_step_values"]


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _as_cpu64(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).reshape(())
    return torch.tensor(float(value), dtype=torch.float64)


def _reduce(items: list[tuple[Any, Any]], group: Any, world: int) -> list[Any]:
    """One value per ``(reduce_fx, value)`` item, reduced across ranks (one call per op)."""
    dist = _dist()
    out: list[Any] = [None] * len(items)
    by_op: dict[str, list[int]] = {"sum": [], "max": [], "min": []}
    calls: list[int] = []
    for i, (fx, _) in enumerate(items):
        if callable(fx):
            calls.append(i)
        else:
            by_op["sum" if fx in ("mean", "sum") else fx].append(i)
    for op, idx in by_op.items():
        if not idx:
            continue
        vec = torch.stack([_as_cpu64(items[i][1]) for i in idx])
        dist.all_reduce(vec, op=getattr(dist.ReduceOp, op.upper()), group=group)
        for i, v in zip(idx, vec.tolist(), strict=True):
            out[i] = v / world if items[i][0] == "mean" else v
    if calls:
        vec = torch.stack([_as_cpu64(items[i][1]) for i in calls])
        parts = [torch.empty_like(vec) for _ in range(world)]
        dist.all_gather(parts, vec, group=group)
        stacked = torch.stack(parts)
        for j, i in enumerate(calls):
            out[i] = float(items[i][0](stacked[:, j]))
    return out


def _reduce_accumulators(items: list[tuple[Any, Any]], group: Any, world: int) -> list[Any]:
    """All-reduce epoch accumulators: (sum, weight) of means, extremes, sums; None = none."""
    flat: list[tuple[Any, Any]] = []
    calls: list[int] = []
    for i, (fx, acc) in enumerate(items):
        if fx == "mean":
            total, count = acc if acc is not None else (0.0, 0)
            flat += [("sum", 0.0 if total is None else total), ("sum", count)]
        elif fx == "sum":
            flat.append(("sum", 0.0 if acc is None else acc))
        elif fx == "max":
            flat.append(("max", -float("inf") if acc is None else acc))
        elif fx == "min":
            flat.append(("min", float("inf") if acc is None else acc))
        else:  # a callable (or "callable" for a rank that never logged it)
            calls.append(i)
    reduced = iter(_reduce(flat, group, world))
    out: list[Any] = []
    for fx, _ in items:
        if fx == "mean":
            total, count = next(reduced), next(reduced)
            out.append((total, round(count)) if count else None)
        elif fx in ("sum", "max", "min"):
            value = next(reduced)
            out.append(None if abs(value) == float("inf") else value)
        else:
            out.append(None)
    if calls:
        gathered: list[Any] = [None] * world
        own = [tuple(items[i][1] or ()) for i in calls]
        _dist().all_gather_object(gathered, own, group=group)
        for j, i in enumerate(calls):
            out[i] = tuple(v for rank in gathered for v in rank[j])
    return out


def reduce_step_values(
    values: dict[str, Any], collector: Any, group: Any, world: int
) -> dict[str, Any]:
    """The logged step values with the ``sync_dist`` ones reduced across ranks.

    The collector's latest values get the reduced ones too, so callbacks and
    checkpoint policies see what the loggers see.
    """
    keys = {}
    for name, spec in collector.specs.items():
        key = f"{name}_step" if spec.on_epoch else name
        if spec.sync_dist and not spec.rank_zero_only and key in values:
            keys[key] = spec.reduce_fx
    if not keys:
        return values
    names = sorted(keys)
    reduced = dict(
        zip(names, _reduce([(keys[n], values[n]) for n in names], group, world), strict=True)
    )
    for name, spec in collector.specs.items():
        key = f"{name}_step" if spec.on_epoch else name
        if key in reduced:
            collector.latest[name] = reduced[key]
    return {**values, **reduced}


def reduce_epoch_values(collector: Any, group: Any, world: int) -> None:
    """Reduce the collector's epoch accumulators in place, before it finalizes them.

    Validation and test stages reduce every epoch metric (but ``rank_zero_only`` ones
    and torchmetrics objects, which sync themselves); training reduces ``sync_dist``.
    """
    eval_stage = not collector.training
    local = sorted(
        (name, spec.reduce_fx if isinstance(spec.reduce_fx, str) else "callable")
        for name, spec in collector.specs.items()
        if spec.on_epoch
        and not spec.metric_object
        and not spec.rank_zero_only
        and (spec.sync_dist or eval_stage)
    )
    # Every rank must reduce the same names in the same order: agree on them first
    # (a name some rank never logged contributes nothing from that rank).
    gathered: list[Any] = [None] * world
    _dist().all_gather_object(gathered, local, group=group)
    names = dict(sorted({name: fx for rank in gathered for name, fx in rank}.items()))
    if not names:
        return
    specs = collector.specs
    items = []
    for name, fx_name in names.items():
        spec = specs.get(name)
        acc = collector.acc.get(name) if spec is not None and name in collector.seen else None
        items.append((spec.reduce_fx if spec is not None else fx_name, acc))
    for name, acc in zip(names, _reduce_accumulators(items, group, world), strict=True):
        if name in specs and acc is not None:
            collector.acc[name] = acc
            collector.seen.add(name)
