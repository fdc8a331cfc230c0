"""The parts of a checkpoint policy: a trigger (when to save) and a keep rule.

Lightning's semantics, and where ftrain differs on purpose:

- step trigger after an optimizer step when ``step % n == 0``; epoch trigger at
  ``train_epoch_end`` (``save_on_train_epoch_end``) or ``validation_end`` when
  ``(epoch + 1) % n == 0``; time trigger once ``train_time_interval`` seconds of
  training passed since the part's newest save. The driver resolves
  ``save_on_train_epoch_end=None`` with :meth:`Policy.resolve`.
- A part never saves twice at the same global step, nor at step 0.
- Top-k: k=0 saves nothing, -1 keeps all, else a save needs fewer than k ranked
  files or a strictly better score than the k-th (ties keep the older). A NaN score
  is never saved nor ranked (warned once). With ``monitor=None`` files are ranked
  by recency: k=1 keeps the newest only. Every part also keeps its newest file, so
  the newest state it saved is never deleted by its own rule.
- A monitored or templated metric that is not logged: at ``validation_end``, and at
  ``train_epoch_end`` when the part's epoch trigger saves there, a
  :class:`MissingMetricError` (such a metric will never be logged there); anywhere
  else the save is put off (warned once) and made at the next event where the
  metric is logged.
- ``save_on_exception``: the part also saves at ``interrupt`` and ``fit_end``
  (unless it saved at that step already). This save is not ranked; it is kept while
  it is the part's newest file. It is named by the template when every metric the
  template names is logged and not NaN, else ``epoch=E-step=S``.
- :func:`default_policy` is Lightning's default plus ``save_on_exception``, so the
  newest state is on disk after Ctrl+C and after the last step.
"""

from __future__ import annotations

import datetime
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._warn import user_stacklevel
from ._events import (
    CheckpointInfo,
    Delete,
    Event,
    Save,
    bool_field,
    int_at_least,
    is_number,
)
from ._template import (
    DEFAULT_TEMPLATE,
    MissingMetricError,
    format_name,
    validate_template,
    versioned,
)

__all__ = ["EXT", "File", "Last", "Part", "TopK", "Trigger", "new_part_state"]

EXT = ".ckpt"
_ALWAYS_LOGGED = ("epoch", "step")


def _seconds(value: float | datetime.timedelta | None) -> float | None:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


@attrs.frozen(slots=True)
class Trigger:
    """When a part saves; at most one of the three intervals is non-zero."""

    every_n_train_steps: int = attrs.field(default=0, validator=int_at_least(0))
    every_n_epochs: int = attrs.field(default=0, validator=int_at_least(0))
    train_time_interval: float | None = attrs.field(default=None, converter=_seconds)
    save_on_train_epoch_end: bool | None = attrs.field(default=None)

    @train_time_interval.validator
    def _check_time(self, _: Any, value: float | None) -> None:
        if value is not None and (not is_number(value) or not value > 0):
            raise ValueError(
                "train_time_interval must be a positive number of seconds or a "
                f"datetime.timedelta, got {value!r}"
            )

    @save_on_train_epoch_end.validator
    def _check_sote(self, _: Any, value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"save_on_train_epoch_end must be None or a bool, got {value!r}")

    def __attrs_post_init__(self) -> None:
        active = (
            self.every_n_train_steps > 0,
            self.every_n_epochs > 0,
            self.train_time_interval is not None,
        )
        if sum(active) > 1:
            raise ValueError(
                f"every_n_train_steps={self.every_n_train_steps}, every_n_epochs="
                f"{self.every_n_epochs} and train_time_interval={self.train_time_interval} "
                "are mutually exclusive; set at most one"
            )

    @classmethod
    def of(
        cls,
        every_n_train_steps: int | None,
        every_n_epochs: int | None,
        train_time_interval: float | datetime.timedelta | None,
        save_on_train_epoch_end: bool | None,
    ) -> Trigger:
        """Lightning's defaults: no trigger given means every epoch."""
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1
        return cls(
            every_n_train_steps=0 if every_n_train_steps is None else every_n_train_steps,
            every_n_epochs=0 if every_n_epochs is None else every_n_epochs,
            train_time_interval=train_time_interval,  # type: ignore[arg-type]
            save_on_train_epoch_end=save_on_train_epoch_end,
        )

    def fires(self, event: Event, since: float) -> bool:
        """Whether this trigger asks for a save at ``event``; ``since``: elapsed at the last save."""
        if event.stage == "train_step":
            if self.every_n_train_steps > 0 and event.step % self.every_n_train_steps == 0:
                return True
            interval = self.train_time_interval
            return interval is not None and event.elapsed - since >= interval
        if self.every_n_epochs > 0 and event.stage in ("train_epoch_end", "validation_end"):
            if self.save_on_train_epoch_end is None:
                raise ValueError(
                    "save_on_train_epoch_end is None: the driver must call "
                    "policy.resolve(save_on_train_epoch_end=<bool>) before folding events"
                )
            wanted = "train_epoch_end" if self.save_on_train_epoch_end else "validation_end"
            return event.stage == wanted and (event.epoch + 1) % self.every_n_epochs == 0
        return False


# --------------------------------------------------------------------------- parts


# Parts read their files as the plain dicts of the state (CheckpointInfo.to_dict()),
# so an update with nothing to do costs a few dict lookups.
File = Mapping[str, Any]


def _recency(f: File) -> tuple[int, float, str]:
    return (f["step"], f["elapsed"], f["name"])


def _newest(files: list[File]) -> File | None:
    return max(files, key=_recency, default=None)


def _warn_once(warned: list[str], key: str, message: str) -> None:
    if key not in warned:
        warned.append(key)
        warnings.warn(message, UserWarning, stacklevel=user_stacklevel())


def new_part_state(kind: str, files: Iterable[File], pending: bool, warned: list[str]) -> dict:
    return {
        "kind": kind,
        "files": sorted(files, key=_recency),
        "pending": pending,
        "warned": sorted(warned),
    }


_Step = tuple[dict[str, Any], list[Save], list[Delete]]


@attrs.frozen(slots=True)
class TopK:
    """Part keeping the ``save_top_k`` best checkpoints (newest if ``monitor`` is None)."""

    save_top_k: int = attrs.field(default=1, validator=int_at_least(-1))
    monitor: str | None = attrs.field(default=None)
    mode: str = attrs.field(default="min")
    trigger: Trigger = attrs.field(factory=lambda: Trigger.of(None, None, None, None))
    filename: str | None = attrs.field(default=None)
    auto_insert_metric_name: bool = attrs.field(default=True, validator=bool_field)
    enable_version_counter: bool = attrs.field(default=True, validator=bool_field)
    save_on_exception: bool = attrs.field(default=False, validator=bool_field)
    kind: str = attrs.field(default="top_k")

    @monitor.validator
    def _check_monitor(self, _: Any, value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"monitor must be None or a metric name, got {value!r}")

    @mode.validator
    def _check_mode(self, _: Any, value: str) -> None:
        if value not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {value!r}")

    @filename.validator
    def _check_filename(self, _: Any, value: str | None) -> None:
        try:
            validate_template(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"filename: {err}") from None

    @kind.validator
    def _check_kind(self, _: Any, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"kind must be a non-empty str, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise ValueError(
                f"save_top_k={self.save_top_k} needs a monitor to rank checkpoints; "
                "with monitor=None, save_top_k must be -1, 0 or 1"
            )

    @property
    def required_metrics(self) -> tuple[str, ...]:
        names = [] if self.monitor is None else [self.monitor]
        names += [n for n in validate_template(self.filename) if n not in _ALWAYS_LOGGED]
        return tuple(dict.fromkeys(names))

    def resolve(self, save_on_train_epoch_end: bool) -> TopK:
        if self.trigger.save_on_train_epoch_end is not None:
            return self
        trigger = attrs.evolve(self.trigger, save_on_train_epoch_end=save_on_train_epoch_end)
        return attrs.evolve(self, trigger=trigger)

    def _goodness(self, f: File) -> tuple[float, int, float, str]:
        score = f["score"] if f["score"] is not None else math.inf
        # Best first; among equal scores the older file ranks higher.
        return (score if self.mode == "min" else -score, *_recency(f))

    def _ranked(self, files: list[File]) -> list[File]:
        return sorted((f for f in files if f["score"] is not None), key=self._goodness)

    def _keep(self, files: list[File]) -> set[str]:
        newest = _newest(files)
        if newest is None:
            return set()
        if self.monitor is None:
            ordered = sorted(files, key=_recency, reverse=True)
        else:
            ordered = self._ranked(files)
        kept = ordered if self.save_top_k == -1 else ordered[: self.save_top_k]
        return {newest["name"]} | {f["name"] for f in kept}

    def best(self, files: list[File]) -> File | None:
        if self.monitor is None:
            return _newest(files)
        ranked = self._ranked(files)
        return ranked[0] if ranked else None

    def _name(self, template: str | None, event: Event, files: list[File], taken: frozenset) -> str:
        # Logged values win over the counters, as in Lightning.
        candidates = {"epoch": event.epoch, "step": event.step, **event.metrics}
        base = format_name(
            template, candidates, auto_insert_metric_name=self.auto_insert_metric_name
        )
        if not self.enable_version_counter and f"{base}{EXT}" in {f["name"] for f in files}:
            return f"{base}{EXT}"  # overwrite our own file of the same name
        return versioned(base, taken, EXT)

    def _ranked_save(
        self, event: Event, files: list[File], warned: list[str], strict: bool
    ) -> tuple[float | None, bool, bool]:
        """Returns (score, save?, still pending?) for a due save; ``strict``: a missing
        metric is an error (it cannot appear later at this kind of point)."""
        missing = [n for n in self.required_metrics if n not in event.metrics]
        if missing:
            available = tuple(sorted(event.metrics))
            if strict:
                raise MissingMetricError(
                    f"checkpoint policy {self.kind!r} needs {missing[0]!r} (monitor="
                    f"{self.monitor!r}, filename={self.filename!r}), which was not logged by "
                    f"{event.stage.replace('_', ' ')}; logged metrics: {list(available)}",
                    missing=missing[0],
                    available=available,
                    template=self.filename,
                )
            _warn_once(
                warned,
                "missing",
                f"checkpoint policy {self.kind!r}: {missing} not logged yet at {event.stage} "
                f"(logged: {list(available)}); the save is put off until they are",
            )
            return None, False, True
        if self.monitor is None:
            return None, True, False
        value = float(event.metrics[self.monitor])
        if math.isnan(value):
            _warn_once(
                warned,
                "nan",
                f"checkpoint policy {self.kind!r}: {self.monitor!r} is NaN at step "
                f"{event.step}; NaN scores are never saved nor ranked",
            )
            return None, False, False
        ranked = self._ranked(files)
        if self.save_top_k != -1 and len(ranked) >= self.save_top_k:
            threshold = ranked[self.save_top_k - 1]["score"]
            better = value < threshold if self.mode == "min" else value > threshold
            if not better:
                return None, False, False
        return value, True, False

    def _snapshot_template(self, event: Event) -> str | None:
        names = validate_template(self.filename)
        values = {"epoch": event.epoch, "step": event.step, **event.metrics}
        usable = all(
            n in values and not (isinstance(values[n], float) and math.isnan(values[n]))
            for n in names
        )
        return self.filename if usable else DEFAULT_TEMPLATE

    def step(
        self, state: Mapping[str, Any], event: Event, taken: frozenset, sibling_saves: tuple
    ) -> _Step:
        del sibling_saves  # top-k parts decide on their own
        files: list[File] = list(state["files"])
        pending: bool = state["pending"]
        warned: list[str] = list(state["warned"])
        newest = _newest(files)
        last_step = newest["step"] if newest is not None else 0
        since = newest["elapsed"] if newest is not None else 0.0
        saves: list[Save] = []

        def save(template: str | None, score: float | None) -> None:
            name = self._name(template, event, files, taken)
            info = CheckpointInfo(
                name, event.step, event.epoch, event.metrics, score, self.kind, event.elapsed
            )
            files[:] = [f for f in files if f["name"] != name] + [info.to_dict()]
            saves.append(Save(name, info))

        if event.step == last_step:
            pending = False  # this state is on disk already
        elif self.save_top_k != 0:
            fires = event.stage != "interrupt" and self.trigger.fires(event, since)
            if (pending or fires) and event.stage != "interrupt":
                # An epoch trigger's own point at the training epoch's end comes after
                # that epoch's validation: what is missing there is never logged.
                strict = event.stage == "validation_end" or (
                    fires and event.stage == "train_epoch_end"
                )
                score, ok, pending = self._ranked_save(event, files, warned, strict)
                if ok:
                    save(self.filename, score)
        if (
            self.save_on_exception
            and event.stage in ("fit_end", "interrupt")
            and not saves
            and event.step != last_step
        ):
            save(self._snapshot_template(event), None)
        # A file saved now is kept even if an adopted file has a later step.
        keep = self._keep(files) | {s.name for s in saves}
        deletes = [Delete(f["name"]) for f in files if f["name"] not in keep]
        files = [f for f in files if f["name"] in keep]
        return new_part_state(self.kind, files, pending, warned), saves, deletes


@attrs.frozen(slots=True)
class Last:
    """Part keeping one file, ``last.ckpt``, that always holds the newest state.

    With ``link=True`` (Lightning's ``save_last="link"``) the file is a symbolic link
    to the file another part saved at the same event; when no other part saves
    there, it is a full file as usual, so it always holds the newest state.
    """

    trigger: Trigger | None = attrs.field(default=None)
    kind: str = attrs.field(default="last", validator=attrs.validators.min_len(1))
    link: bool = attrs.field(default=False, validator=bool_field)

    @property
    def required_metrics(self) -> tuple[str, ...]:
        return ()

    def resolve(self, save_on_train_epoch_end: bool) -> Last:
        if self.trigger is None or self.trigger.save_on_train_epoch_end is not None:
            return self
        trigger = attrs.evolve(self.trigger, save_on_train_epoch_end=save_on_train_epoch_end)
        return attrs.evolve(self, trigger=trigger)

    def step(
        self, state: Mapping[str, Any], event: Event, taken: frozenset, sibling_saves: tuple
    ) -> _Step:
        files: list[File] = list(state["files"])
        newest = _newest(files)
        last_step = newest["step"] if newest is not None else 0
        since = newest["elapsed"] if newest is not None else 0.0
        saves: list[Save] = []
        due = (
            event.stage in ("fit_end", "interrupt")
            or bool(sibling_saves)
            or (self.trigger is not None and self.trigger.fires(event, since))
        )
        if due and event.step != last_step:
            # Keep our own name (it may be last-v1 if a foreign last.ckpt exists).
            name = newest["name"] if newest is not None else versioned("last", taken, EXT)
            info = CheckpointInfo(
                name, event.step, event.epoch, event.metrics, None, self.kind, event.elapsed
            )
            target = sibling_saves[0] if self.link and sibling_saves else None
            saves.append(Save(name, info, link_to=target))
            keep: File | None = info.to_dict()
        else:
            keep = newest
        deletes = [Delete(f["name"]) for f in files if keep is None or f["name"] != keep["name"]]
        files = [] if keep is None else [keep]
        return new_part_state(self.kind, files, False, list(state["warned"])), saves, deletes


Part = TopK | Last
