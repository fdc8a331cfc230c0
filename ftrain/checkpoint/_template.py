"""Checkpoint filename templates: Lightning's ``ModelCheckpoint`` naming, made strict.

A template such as ``"sample-mnist-{epoch:02d}-{val_loss:.2f}"`` names metrics in
braces, each with an optional format spec. With ``auto_insert_metric_name`` each
group is preceded by ``name=``, so epoch 3 and ``val_loss=0.25`` give
``sample-mnist-epoch=03-val_loss=0.25``. Where Lightning differs:

- a metric the template names but the run did not log is an error
  (:class:`MissingMetricError`, listing what was logged), never a silent 0;
- a path separator (``/`` or ``\\``) in the output, e.g. from ``{val/loss}``, is
  replaced by ``_``: checkpoints stay flat in one folder;
- a group already labelled by the template (``epoch={epoch}``) gets no second label;
- ``:d`` accepts an integral float (3.0); any other float with an integer format is
  a clear ``ValueError``;
- values are formatted exactly as given (a Python float, not a float32 copy).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from string import Formatter

__all__ = [
    "DEFAULT_TEMPLATE",
    "MissingMetricError",
    "format_name",
    "validate_template",
    "versioned",
]

DEFAULT_TEMPLATE = "{epoch}-{step}"
"""Lightning's default filename: ``epoch=E-step=S``."""

_JOIN = "-"
_SEPARATORS = ("/", "\\")


class MissingMetricError(ValueError, KeyError):
    """A metric needed for a checkpoint decision or name was not logged.

    Both a ``ValueError`` (a bad configuration for this run) and a ``KeyError``
    (a name absent from a mapping). ``missing`` is the absent name, ``available``
    the sorted names that were logged, ``template`` the filename template when one
    was being formatted.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: str,
        available: tuple[str, ...],
        template: str | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.available = available
        self.template = template

    def __str__(self) -> str:
        # KeyError would quote the message with repr(); show it as written.
        return str(self.args[0])


def _spec_ok(spec: str) -> bool:
    for sample in (0, 0.5):
        try:
            format(sample, spec)
        except ValueError:
            continue
        return True
    return False


def _parse(template: str) -> list[tuple[str, str | None, str]]:
    """Split a template into ``(literal, name or None, spec)`` triples, checking each."""
    if not isinstance(template, str):
        raise TypeError(f"filename template must be a str, got {type(template).__name__}")
    if not template:
        raise ValueError("filename template must not be empty")
    if template.startswith("."):
        # Names starting with "." are hidden and clash with in-progress temp files.
        raise ValueError(f"filename template {template!r} must not start with '.'")
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"filename template {template!r}: {err}") from None
    groups: list[tuple[str, str | None, str]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            groups.append((literal, None, ""))
            continue
        if not name.strip():
            raise ValueError(
                f"filename template {template!r}: a group has an empty metric name; "
                "write {name} or {name:format}"
            )
        if conversion is not None:
            raise ValueError(
                f"filename template {template!r}: conversion '!{conversion}' in "
                f"{{{name}}} is not supported; use a format spec such as {{{name}:.3f}}"
            )
        spec = spec or ""
        if "{" in spec or "}" in spec or not _spec_ok(spec):
            raise ValueError(
                f"filename template {template!r}: bad format spec {spec!r} for "
                f"{name!r}; it must format a number, e.g. '.2f' or '03d'"
            )
        groups.append((literal, name, spec))
    return groups


def validate_template(template: str | None) -> tuple[str, ...]:
    """Check a filename template and return the metric names it uses.

    Args:
        template: the template, or None for the default ``"{epoch}-{step}"``.

    Returns:
        The metric names in order of first use, without repeats.

    Raises:
        ValueError: unbalanced braces, an empty name, a conversion (``!r``) or a
            format spec that cannot format a number.

    Example:
        >>> validate_template("{epoch:02d}-{val/loss:.2f}")
        ('epoch', 'val/loss')
    """
    names: dict[str, None] = {}
    for _, name, _ in _parse(DEFAULT_TEMPLATE if template is None else template):
        if name is not None:
            names.setdefault(name, None)
    return tuple(names)


def _format_value(name: str, value: float | int, spec: str, template: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"filename template {template!r}: metric {name!r} must be an int or float, "
            f"got {type(value).__name__}"
        )
    try:
        return format(value, spec)
    except ValueError:
        # An integer format on a float: fine when the float is integral (an epoch
        # logged as 3.0), an error otherwise rather than a silent rounding.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return format(int(value), spec)
        raise ValueError(
            f"filename template {template!r}: metric {name!r} = {value!r} cannot be "
            f"formatted with {spec!r}; use a float format such as '.3f'"
        ) from None


def format_name(
    template: str | None,
    metrics: Mapping[str, float | int],
    *,
    auto_insert_metric_name: bool = True,
    prefix: str = "",
) -> str:
    """Format a checkpoint filename (without extension) from a template.

    Args:
        template: the template, or None for ``"{epoch}-{step}"``.
        metrics: values by name; never modified.
        auto_insert_metric_name: write ``name=`` before each group, unless the text
            just before it already ends with ``=``.
        prefix: prepended with ``-`` when non-empty.

    Returns:
        The name, with path separators replaced by ``_``.

    Raises:
        MissingMetricError: the template names a metric absent from ``metrics``.
        ValueError: a bad template, or a non-integral float with an integer format.

    Example:
        >>> format_name("sample-mnist-{epoch:02d}-{val_loss:.2f}", {"epoch": 3, "val_loss": 0.25})
        'sample-mnist-epoch=03-val_loss=0.25'
        >>> format_name("{epoch}-{val/loss:.1f}", {"epoch": 2, "val/loss": 0.5})
        'epoch=2-val_loss=0.5'
    """
    text = DEFAULT_TEMPLATE if template is None else template
    parts: list[str] = []
    for literal, name, spec in _parse(text):
        parts.append(literal)
        if name is None:
            continue
        if name not in metrics:
            available = tuple(sorted(metrics))
            raise MissingMetricError(
                f"filename template {text!r} uses {name!r}, which was not logged; "
                f"logged metrics: {list(available)}",
                missing=name,
                available=available,
                template=text,
            )
        if auto_insert_metric_name and not literal.endswith("="):
            parts.append(f"{name}=")
        parts.append(_format_value(name, metrics[name], spec, text))
    name_out = "".join(parts)
    if prefix:
        name_out = f"{prefix}{_JOIN}{name_out}"
    for sep in _SEPARATORS:
        name_out = name_out.replace(sep, "_")
    return name_out


def versioned(name: str, existing: Collection[str], ext: str = ".ckpt") -> str:
    """Return ``name + ext``, or the first free ``name-vN + ext`` (N = 1, 2, ...).

    Args:
        name: the formatted name, without extension.
        existing: file names (with extension) that are taken.
        ext: the extension.

    Returns:
        A file name not in ``existing``.

    Example:
        >>> versioned("epoch=0", {"epoch=0.ckpt", "epoch=0-v1.ckpt"})
        'epoch=0-v2.ckpt'
    """
    candidate = f"{name}{ext}"
    version = 1
    while candidate in existing:
        candidate = f"{name}-v{version}{ext}"
        version += 1
    return candidate
