"""Checkpoint filename templates: Lightning's naming, made strict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftrain.checkpoint import MissingMetricError, format_name, validate_template, versioned


def test_lightning_example() -> None:
    """Lightning's documented example gives the same name (without the extension)."""
    name = format_name("sample-mnist-{epoch:02d}-{val_loss:.2f}", {"epoch": 3, "val_loss": 0.25})
    assert name == "sample-mnist-epoch=03-val_loss=0.25"


def test_default_template() -> None:
    """None means Lightning's default "{epoch}-{step}"."""
    assert format_name(None, {"epoch": 2, "step": 300}) == "epoch=2-step=300"


def test_auto_insert_off() -> None:
    """Without auto-insert only the formatted values appear."""
    name = format_name(
        "{epoch}-val_loss{val_loss:.2f}",
        {"epoch": 1, "val_loss": 0.5},
        auto_insert_metric_name=False,
    )
    assert name == "1-val_loss0.50"


def test_label_written_by_template_is_not_repeated() -> None:
    """`epoch={epoch}` gives `epoch=2`, never `epoch=epoch=2`."""
    assert format_name("epoch={epoch}-{step}", {"epoch": 2, "step": 5}) == "epoch=2-step=5"


def test_slash_in_metric_name_never_makes_folders() -> None:
    """A '/' from a metric name or the template is replaced by '_' in the output."""
    name = format_name("{epoch}-{val/loss:.2f}", {"epoch": 0, "val/loss": 0.125})
    assert name == "epoch=0-val_loss=0.12"
    assert "/" not in format_name("a/b-{x}", {"x": 1}, auto_insert_metric_name=False)
    assert "\\" not in format_name("a\\b-{x}", {"x": 1})


def test_prefix_joined_with_dash() -> None:
    """A prefix is joined with '-', as in Lightning."""
    assert format_name("{step}", {"step": 4}, prefix="run") == "run-step=4"


def test_missing_metric_is_an_error_listing_available() -> None:
    """An unlogged metric is refused, naming the template, the key and the logged keys."""
    with pytest.raises(MissingMetricError) as info:
        format_name("{epoch}-{val_loss:.2f}", {"step": 1, "epoch": 0, "loss": 0.3})
    message = str(info.value)
    assert "'{epoch}-{val_loss:.2f}'" in message
    assert "'val_loss'" in message
    assert "['epoch', 'loss', 'step']" in message
    assert info.value.missing == "val_loss"
    assert info.value.available == ("epoch", "loss", "step")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)


def test_callers_dict_is_not_changed() -> None:
    """Formatting (even failing) never adds or changes keys in the caller's mapping."""
    metrics = {"epoch": 1}
    with pytest.raises(MissingMetricError):
        format_name("{epoch}-{val_loss}", metrics)
    format_name("{epoch}", metrics)
    assert metrics == {"epoch": 1}


def test_integral_float_with_d() -> None:
    """`:d` accepts a float that is integral (3.0 -> 03)."""
    assert format_name("{epoch:02d}", {"epoch": 3.0}) == "epoch=03"


def test_non_integral_float_with_d_is_clear_error() -> None:
    """`:d` on 2.5 is a ValueError naming the metric and suggesting a float format."""
    with pytest.raises(ValueError, match=r"'epoch' = 2.5 cannot be formatted with '02d'"):
        format_name("{epoch:02d}", {"epoch": 2.5})


def test_value_formatted_as_given() -> None:
    """A Python float is formatted at its own precision (no float32 artefacts)."""
    assert format_name("{v}", {"v": 0.1}) == "v=0.1"
    assert format_name("{v:.2f}", {"v": 0.045}) == f"v={0.045:.2f}"
    assert format_name("{v:.3f}", {"v": 0.3}) == "v=0.300"


def test_non_number_value_refused() -> None:
    """A value that is not an int or float (here a str) is a TypeError."""
    with pytest.raises(TypeError, match="'v' must be an int or float"):
        format_name("{v}", {"v": "x"})


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{epoch", "expected '}'"),
        ("epoch}", "Single '}'"),
        ("{}-{step}", "empty metric name"),
        ("{:02d}", "empty metric name"),
        ("{ }", "empty metric name"),
        ("{val_loss:q}", "bad format spec 'q'"),
        ("{val_loss:s}", "bad format spec 's'"),
        ("{val_loss:{w}}", "bad format spec"),
        ("{val_loss!r}", "conversion '!r'"),
        ("", "must not be empty"),
        (".hidden-{step}", "must not start with '.'"),
    ],
)
def test_validate_template_errors(template: str, match: str) -> None:
    """Bad templates are refused up front, with the template in the message."""
    with pytest.raises(ValueError, match=match):
        validate_template(template)


def test_validate_template_names() -> None:
    """The names used, in order, without repeats; escaped braces are literal."""
    assert validate_template("{epoch:02d}-{val/loss:.2f}-{epoch}") == ("epoch", "val/loss")
    assert validate_template(None) == ("epoch", "step")
    assert validate_template("{{x}}-{step}") == ("step",)
    assert format_name("{{x}}-{step}", {"step": 1}) == "{x}-step=1"


def test_versioned_counts_up() -> None:
    """Free name as is, else -v1, -v2, ... (Lightning's version counter)."""
    assert versioned("a", set()) == "a.ckpt"
    assert versioned("a", {"a.ckpt"}) == "a-v1.ckpt"
    assert versioned("a", {"a.ckpt", "a-v1.ckpt"}) == "a-v2.ckpt"
    assert versioned("a", {"a-v1.ckpt"}) == "a.ckpt"
    assert versioned("a", {"a.pt"}, ext=".pt") == "a-v1.pt"


@given(
    st.dictionaries(
        st.text(st.characters(codec="ascii", exclude_characters="{}:![]"), min_size=1).filter(
            str.strip
        ),
        st.floats(allow_nan=False) | st.integers(),
        min_size=1,
        max_size=4,
    )
)
def test_any_metric_names_give_flat_names(metrics: dict[str, float]) -> None:
    """Whatever the metric names, the output has no path separator and the input is unchanged."""
    before = dict(metrics)
    template = "-".join("{" + k + "}" for k in metrics)
    name = format_name(template, metrics)
    assert "/" not in name and "\\" not in name
    assert metrics == before
