"""Where in training an error happened, attached to the error itself."""

from __future__ import annotations

__all__ = ["note_position"]


def note_position(exc: BaseException, *, epoch: int, batch_idx: int, step: int) -> None:
    """Add ``during training: epoch E, batch index B, global step S`` as a note of ``exc``.

    The exception keeps its type and message (``except ValueError`` still catches it);
    the traceback shows the note below the message. Interrupts get none, and an error
    already noted (re-raised through nested loops) is not noted twice.

    Example:
        >>> err = ValueError("bad batch")
        >>> note_position(err, epoch=1, batch_idx=3, step=7)
        >>> err.__notes__
        ['during training: epoch 1, batch index 3, global step 7']
    """
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return
    note = f"during training: epoch {epoch}, batch index {batch_idx}, global step {step}"
    notes = getattr(exc, "__notes__", None)
    if notes is not None and any(n.startswith("during training:") for n in notes):
        return
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10: the same attribute, not shown by its traceback printer
        exc.__notes__ = [*(notes or []), note]  # type: ignore[attr-defined]
