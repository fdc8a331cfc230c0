"""The values a checkpoint policy reads and returns: events, file metadata, actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "STAGES",
    "CheckpointInfo",
    "Delete",
    "Event",
    "Save",
    "bool_field",
    "int_at_least",
    "is_number",
    "name_field",
]

STAGES = ("train_step", "train_epoch_end", "validation_end", "fit_end", "interrupt")
"""The points at which the driver calls ``update``."""


def is_number(value: object) -> bool:
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


def int_at_least(minimum: int) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{attribute.name} must be an int >= {minimum}, got {value!r}")

    return check


def bool_field(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a bool, got {value!r}")


def name_field(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
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
    step: int = attrs.field(validator=int_at_least(0))
    epoch: int = attrs.field(validator=int_at_least(0))
    batch_idx: int = attrs.field(default=0, validator=int_at_least(-1))
    elapsed: float = attrs.field(default=0.0)
    metrics: Mapping[str, float] = attrs.field(factory=dict, converter=_metrics_view)

    @stage.validator
    def _check_stage(self, _: Any, value: str) -> None:
        if value not in STAGES:
            raise ValueError(f"Event: stage must be one of {list(STAGES)}, got {value!r}")

    @elapsed.validator
    def _check_elapsed(self, _: Any, value: float) -> None:
        if not is_number(value) or not value >= 0:
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

    name: str = attrs.field(validator=name_field)
    step: int = attrs.field(validator=int_at_least(0))
    epoch: int = attrs.field(validator=int_at_least(0))
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

    name: str = attrs.field(validator=name_field)
    info: CheckpointInfo = attrs.field(validator=_same_name)
    link_to: str | None = attrs.field(default=None)


@attrs.frozen(slots=True)
class Delete:
    """Remove ``<dirpath>/<name>``; only after every Save of the same update is committed."""

    name: str = attrs.field(validator=name_field)
