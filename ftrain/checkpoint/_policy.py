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
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from .._warn import user_stacklevel
from ._template import (
    DEFAULT_TEMPLATE,
    MissingMetricError,
    format_name,
    validate_template,
    versioned,
)

__all__ = [
    "STAGES",
    "CheckpointInfo",
    "Delete",
    "Event",
    "ModelCheckpoint",
    "Policy",
    "Save",
    "default_policy",
    "every",
    "last",
    "top_k",
    "union",
]

STAGES = ("train_step", "train_epoch_end", "validation_end", "fit_end", "interrupt")
"""The points at which the driver calls ``update``."""

_EXT = ".ckpt"
_STATE_VERSION = 1
_ALWAYS_LOGGED = ("epoch", "step")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """Copy metrics as builtin ints/floats, so they load with ``weights_only=True``."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric names must be str, got {key!r}")
        if isinstance(value, bool) or not hasattr(value, "__float__"):
            raise TypeError(f"metric {key!r} must be an int or float, got {type(value).__name__}")
        out[key] = int(value) if isinstance(value, int) else float(value)
    return out


def _metrics_view(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """A dict is copied; another mapping (e.g. one converting device values on read)
    is kept as is, so that values are read only when a decision needs them."""
    if isinstance(metrics, dict):
        return dict(metrics)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"Event: metrics must be a mapping, got {type(metrics).__name__}")
    return metrics


def _int_at_least(minimum: int) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{attribute.name} must be an int >= {minimum}, got {value!r}")

    return check


def _bool_field(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a bool, got {value!r}")


def _name_field(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value:
        raise ValueError(f"{attribute.name} must be a non-empty file name, got {value!r}")


# --------------------------------------------------------------------------- values


@attrs.frozen(slots=True)
class Event:
    """A point in training where the driver asks the policy what to do.

    Attributes:
        stage: one of ``STAGES``: "train_step" (after an optimizer step),
            "train_epoch_end", "validation_end", "fit_end" or "interrupt".
        step: optimizer steps taken (Lightning's ``global_step``).
        epoch: the current epoch, 0-based (Lightning's ``current_epoch``).
        batch_idx: the batch index in the epoch.
        elapsed: seconds of training so far.
        metrics: the latest logged values, as Python numbers. A dict is copied;
            another mapping is kept and read lazily: a policy reads a value only
            when a save is due (the monitor, template names) or made (all, for the
            file's :class:`CheckpointInfo`).

    Example:
        >>> Event("train_step", step=10, epoch=0, metrics={"loss": 0.5}).step
        10
    """

    stage: str = attrs.field()
    step: int = attrs.field(validator=_int_at_least(0))
    epoch: int = attrs.field(validator=_int_at_least(0))
    batch_idx: int = attrs.field(default=0, validator=_int_at_least(-1))
    elapsed: float = attrs.field(default=0.0)
    metrics: Mapping[str, float] = attrs.field(factory=dict, converter=_metrics_view)

    @stage.validator
    def _check_stage(self, _: Any, value: str) -> None:
        if value not in STAGES:
            raise ValueError(f"Event: stage must be one of {list(STAGES)}, got {value!r}")

    @elapsed.validator
    def _check_elapsed(self, _: Any, value: float) -> None:
        if not _is_number(value) or not value >= 0:
            raise ValueError(f"Event: elapsed must be a number of seconds >= 0, got {value!r}")


@attrs.frozen(slots=True)
class CheckpointInfo:
    """Metadata of a committed checkpoint file; the policy decides from these alone.

    Attributes:
        name: the file's base name, e.g. ``"epoch=2-step=300.ckpt"``.
        step: optimizer steps taken when it was saved.
        epoch: 0-based epoch when it was saved.
        metrics: the logged values at that point.
        score: the monitored value if the file is ranked, else None.
        kind: which part of the policy owns the file ("top_k", "last", "every", ...).
        elapsed: seconds of training when it was saved (drives time triggers).

    Example:
        >>> info = CheckpointInfo("last.ckpt", 5, 0, {}, None, "last")
        >>> CheckpointInfo.from_dict(info.to_dict()) == info
        True
    """

    name: str = attrs.field(validator=_name_field)
    step: int = attrs.field(validator=_int_at_least(0))
    epoch: int = attrs.field(validator=_int_at_least(0))
    metrics: Mapping[str, float] = attrs.field(converter=_plain_metrics)
    score: float | None = attrs.field(
        converter=attrs.converters.optional(float)  # type: ignore[misc]
    )
    kind: str = attrs.field(validator=attrs.validators.min_len(1))
    elapsed: float = attrs.field(default=0.0, converter=float)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (str, int, float, None) that ``torch.load(weights_only=True)`` reads."""
        return {
            "name": self.name,
            "step": self.step,
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
            "score": self.score,
            "kind": self.kind,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointInfo:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            ValueError: a key is missing or a value has the wrong type.
        """
        try:
            return cls(
                name=data["name"],
                step=data["step"],
                epoch=data["epoch"],
                metrics=data["metrics"],
                score=data["score"],
                kind=data["kind"],
                elapsed=data.get("elapsed", 0.0),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a checkpoint info: {err!r}") from None


def _same_name(instance: Save, _: Any, info: CheckpointInfo) -> None:
    if info.name != instance.name:
        raise ValueError(f"Save: name {instance.name!r} differs from info.name {info.name!r}")


@attrs.frozen(slots=True)
class Save:
    """Write the current state to ``<dirpath>/<name>``, storing ``info.to_dict()`` in it.

    With ``link_to`` (a file saved by an earlier Save of the same update), make
    ``name`` a symbolic link to that file instead; where links are not possible the
    state is written as a full file.
    """

    name: str = attrs.field(validator=_name_field)
    info: CheckpointInfo = attrs.field(validator=_same_name)
    link_to: str | None = attrs.field(default=None)


@attrs.frozen(slots=True)
class Delete:
    """Remove ``<dirpath>/<name>``; only after every Save of the same update is committed."""

    name: str = attrs.field(validator=_name_field)


# --------------------------------------------------------------------------- triggers


def _seconds(value: float | datetime.timedelta | None) -> float | None:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


@attrs.frozen(slots=True)
class _Trigger:
    """When a part saves; at most one of the three intervals is non-zero."""

    every_n_train_steps: int = attrs.field(default=0, validator=_int_at_least(0))
    every_n_epochs: int = attrs.field(default=0, validator=_int_at_least(0))
    train_time_interval: float | None = attrs.field(default=None, converter=_seconds)
    save_on_train_epoch_end: bool | None = attrs.field(default=None)

    @train_time_interval.validator
    def _check_time(self, _: Any, value: float | None) -> None:
        if value is not None and (not _is_number(value) or not value > 0):
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
    ) -> _Trigger:
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
_File = Mapping[str, Any]


def _recency(f: _File) -> tuple[int, float, str]:
    return (f["step"], f["elapsed"], f["name"])


def _newest(files: list[_File]) -> _File | None:
    return max(files, key=_recency, default=None)


def _warn_once(warned: list[str], key: str, message: str) -> None:
    if key not in warned:
        warned.append(key)
        warnings.warn(message, UserWarning, stacklevel=user_stacklevel())


def _part_state(kind: str, files: Iterable[_File], pending: bool, warned: list[str]) -> dict:
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

    save_top_k: int = attrs.field(default=1, validator=_int_at_least(-1))
    monitor: str | None = attrs.field(default=None)
    mode: str = attrs.field(default="min")
    trigger: _Trigger = attrs.field(factory=lambda: _Trigger.of(None, None, None, None))
    filename: str | None = attrs.field(default=None)
    auto_insert_metric_name: bool = attrs.field(default=True, validator=_bool_field)
    enable_version_counter: bool = attrs.field(default=True, validator=_bool_field)
    save_on_exception: bool = attrs.field(default=False, validator=_bool_field)
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

    def _goodness(self, f: _File) -> tuple[float, int, float, str]:
        score = f["score"] if f["score"] is not None else math.inf
        # Best first; among equal scores the older file ranks higher.
        return (score if self.mode == "min" else -score, *_recency(f))

    def _ranked(self, files: list[_File]) -> list[_File]:
        return sorted((f for f in files if f["score"] is not None), key=self._goodness)

    def _keep(self, files: list[_File]) -> set[str]:
        newest = _newest(files)
        if newest is None:
            return set()
        if self.monitor is None:
            ordered = sorted(files, key=_recency, reverse=True)
        else:
            ordered = self._ranked(files)
        kept = ordered if self.save_top_k == -1 else ordered[: self.save_top_k]
        return {newest["name"]} | {f["name"] for f in kept}

    def best(self, files: list[_File]) -> _File | None:
        if self.monitor is None:
            return _newest(files)
        ranked = self._ranked(files)
        return ranked[0] if ranked else None

    def _name(
        self, template: str | None, event: Event, files: list[_File], taken: frozenset
    ) -> str:
        # Logged values win over the counters, as in Lightning.
        candidates = {"epoch": event.epoch, "step": event.step, **event.metrics}
        base = format_name(
            template, candidates, auto_insert_metric_name=self.auto_insert_metric_name
        )
        if not self.enable_version_counter and f"{base}{_EXT}" in {f["name"] for f in files}:
            return f"{base}{_EXT}"  # overwrite our own file of the same name
        return versioned(base, taken, _EXT)

    def _ranked_save(
        self, event: Event, files: list[_File], warned: list[str], strict: bool
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
        files: list[_File] = list(state["files"])
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
        return _part_state(self.kind, files, pending, warned), saves, deletes


@attrs.frozen(slots=True)
class Last:
    """Part keeping one file, ``last.ckpt``, that always holds the newest state.

    With ``link=True`` (Lightning's ``save_last="link"``) the file is a symbolic link
    to the file another part saved at the same event; when no other part saves
    there, it is a full file as usual, so it always holds the newest state.
    """

    trigger: _Trigger | None = attrs.field(default=None)
    kind: str = attrs.field(default="last", validator=attrs.validators.min_len(1))
    link: bool = attrs.field(default=False, validator=_bool_field)

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
        files: list[_File] = list(state["files"])
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
            name = newest["name"] if newest is not None else versioned("last", taken, _EXT)
            info = CheckpointInfo(
                name, event.step, event.epoch, event.metrics, None, self.kind, event.elapsed
            )
            target = sibling_saves[0] if self.link and sibling_saves else None
            saves.append(Save(name, info, link_to=target))
            keep: _File | None = info.to_dict()
        else:
            keep = newest
        deletes = [Delete(f["name"]) for f in files if keep is None or f["name"] != keep["name"]]
        files = [] if keep is None else [keep]
        return _part_state(self.kind, files, False, list(state["warned"])), saves, deletes


Part = TopK | Last


# --------------------------------------------------------------------------- policy


def _dirpath(value: str | os.PathLike[str] | None) -> str | None:
    path = None if value is None else os.fspath(value)
    if isinstance(path, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise ValueError(
            f"dirpath={path!r}: URL paths (s3://, gs://, memory://, ...) are not supported; "
            "checkpoints are written with the local file API. Use a local folder"
        )
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
        >>> p = top_k(2, monitor="val_loss", every_n_epochs=1, save_on_train_epoch_end=False)
        >>> s = p.init()
        >>> s, acts = p.update(s, Event("validation_end", 10, 0, metrics={"val_loss": 0.5}))
        >>> [a.name for a in acts]
        ['epoch=0-step=10.ckpt']
        >>> p.best(s), p.best_score(s)
        ('epoch=0-step=10.ckpt', 0.5)
    """

    parts: tuple[Part, ...] = attrs.field(converter=_as_parts, validator=_check_parts)
    dirpath: str | None = attrs.field(default=None, converter=_dirpath)
    save_weights_only: bool = attrs.field(default=False, validator=_bool_field)
    verbose: bool = attrs.field(default=False, validator=_bool_field)

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
            "parts": [_part_state(p.kind, [], False, []) for p in self.parts],
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
        if stage != "train_step":
            return True
        for part, part_state in zip(self.parts, pstate["parts"], strict=True):
            trigger = part.trigger
            if part_state.get("pending"):
                return True
            if trigger is not None and (
                trigger.every_n_train_steps > 0 or trigger.train_time_interval is not None
            ):
                return True
        return False

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
                _part_state(
                    part.kind,
                    files,
                    bool(prev.get("pending", False)),
                    list(prev.get("warned", [])),
                )
            )
        own = {i.name for i in infos if i.kind in kinds}
        foreign = {i.name for i in infos if i.kind not in kinds} | (set(existing) - own)
        return {"version": _STATE_VERSION, "foreign": sorted(foreign), "parts": states}

    def _files(self, pstate: Mapping[str, Any]) -> list[list[_File]]:
        return [list(s["files"]) for s in self._parts_state(pstate)]

    def _best(self, pstate: Mapping[str, Any]) -> _File | None:
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


# --------------------------------------------------------------------------- builders


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


def _make(
    owner: str,
    *,
    kind: str = "top_k",
    dirpath: str | os.PathLike[str] | None = None,
    filename: str | None = None,
    monitor: str | None = None,
    save_last: bool | str | None = None,
    save_top_k: int = 1,
    save_weights_only: bool = False,
    mode: str = "min",
    auto_insert_metric_name: bool = True,
    every_n_train_steps: int | None = None,
    train_time_interval: float | datetime.timedelta | None = None,
    every_n_epochs: int | None = None,
    save_on_train_epoch_end: bool | None = None,
    enable_version_counter: bool = True,
    save_on_exception: bool = False,
) -> Policy:
    try:
        if save_last not in (None, False, True, "link"):
            raise ValueError(f"save_last must be None, False, True or 'link', got {save_last!r}")
        trigger = _Trigger.of(
            every_n_train_steps, every_n_epochs, train_time_interval, save_on_train_epoch_end
        )
        part = TopK(
            save_top_k=save_top_k,
            monitor=monitor,
            mode=mode,
            trigger=trigger,
            filename=filename,
            auto_insert_metric_name=auto_insert_metric_name,
            enable_version_counter=enable_version_counter,
            save_on_exception=save_on_exception,
            kind=kind,
        )
        parts: tuple[Part, ...] = (
            (part, Last(trigger, link=save_last == "link")) if save_last else (part,)
        )
        return Policy(parts, dirpath=dirpath, save_weights_only=save_weights_only)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{owner}: {err}") from None


def ModelCheckpoint(  # Lightning's name for the same concept
    dirpath: str | os.PathLike[str] | None = None,
    filename: str | None = None,
    monitor: str | None = None,
    verbose: bool = False,
    save_last: bool | str | None = None,
    save_top_k: int = 1,
    save_weights_only: bool = False,
    mode: Literal["min", "max"] = "min",
    auto_insert_metric_name: bool = True,
    every_n_train_steps: int | None = None,
    train_time_interval: float | datetime.timedelta | None = None,
    every_n_epochs: int | None = None,
    save_on_train_epoch_end: bool | None = None,
    enable_version_counter: bool = True,
    save_on_exception: bool = False,
) -> Policy:
    """Lightning's ``ModelCheckpoint``, with its names and defaults, as a policy.

    Args: as Lightning's (``train_time_interval`` in seconds or a ``timedelta``);
    ``save_last`` is None, False, True or "link" (``last.ckpt`` a symbolic link to
    the file saved at the same event, a full file where there is none or links are
    not possible); ``verbose`` prints each save.
    See the module docstring
    for where behaviour differs (last.ckpt holds the newest state; missing metrics
    are errors; NaN is never saved; ``save_on_exception`` also saves at fit end).

    Returns:
        A top-k part, plus a last part sharing its trigger when ``save_last``.

    Raises:
        ValueError: naming the argument, the accepted values and what was given.

    Example:
        >>> ModelCheckpoint(monitor="val_loss", save_top_k=3, save_last=True).required_metrics
        ('val_loss',)
    """
    if not isinstance(verbose, bool):
        raise ValueError(f"ModelCheckpoint: verbose must be True or False, got {verbose!r}")
    policy = _make(
        "ModelCheckpoint",
        dirpath=dirpath,
        filename=filename,
        monitor=monitor,
        save_last=save_last,
        save_top_k=save_top_k,
        save_weights_only=save_weights_only,
        mode=mode,
        auto_insert_metric_name=auto_insert_metric_name,
        every_n_train_steps=every_n_train_steps,
        train_time_interval=train_time_interval,
        every_n_epochs=every_n_epochs,
        save_on_train_epoch_end=save_on_train_epoch_end,
        enable_version_counter=enable_version_counter,
        save_on_exception=save_on_exception,
    )
    return attrs.evolve(policy, verbose=verbose) if verbose else policy


def top_k(k: int, monitor: str | None = None, mode: str = "min", **kw: Any) -> Policy:
    """Keep the ``k`` best checkpoints by ``monitor`` (the newest if it is None).

    Args:
        k: how many to keep; -1 keeps all, 0 none.
        monitor: the metric ranking checkpoints, or None for recency.
        mode: "min" or "max".
        **kw: ``ModelCheckpoint``'s other arguments except ``save_last``, and
            ``kind`` to tell two top-k parts of one union apart.

    Returns:
        A one-part policy.

    Raises:
        ValueError: a bad argument, named.

    Example:
        >>> top_k(3, "val_acc", mode="max").parts[0].save_top_k
        3
    """
    if "save_last" in kw:
        raise ValueError("top_k: save_last is not an option here; use top_k(...) | last()")
    return _make("top_k", save_top_k=k, monitor=monitor, mode=mode, **kw)


def every(
    n_train_steps: int | None = None,
    n_epochs: int | None = None,
    train_time_interval: float | datetime.timedelta | None = None,
    **kw: Any,
) -> Policy:
    """Save at a fixed cadence and keep every file (kind ``"every"``).

    ``ModelCheckpoint(save_top_k=-1)`` with one trigger; no trigger means every epoch.

    Args:
        n_train_steps: every n optimizer steps.
        n_epochs: every n epochs.
        train_time_interval: every so many seconds of training (or a timedelta).
        **kw: ``filename``, ``dirpath``, ``save_on_train_epoch_end``, ``kind`` and
            the other ``ModelCheckpoint`` arguments except monitor/top-k/save_last.

    Example:
        >>> every(n_train_steps=100).parts[0].trigger.every_n_train_steps
        100
    """
    for name in ("monitor", "save_top_k", "save_last", "mode"):
        if name in kw:
            raise ValueError(f"every: {name} is not an option here; every() keeps all files")
    for name, value in (("n_train_steps", n_train_steps), ("n_epochs", n_epochs)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"every: {name} must be None or an int >= 0, got {value!r}")
    kw.setdefault("kind", "every")
    return _make(
        "every",
        save_top_k=-1,
        every_n_train_steps=n_train_steps,
        every_n_epochs=n_epochs,
        train_time_interval=train_time_interval,
        **kw,
    )


def last(
    *,
    every_n_train_steps: int | None = None,
    every_n_epochs: int | None = None,
    train_time_interval: float | datetime.timedelta | None = None,
    save_on_train_epoch_end: bool | None = None,
    dirpath: str | os.PathLike[str] | None = None,
    save_weights_only: bool = False,
    link: bool = False,
) -> Policy:
    """Keep ``last.ckpt`` holding the newest state.

    It is written at ``fit_end``, on ``interrupt``, whenever another part of the
    union saves, and at its own trigger if one is given (none by default). Unlike
    Lightning 2.6, where ``last.ckpt`` follows the top-k saves (so it can hold the
    best rather than the newest state), this file is always the one to resume from.
    ``link=True`` makes it a symbolic link to the file another part of the union
    saved at the same event (Lightning's ``save_last="link"``).

    Example:
        >>> p = last()
        >>> s, acts = p.update(p.init(), Event("fit_end", step=7, epoch=0))
        >>> [a.name for a in acts]
        ['last.ckpt']
    """

    try:
        given = (every_n_train_steps, every_n_epochs, train_time_interval)
        trigger = (
            None
            if all(v is None for v in given)
            else _Trigger.of(
                every_n_train_steps, every_n_epochs, train_time_interval, save_on_train_epoch_end
            )
        )
        return Policy(
            (Last(trigger, link=link),), dirpath=dirpath, save_weights_only=save_weights_only
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"last: {err}") from None


def default_policy() -> Policy:
    """Lightning's default ``ModelCheckpoint()`` plus ``save_on_exception=True``.

    Saves ``epoch=E-step=S.ckpt`` every epoch and keeps only the newest; also saves
    on interrupt and at the end of fit, so the newest state is always on disk and a
    run can always resume.

    Example:
        >>> default_policy().parts[0].save_on_exception
        True
    """
    return ModelCheckpoint(save_on_exception=True)
