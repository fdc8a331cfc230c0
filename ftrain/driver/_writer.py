"""The checkpoint writer: carries out a checkpoint reducer's decisions on files."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from .. import _fs
from .._state import TrainState
from ..checkpoint import CheckpointInfo, Delete, Save, clean_temp_files, list_checkpoints
from ..checkpoint._async import AsyncWriter, Job
from ..loop import CheckpointReducer, checkpoint_event
from ._env import DistEnv
from ._rundir import (
    NameTaken,
    RunClaim,
    drop_stale_reservations,
    fresh_policy_state,
    others_alive,
    owned_names,
    release_name,
    reserve_name,
    split_by_lineage,
    with_foreign,
)

__all__ = ["CheckpointWriter", "announce"]


class CheckpointWriter:
    """A reducer's states and folders; writes and deletes the files it decides on."""

    def __init__(self, reducer: CheckpointReducer, dist: DistEnv, background: bool = True) -> None:
        self.reducer = reducer
        self.dist = dist
        # Writes, links and deletes, in order; in a background thread unless
        # async_checkpointing=False (the step then waits for the files).
        self.files = AsyncWriter(background=background)
        self.states = reducer.init()
        self.dirs: list[str] = []
        self.last_saved: str | None = None
        self.resumed_from: str | None = None  # a path the user named is never deleted
        self.created: set[str] = set()  # checkpoint paths this run wrote
        self.claim = RunClaim()  # this run's locks in its checkpoint folders
        self.lineage = [self.claim.run_id]  # this run's id after those it continues

    @property
    def enabled(self) -> bool:
        return bool(self.reducer.policies)

    @property
    def states(self) -> list[Any]:
        """The policies' states (set them whole; ``report`` updates them in place)."""
        return self._states

    @states.setter
    def states(self, states: list[Any]) -> None:
        self._states = states
        self._note_states()

    def _note_states(self) -> None:
        # may_act is a pure function of the states: asked once per change, not per step.
        self._step_may_act = self.reducer.may_act(self._states, "train_step")

    def may_act_after_step(self) -> bool:
        """Whether an optimizer step's event could give an action (step or time triggers,
        a save put off); raises a failed background write's error (the next step's)."""
        self.files.check()
        return self._step_may_act

    def report(
        self,
        stage: str,
        state: TrainState,
        metrics: Callable[[], Mapping[str, Any]],
        elapsed: float,
        extra: Callable[[], dict[str, Any]],
        loggers: Sequence[Any],
        bar: Any,
    ) -> None:
        """Fold one event through the reducer and carry out its actions."""
        self.files.check()  # a failed background write surfaces at the next step
        if stage == "train_step" and not self._step_may_act:
            return  # the per-step fast path: no event, no metric mapping built
        event = checkpoint_event(
            stage,
            step=state.step,
            epoch=state.epoch,
            batch_idx=state.batch_idx,
            elapsed=elapsed,
            metrics=metrics(),
        )
        try:
            for i, policy in enumerate(self.reducer.policies):
                while True:
                    before = self._states[i]
                    self._states[i], actions = policy.update(before, event)
                    try:
                        self._apply(i, actions, state, extra, loggers, bar, owned_names(before))
                        break
                    except NameTaken as taken:  # another run wrote that name meanwhile
                        self._states[i] = with_foreign(before, [taken.name])
        finally:
            self._note_states()

    def _apply(
        self,
        i: int,
        actions: Sequence[Save | Delete],
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        loggers: Sequence[Any],
        bar: Any,
        owned: set[str],
    ) -> None:
        if actions:
            # The write in flight ends first (its error is raised here, before any new
            # reservation); an event without actions never waits for a write.
            self.files.wait()
        # Rank 0 reserves the new names before the decision is shared, so that a name
        # another run took is re-decided (NameTaken) before any rank acts on it.
        markers = self._reserve(i, actions, owned)
        try:
            # Under FSDP every rank writes its shard, so every rank carries out rank 0's
            # decision; otherwise rank 0 alone writes and no collective is needed.
            actions = self.dist.share_actions(list(actions))
        except BaseException:
            _release(markers)
            raise
        if not actions:
            return
        saves = [a for a in actions if isinstance(a, Save)]
        deletes = [a for a in actions if isinstance(a, Delete)]
        # One writer job: its links and deletes run only once its saves have committed.
        try:
            with self.files.job() as job:
                for marker in markers:  # released once the writes are over, or dropped
                    job.hold(partial(release_name, marker))
                if saves and self.dist.is_main:
                    # A resume keeps the logged rows below the checkpoint's step and
                    # replays the rest: all logged so far is on disk before the commit.
                    for lg in loggers:
                        lg.flush()
                for action in saves:
                    self._save(i, action, state, extra, bar, owned, job)
                for deletion in deletes:
                    path = _fs.join(self.dirs[i], deletion.name)
                    if path != self.resumed_from:
                        self.created.discard(path)  # its name may be another run's later
                        job.then(partial(self.dist.remove_checkpoint, path))
        except FileExistsError:
            # Runs reserve new names (see _reserve): only a program that does not (an
            # older ftrain, a copy) can take one meanwhile. A background write
            # cannot re-decide the name: its payload is taken; it stops the run.
            if self.files.background or job.failed_path is None:
                raise
            raise NameTaken(os.path.basename(job.failed_path)) from None

    def _reserve(self, i: int, actions: Sequence[Save | Delete], owned: set[str]) -> list[Any]:
        """Rank 0: reserve the new names among ``actions``, for their commit that may
        come later in the background (NameTaken: none is kept).

        Another run wanting one of them meanwhile gets NameTaken and re-decides.
        """
        markers: list[Any] = []
        if not self.dist.is_main:
            return markers
        try:
            for action in actions:
                path = _fs.join(self.dirs[i], action.name)
                if isinstance(action, Save) and not self._mine(action.name, path, owned):
                    markers.append(reserve_name(path, self.claim.run_id))
        except BaseException:
            _release(markers)
            raise
        return markers

    def _mine(self, name: str, path: str, owned: set[str]) -> bool:
        # A name this run does not own yet is a new file: never replace one on disk.
        return name in owned or path in self.created

    def _save(
        self,
        i: int,
        action: Save,
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        bar: Any,
        owned: set[str],
        job: Job,
    ) -> None:
        policy = self.reducer.policies[i]
        path = _fs.join(self.dirs[i], action.name)
        link = None if action.link_to is None else _fs.join(self.dirs[i], action.link_to)
        mine = self._mine(action.name, path, owned)
        self.dist.save_checkpoint(
            state,
            path,
            partial(_with_info, extra, action.info),
            weights_only=policy.save_weights_only,
            overwrite=mine,
            job=job,
            link_to=link,
        )
        self.created.add(path)
        self.last_saved = path
        if policy.verbose and self.dist.is_main:
            info = action.info
            score = "" if info.score is None else f" (score {info.score:.6g})"
            announce(bar, f"Epoch {info.epoch}, global step {info.step}: saving {path}{score}")

    def start_fresh(self, *, warn: bool) -> None:
        """The states of a run that does not resume (files already in a folder are foreign)."""
        self.states = [
            fresh_policy_state(p, d, warn=warn)
            for p, d in zip(self.reducer.policies, self.dirs, strict=True)
        ]

    def recover(self, saved: Sequence[Any] | None) -> None:
        """Rebuild the reducer's states from the files on disk (after a crash they decide)."""
        files: list[list[CheckpointInfo]] = []
        existing: list[list[str]] = []
        for d in self.dirs:
            infos: list[Any] = []
            others: list[str] = []
            if _fs.isdir(d):
                # A temp file of a run still writing into this folder is not debris.
                if self.dist.is_main and not others_alive(d, self.claim.run_id):
                    clean_temp_files(d)
                if self.dist.is_main:
                    drop_stale_reservations(d)  # of runs killed before their commit
                infos, others = split_by_lineage(d, list_checkpoints(d), self.lineage[:-1])
            files.append(infos)
            existing.append(others)
        self.states = self.reducer.recover(saved, files, existing)

    def best_and_last(self) -> tuple[str | None, float | None, str | None]:
        """The first policy's best file and score, and the newest file written."""
        best = self.reducer.best(self.states)
        if best is None:
            return None, None, self.last_saved
        i, name, score = best
        return _fs.join(self.dirs[i], name), score, self.last_saved


def _release(markers: Sequence[Any]) -> None:
    for marker in markers:
        release_name(marker)


def _with_info(extra: Callable[[], dict[str, Any]], info: Any) -> dict[str, Any]:
    return {**extra(), "checkpoint_info": info.to_dict()}


def announce(bar: Any, message: str) -> None:
    """Show a message (summary, interrupt, profile): above the bars, or printed without them."""
    if bar.enabled:
        bar.print(message)
    else:
        print(message, flush=True)
