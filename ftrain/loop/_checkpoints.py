"""Checkpoint reducers: checkpoint policies folded over what the loop reports.

A :class:`CheckpointReducer` is pure: ``update`` takes the policies' states and an
:class:`~ftrain.checkpoint.Event` and returns new states and the save/delete
decisions, each tagged with the index of the policy (and so the folder) it is for.
A writer at the edge carries them out; the reducer never touches a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..checkpoint import CheckpointInfo, Delete, Event, Policy, Save, default_policy

__all__ = ["CheckpointReducer", "checkpoint_event", "checkpoint_reducer"]

Action = tuple[int, Save | Delete]


def _as_tuple(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    return tuple(policies)


@attrs.frozen(slots=True)
class CheckpointReducer:
    """Several checkpoint policies, folded together over the loop's events.

    Example:
        >>> import ftrain as ft
        >>> r = checkpoint_reducer(ft.checkpoint.every(n_train_steps=2))
        >>> states = r.init()
        >>> event = checkpoint_event("train_step", step=2, epoch=0, batch_idx=2, metrics={})
        >>> states, actions = r.update(states, event)
        >>> [(i, type(a).__name__, a.name) for i, a in actions]
        [(0, 'Save', 'epoch=0-step=2.ckpt')]
    """

    policies: tuple[Policy, ...] = attrs.field(converter=_as_tuple)

    def init(self) -> list[Any]:
        """The initial states, one per policy (plain data: they go into checkpoints)."""
        return [p.init() for p in self.policies]

    def may_act(self, states: Sequence[Any], stage: str) -> bool:
        """Whether an event of ``stage`` could give any action (a cheap, safe check)."""
        for policy, state in zip(self.policies, states, strict=True):
            if policy.may_act(state, stage):
                return True
        return False

    def update(self, states: Sequence[Any], event: Event) -> tuple[list[Any], list[Action]]:
        """Fold ``event`` through every policy: (new states, [(policy index, action)])."""
        new_states: list[Any] = []
        actions: list[Action] = []
        for i, (policy, state) in enumerate(zip(self.policies, states, strict=True)):
            state, acts = policy.update(state, event)
            new_states.append(state)
            actions.extend((i, a) for a in acts)
        return new_states, actions

    def recover(
        self,
        saved: Sequence[Any] | None,
        files: Sequence[Sequence[CheckpointInfo]],
        existing: Sequence[Sequence[str]] | None = None,
    ) -> list[Any]:
        """The states after a restart, from the saved states and the files on disk.

        ``files[i]``: the committed checkpoints in policy ``i``'s folder that it may
        adopt; ``existing[i]``: other names there (never deleted, never overwritten).
        """
        saved = list(saved or [])
        return [
            p.recover(
                saved[i] if i < len(saved) else None,
                list(files[i]),
                existing=list(existing[i]) if existing is not None else (),
            )
            for i, p in enumerate(self.policies)
        ]

    def best(self, states: Sequence[Any]) -> tuple[int, str, float | None] | None:
        """(policy index, file name, score) of the first policy that has a best file."""
        for i, (policy, state) in enumerate(zip(self.policies, states, strict=True)):
            name = policy.best(state)
            if name is not None:
                return i, name, policy.best_score(state)
        return None

    def resolve(self, save_on_train_epoch_end: bool) -> CheckpointReducer:
        """Settle each policy's ``save_on_train_epoch_end=None`` (Lightning's rule)."""
        return CheckpointReducer(
            p.resolve(save_on_train_epoch_end=save_on_train_epoch_end) for p in self.policies
        )


def checkpoint_reducer(*policies: Policy, default: bool = False) -> CheckpointReducer:
    """A reducer over ``policies`` (with ``default=True`` and none given, the default policy).

    Raises:
        TypeError: an argument that is not a ``ftrain.checkpoint.Policy``.
    """
    for p in policies:
        if not isinstance(p, Policy):
            raise TypeError(
                f"checkpoint_reducer: expected ftrain.checkpoint policies, got {type(p).__name__}"
            )
    if not policies and default:
        policies = (default_policy(),)
    return CheckpointReducer(policies)


def checkpoint_event(
    stage: str,
    *,
    step: int,
    epoch: int,
    batch_idx: int,
    metrics: Mapping[str, Any],
    elapsed: float = 0.0,
) -> Event:
    """The event a loop reports, with the epoch convention of ``fit``.

    Args:
        stage: one of ``ftrain.checkpoint.STAGES``.
        step: optimizer steps taken.
        epoch: the state's epoch counter; at an epoch boundary (``batch_idx == 0``)
            the counters already point at the next epoch, and the event names the
            epoch of the last trained batch.
        batch_idx: batches done in the current epoch.
        metrics: the values to decide on (``callback_metrics``); ``epoch`` and
            ``step`` are added.
        elapsed: training seconds so far (for time triggers).

    Example:
        >>> checkpoint_event("train_epoch_end", step=8, epoch=2, batch_idx=0, metrics={}).epoch
        1
    """
    if batch_idx == 0 and epoch > 0:
        epoch -= 1
    if isinstance(metrics, dict):
        values: Mapping[str, Any] = {**metrics, "epoch": epoch, "step": step}
    else:
        values = _WithCounters(metrics, epoch, step)
    return Event(
        stage=stage, step=step, epoch=epoch, batch_idx=batch_idx, elapsed=elapsed, metrics=values
    )


class _WithCounters(Mapping[str, Any]):
    """A read-on-demand metrics mapping plus the two counters, without reading it."""

    def __init__(self, values: Mapping[str, Any], epoch: int, step: int) -> None:
        self._values = values
        self._counters = {"epoch": epoch, "step": step}

    def __getitem__(self, key: str) -> Any:
        if key in self._counters:
            return self._counters[key]
        return self._values[key]

    def __iter__(self) -> Any:
        yield from self._values
        yield from (k for k in self._counters if k not in self._values)

    def __len__(self) -> int:
        return len(set(self._values) | set(self._counters))
