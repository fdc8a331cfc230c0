"""Tuning as pure functions: the learning-rate finder and the batch-size finder.

Both explore on a clone of the state and leave the state they are given, and
torch's random generators, as they were::

    from ftrain import tune

    result = tune.lr_find(state, step, data)
    result.suggestion(), result.plot("lr_find.png")
    size = tune.scale_batch_size(make_data, state, step, mode="binsearch")

``fit(auto_lr_find=True, auto_scale_batch_size="power")`` runs them before training.
"""

from ._batch_size import is_oom_error as is_oom_error
from ._batch_size import scale_batch_size as scale_batch_size
from ._lr_find import LRFinderResult as LRFinderResult
from ._lr_find import lr_find as lr_find

__all__ = ["LRFinderResult", "is_oom_error", "lr_find", "scale_batch_size"]
