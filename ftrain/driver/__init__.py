"""The driver: the impure edge of ftrain.

``fit``, ``validate``, ``test`` and ``predict`` live here, with everything that
touches devices, processes, files, signals and the clock: distributed setup and
launching, FSDP, the progress bar, the profiler, checkpoint writing and resuming.
The public names are re-exported by ``ftrain``.
"""

from ._estimate import estimated_stepping_batches as estimated_stepping_batches
from ._evaluate import predict as predict
from ._evaluate import test as test
from ._evaluate import validate as validate
from ._fit import fit as fit
from ._result import FitResult as FitResult

__all__ = ["FitResult", "estimated_stepping_batches", "fit", "predict", "test", "validate"]
