"""Checkpoint policies: when to save and what to keep, as pure values.

A policy is a frozen value. The driver folds events through it and carries out the
actions it returns; the policy itself never touches a file, a model or the clock::

    pstate = policy.init()                          # plain dicts/lists/str/numbers
    pstate, actions = policy.update(pstate, event)  # Saves first, then Deletes
    pstate = policy.recover(pstate_or_None, infos)  # after a crash, from the files on disk

As in orbax, a policy makes two separate decisions: *when to save* (a trigger:
every n optimizer steps, every n epochs, every so many seconds, at the end of fit or
on interrupt) and *what to keep* (the k best by a monitored metric, or the k newest).
The keep-set is a function of the metadata of committed files only
(:class:`CheckpointInfo`), so after a kill -9 :meth:`Policy.recover` rebuilds it
from what is on disk and the next update deletes what should have gone.

Design. A :class:`Policy` is a union of parts, each owning the files of one
``kind``:

- ``TopK`` (kind ``"top_k"``; ``"every"`` for :func:`every`): a trigger plus a keep
  rule, Lightning's ``ModelCheckpoint`` without ``save_last``;
- ``Last`` (kind ``"last"``): one file, ``last.ckpt``, rewritten at its trigger
  points, whenever another part of the union saves, at ``fit_end`` and on
  ``interrupt``. It always holds the newest state (Lightning 2.6 rewrites it only
  when a top-k save happens, so with a monitor it tracks the best).

``ModelCheckpoint(...)`` is ``TopK`` plus, with ``save_last=True``, a ``Last``
sharing its trigger; :func:`top_k`, :func:`every`, :func:`last` build single parts
and ``a | b`` (or :func:`union`) joins them. A part only ever deletes files of its
own kind, and names are versioned (``-v1``) against every file the state knows, so
a policy never overwrites or deletes a file it did not create.

The parts and their Lightning semantics are in ``_parts``; the builders
(``ModelCheckpoint``, ``top_k``, ``every``, ``last``) in ``_builders``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._fs import check_url, is_url
from ._events import CheckpointInfo, Delete, Event, Save, bool_field
from ._parts import File, Last, Part, TopK, new_part_state

__all__ = ["Policy", "as_dirpath", "union"]

_STATE_VERSION = 1


def as_dirpath(value: str | os.PathLike[str] | None) -> str | None:
    path = None if value is None else os.fspath(value)
    if is_url(path):
        check_url(path, "dirpath")  # an unknown protocol or a missing package fails here
    return path


def _as_parts(parts: Iterable[Part]) -> tuple[Part, ...]:
    return tuple(parts)


def _check_parts(_: Any, __: Any, parts: tuple[Part, ...]) -> None:
    if not parts or not all(isinstance(p, (TopK, Last)) for p in parts):
        raise ValueError(f"Policy: parts must be a non-empty tuple of TopK/Last, got {parts!r}")
    kinds = [p.kind for p in parts]
    for kind in kinds:
        if kinds.count(kind) > 1:
            raise ValueError(
                f"union: two parts keep files of kind {kind!r}, so neither could tell its "
                "files apart after a restart; give one of them another kind= "
                "(e.g. top_k(..., kind='top_k_val'))"
            )


@attrs.frozen(slots=True)
class Policy:
    """A checkpoint policy: a union of parts, with where and what to write.

    Attributes:
        parts: ``TopK`` and ``Last`` parts, each owning the files of its ``kind``.
        dirpath: the checkpoint folder; None lets the driver choose
            (``<default_root_dir>/checkpoints`` or the logger's version folder).
        save_weights_only: write the model weights only (such files cannot resume).

    Example:
        >>> from ftrain.checkpoint import top_k
        >>> p = top_k(2, monitor="val_loss", every_n_epochs=1, save_on_train_epoch_end=False)
        >>> s = p.init()
        >>> s, acts = p.update(s, Event("validation_end", 10, 0, metrics={"val_loss": 0.5}))
        >>> [a.name for a in acts]
        ['epoch=0-step=10.ckpt']
        >>> p.best(s), p.best_score(s)
        ('epoch=0-step=10.ckpt', 0.5)
    """

    parts: tuple[Part, ...] = attrs.field(converter=_as_parts, validator=_check_parts)
    dirpath: str | None = attrs.field(default=None, converter=as_dirpath)
    save_weights_only: bool = attrs.field(default=False, validator=bool_field)
    verbose: bool = attrs.field(default=False, validator=bool_field)
    # Derived: a part has a step or time trigger, so any optimizer step may act.
    _steps_act: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        triggers = [p.trigger for p in self.parts if p.trigger is not None]
        steps_act = any(
            t.every_n_train_steps > 0 or t.train_time_interval is not None for t in triggers
        )
        object.__setattr__(self, "_steps_act", steps_act)

    def __or__(self, other: Policy) -> Policy:
        return union(self, other)

    @property
    def required_metrics(self) -> tuple[str, ...]:
        """Metrics the parts read: monitors and template names (``epoch``/``step`` excluded)."""
        return tuple(dict.fromkeys(n for p in self.parts for n in p.required_metrics))

    def resolve(self, save_on_train_epoch_end: bool) -> Policy:
        """Fix ``save_on_train_epoch_end`` where it was left None (the driver's call).

        Args:
            save_on_train_epoch_end: True to run epoch triggers at "train_epoch_end",
                False at "validation_end" (Lightning's rule picks it from the trainer).

        Returns:
            The policy with every undecided trigger decided; explicit ones stay.
        """
        parts = tuple(p.resolve(save_on_train_epoch_end) for p in self.parts)
        return attrs.evolve(self, parts=parts)

    def init(self) -> dict[str, Any]:
        """The state of a fresh run: no files, nothing pending."""
        return {
            "version": _STATE_VERSION,
            "foreign": [],
            "parts": [new_part_state(p.kind, [], False, []) for p in self.parts],
        }

    def _parts_state(self, pstate: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        parts = pstate.get("parts") if isinstance(pstate, Mapping) else None
        if not isinstance(parts, list) or [s.get("kind") for s in parts] != [
            p.kind for p in self.parts
        ]:
            raise ValueError(
                "policy state does not match this policy (different parts); "
                "use policy.init() or policy.recover(None, infos)"
            )
        return parts

    def may_act(self, pstate: Mapping[str, Any], stage: str) -> bool:
        """Whether ``update`` could return any action at an event of ``stage``.

        A cheap, conservative check the driver makes before building an event: after
        each optimizer step ("train_step") only step or time triggers, or a save put
        off earlier, can act. Other stages always return True.
        """
        if stage != "train_step" or self._steps_act:
            return True
        return any(part_state.get("pending") for part_state in pstate["parts"])

    def update(
        self, pstate: Mapping[str, Any], event: Event
    ) -> tuple[dict[str, Any], list[Save | Delete]]:
        """Decide what to write and delete at ``event``; pure.

        Args:
            pstate: the state from ``init``, ``update`` or ``recover``; not modified.
            event: where training is.

        Returns:
            The new state and the actions: every Save, then every Delete. Delete
            only after the Saves are committed; a Save's file lists the new state.

        Raises:
            MissingMetricError: at "validation_end", a metric the policy needs now
                was not logged.
            ValueError: an epoch trigger with ``save_on_train_epoch_end`` unresolved.
        """
        states = self._parts_state(pstate)
        foreign = list(pstate["foreign"])
        taken = set(foreign) | {f["name"] for s in states for f in s["files"]}
        new_states = list(states)
        saves: list[Save] = []
        deletes: list[Delete] = []
        # Last parts go after the others so they can follow their saves.
        order = sorted(range(len(self.parts)), key=lambda i: isinstance(self.parts[i], Last))
        for i in order:
            new_states[i], part_saves, part_deletes = self.parts[i].step(
                states[i], event, frozenset(taken), tuple(s.name for s in saves)
            )
            saves += part_saves
            deletes += part_deletes
            taken |= {s.name for s in part_saves}
        saved = {s.name for s in saves}
        actions: list[Save | Delete] = [*saves, *(d for d in deletes if d.name not in saved)]
        return {"version": _STATE_VERSION, "foreign": foreign, "parts": new_states}, actions

    def recover(
        self,
        pstate: Mapping[str, Any] | None,
        infos: Iterable[CheckpointInfo],
        *,
        existing: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Rebuild the state from the files on disk (after a crash, or to resume).

        Each part adopts the files of its kind; the next ``update`` deletes those its
        keep rule rejects (e.g. an eviction the crash interrupted). Other files are
        foreign: never deleted, never overwritten.

        Args:
            pstate: the state stored in the checkpoint being resumed, or None. Only
                its pending saves and warn-once flags are used.
            infos: metadata of every committed checkpoint in ``dirpath``.
            existing: other file names in ``dirpath`` (unreadable checkpoints...).

        Returns:
            A state for ``update``.
        """
        infos = list(infos)
        old: dict[str, Mapping[str, Any]] = {}
        if pstate is not None and isinstance(pstate.get("parts"), list):
            old = {s["kind"]: s for s in pstate["parts"] if isinstance(s, Mapping)}
        kinds = {p.kind for p in self.parts}
        states = []
        for part in self.parts:
            files = [i.to_dict() for i in infos if i.kind == part.kind]
            prev = old.get(part.kind, {})
            states.append(
                new_part_state(
                    part.kind,
                    files,
                    bool(prev.get("pending", False)),
                    list(prev.get("warned", [])),
                )
            )
        own = {i.name for i in infos if i.kind in kinds}
        foreign = {i.name for i in infos if i.kind not in kinds} | (set(existing) - own)
        return {"version": _STATE_VERSION, "foreign": sorted(foreign), "parts": states}

    def _files(self, pstate: Mapping[str, Any]) -> list[list[File]]:
        return [list(s["files"]) for s in self._parts_state(pstate)]

    def _best(self, pstate: Mapping[str, Any]) -> File | None:
        pairs = [
            (part, files)
            for part, files in zip(self.parts, self._files(pstate), strict=True)
            if isinstance(part, TopK)
        ]
        # A part with a monitor says what "best" means; else the first one's newest.
        pairs.sort(key=lambda pair: pair[0].monitor is None)
        return pairs[0][0].best(pairs[0][1]) if pairs else None

    def best(self, pstate: Mapping[str, Any]) -> str | None:
        """The best file of the first monitored top-k part, else the first top-k part's
        newest file; None if there is none."""
        info = self._best(pstate)
        return None if info is None else str(info["name"])

    def best_score(self, pstate: Mapping[str, Any]) -> float | None:
        """The monitored value of :meth:`best`, or None."""
        info = self._best(pstate)
        return None if info is None else info["score"]

    def last(self, pstate: Mapping[str, Any]) -> str | None:
        """The file holding the newest state (the one to resume from), or None."""
        newest: tuple[tuple[int, float, bool], str] | None = None
        for part, files in zip(self.parts, self._files(pstate), strict=True):
            for f in files:
                # At equal step and time prefer last.ckpt: it is written after the others.
                key = (f["step"], f["elapsed"], isinstance(part, Last))
                if newest is None or key > newest[0]:
                    newest = (key, f["name"])
        return None if newest is None else newest[1]


def union(*policies: Policy) -> Policy:
    """Join policies: each part keeps deciding for its own files.

    Args:
        *policies: at least one policy; their parts need distinct kinds.

    Returns:
        A policy with all the parts.

    Raises:
        ValueError: no policy, different non-None dirpaths, different
            ``save_weights_only``, or two parts of the same kind.

    Example:
        >>> from ftrain.checkpoint import last, top_k
        >>> p = top_k(3, monitor="val_loss") | last()
        >>> [part.kind for part in p.parts]
        ['top_k', 'last']
    """
    if not policies:
        raise ValueError("union: give at least one policy")
    if not all(isinstance(p, Policy) for p in policies):
        raise ValueError(f"union: arguments must be Policy values, got {policies!r}")
    dirpaths = sorted({p.dirpath for p in policies if p.dirpath is not None})
    if len(dirpaths) > 1:
        raise ValueError(f"union: policies write to different dirpaths {dirpaths}; use one")
    weights = {p.save_weights_only for p in policies}
    if len(weights) > 1:
        raise ValueError(
            "union: policies disagree on save_weights_only; pass the same value to each"
        )
    return Policy(
        parts=tuple(part for p in policies for part in p.parts),
        dirpath=dirpaths[0] if dirpaths else None,
        save_weights_only=weights.pop(),
        verbose=any(p.verbose for p in policies),
    )
