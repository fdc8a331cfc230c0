"""Loop parts: the pure decisions of a training loop, as values a hand-written loop uses.

``fit`` is a composition of these parts and a driver that carries out their effects
(devices, processes, files, loggers, progress, signals). A loop of your own takes
the same parts (see the how-to "Write your own loop")::

    from ftrain import loop

    stop = loop.stop_conditions(max_epochs=3)
    interval = loop.val_interval(0.5)
    reducer = loop.checkpoint_reducer(ft.checkpoint.top_k(2, "val_loss") | ft.checkpoint.last())

- :func:`epoch_data`: an epoch's batches in the run's order (a function of seed and epoch).
- :class:`Position` and :func:`batches`: where a batch is (epoch, index, last).
- :func:`val_interval`: ``val_check_interval``/``check_val_every_n_epoch`` as a predicate.
- :func:`stop_conditions`: max/min epochs and steps and ``max_time`` as predicates.
- :func:`checkpoint_reducer`: checkpoint policies folded over the loop's events into
  save/delete decisions; :func:`checkpoint_event` builds the events.
- :class:`RunFiles`: the edge: a logger and a checkpoint folder written through the
  reducer, kept consistent so that a resume after a kill is exact.
"""

from ._checkpoints import CheckpointReducer as CheckpointReducer
from ._checkpoints import checkpoint_event as checkpoint_event
from ._checkpoints import checkpoint_reducer as checkpoint_reducer
from ._files import RunFiles as RunFiles
from ._position import Position as Position
from ._position import batches as batches
from ._position import epoch_batches as epoch_batches
from ._position import epoch_data as epoch_data
from ._position import reload_due as reload_due
from ._stop import StopConditions as StopConditions
from ._stop import stop_conditions as stop_conditions
from ._validation import ValInterval as ValInterval
from ._validation import val_interval as val_interval

__all__ = [
    "CheckpointReducer",
    "Position",
    "RunFiles",
    "StopConditions",
    "ValInterval",
    "batches",
    "checkpoint_event",
    "checkpoint_reducer",
    "epoch_batches",
    "epoch_data",
    "reload_due",
    "stop_conditions",
    "val_interval",
]
