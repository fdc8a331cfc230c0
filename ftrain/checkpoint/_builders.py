"""Building checkpoint policies: Lightning's ``ModelCheckpoint`` and the short forms."""

from __future__ import annotations

import datetime
import os
from typing import Any, Literal

import attrs

from ._parts import Last, Part, TopK, Trigger
from ._policy import Policy

__all__ = ["ModelCheckpoint", "default_policy", "every", "last", "top_k"]


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
        trigger = Trigger.of(
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
        >>> from ftrain.checkpoint import Event
        >>> s, acts = p.update(p.init(), Event("fit_end", step=7, epoch=0))
        >>> [a.name for a in acts]
        ['last.ckpt']
    """

    try:
        given = (every_n_train_steps, every_n_epochs, train_time_interval)
        trigger = (
            None
            if all(v is None for v in given)
            else Trigger.of(
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
