"""Metric values reduced across the ranks of a process group, at log points only.

Step values flagged ``sync_dist`` are reduced with their own ``reduce_fx``: mean
(sum / world size), max, min, sum; a callable is applied to the stacked values of
all ranks. Epoch values reduce the collector's accumulators before they are
finalized, so a batch-weighted mean adds up numerators and weights over every rank
and the result is the mean over all their batches. Everything travels as float64
on the CPU (over gloo), so no CUDA stream is synchronized by the collective itself;
a value logged with ``sync_dist_group`` is reduced over that group (which must
therefore take CPU tensors: a gloo group), by its members only.
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


def _member(group: Any) -> bool:
    dist = _dist()
    return group is not dist.GroupMember.NON_GROUP_MEMBER and dist.get_rank(group) >= 0


def _by_group(
    pairs: list[tuple[str, Any]], group: Any, world: int
) -> list[tuple[Any, int, list[str]]]:
    """Names split by their ``sync_dist_group`` (None: ``group``), with each group's size.

    Groups come in the order of their first name, so every member calls the same
    collectives in the same order; groups this rank is not in are left out.
    """
    split: dict[int, tuple[Any, list[str]]] = {}
    for name, own in sorted(pairs, key=lambda p: p[0]):
        chosen = group if own is None else own
        split.setdefault(id(chosen), (chosen, []))[1].append(name)
    out = []
    for chosen, names in split.values():
        if chosen is group:
            out.append((group, world, names))
        elif _member(chosen):
            out.append((chosen, _dist().get_world_size(chosen), names))
    return out


def reduce_step_values(
    values: dict[str, Any], collector: Any, group: Any, world: int
) -> dict[str, Any]:
    """The logged step values with the ``sync_dist`` ones reduced across ranks.

    Each value is reduced over its ``sync_dist_group`` (default: every rank). The
    collector's latest values get the reduced ones too, so callbacks and checkpoint
    policies see what the loggers see.
    """
    keys: dict[str, Any] = {}
    groups: list[tuple[str, Any]] = []
    for name, spec in collector.specs.items():
        key = f"{name}_step" if spec.on_epoch else name
        if spec.sync_dist and not spec.rank_zero_only and key in values:
            keys[key] = spec.reduce_fx
            groups.append((key, spec.sync_dist_group))
    if not keys:
        return values
    reduced: dict[str, Any] = {}
    for chosen, size, names in _by_group(groups, group, world):
        got = _reduce([(keys[n], values[n]) for n in names], chosen, size)
        reduced.update(zip(names, got, strict=True))
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
    pairs = [(n, specs[n].sync_dist_group if n in specs else None) for n in names]
    for chosen, size, members in _by_group(pairs, group, world):
        items = []
        for name in members:
            spec = specs.get(name)
            acc = collector.acc.get(name) if spec is not None and name in collector.seen else None
            items.append((spec.reduce_fx if spec is not None else names[name], acc))
        for name, acc in zip(members, _reduce_accumulators(items, chosen, size), strict=True):
            if name in specs and acc is not None:
                collector.acc[name] = acc
                collector.seen.add(name)
