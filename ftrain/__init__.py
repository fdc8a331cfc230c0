"""ftrain: functional, compositional training for PyTorch.

A training run is a fold of a step function over batches:
``state, metrics = step(state, batch)``. Combinators build bigger steps from
smaller ones; ``fit`` drives the fold with Lightning's Trainer controls.
"""

from typing import TYPE_CHECKING, Any

from ._combinators import Combinator as Combinator
from ._combinators import accumulate as accumulate
from ._combinators import clip_grad_norm as clip_grad_norm
from ._combinators import clip_grad_value as clip_grad_value
from ._combinators import compile as compile
from ._combinators import precision as precision
from ._combinators import randomness as randomness
from ._combinators import skip_nonfinite as skip_nonfinite
from ._custom import CustomStep as CustomStep
from ._custom import accumulation_boundary as accumulation_boundary
from ._custom import custom_step as custom_step
from ._eval_step import EvalStep as EvalStep
from ._eval_step import eval_step as eval_step
from ._precision import PRECISIONS as PRECISIONS
from ._precision import Precision as Precision
from ._precision import parse_precision as parse_precision
from ._schedulers import SchedulerConfig as SchedulerConfig
from ._seed import mix_seed as mix_seed
from ._seed import seed_everything as seed_everything
from ._state import TrainState as TrainState
from ._step import Metrics as Metrics
from ._step import Step as Step
from ._step import TrainStep as TrainStep
from ._step import train_step as train_step
from ._transforms import GradientTransform as GradientTransform
from ._transforms import after_update as after_update
from ._transforms import gradient_transform as gradient_transform
from ._update import apply_update as apply_update
from ._version import __version__ as __version__
from ._wrap import WrappedStep as WrappedStep
from ._wrap import step_combinator as step_combinator

if TYPE_CHECKING:
    from . import checkpoint as checkpoint
    from . import cli as cli
    from . import loggers as loggers
    from . import loop as loop
    from . import testing as testing
    from . import tune as tune
    from ._callbacks._base import Callback as Callback
    from ._callbacks._base import EarlyStopping as EarlyStopping
    from ._callbacks._base import LearningRateMonitor as LearningRateMonitor
    from ._callbacks._throughput import ThroughputMonitor as ThroughputMonitor
    from ._callbacks._timer import Timer as Timer
    from ._checkpointing import load_checkpoint as load_checkpoint
    from ._checkpointing import restore as restore
    from ._checkpointing import save_checkpoint as save_checkpoint
    from ._checkpointing import write_checkpoints as write_checkpoints
    from ._config import FitConfig as FitConfig
    from ._data._loader import TensorLoader as TensorLoader
    from ._data._sources import DataFactory as DataFactory
    from ._data._sources import per_batch_size as per_batch_size
    from ._data._sources import per_epoch as per_epoch
    from ._data._sources import per_validation as per_validation
    from ._data._sources import validation_seed as validation_seed
    from ._data._windows import RandomWindows as RandomWindows
    from ._data._windows import window_offsets as window_offsets
    from ._ema import ema as ema
    from ._ema import ema_state_dict as ema_state_dict
    from ._ema import ema_weights as ema_weights
    from ._metrics import Logged as Logged
    from ._metrics import log as log
    from ._metrics import log_dict as log_dict
    from ._summary import model_summary as model_summary
    from .driver import FitResult as FitResult
    from .driver import estimated_stepping_batches as estimated_stepping_batches
    from .driver import fit as fit
    from .driver import predict as predict
    from .driver import test as test
    from .driver import validate as validate

# The loop, its driver, the data and logging parts and the subpackages load on first
# use (PEP 562): a unit test of a step, or a script that only builds one, never pays
# for them. Name -> module.
_LAZY = {
    "checkpoint": ".checkpoint",
    "cli": ".cli",
    "loggers": ".loggers",
    "loop": ".loop",
    "testing": ".testing",
    "tune": ".tune",
    "Callback": "._callbacks._base",
    "EarlyStopping": "._callbacks._base",
    "LearningRateMonitor": "._callbacks._base",
    "load_checkpoint": "._checkpointing",
    "restore": "._checkpointing",
    "save_checkpoint": "._checkpointing",
    "write_checkpoints": "._checkpointing",
    "FitConfig": "._config",
    "ThroughputMonitor": "._callbacks._throughput",
    "Timer": "._callbacks._timer",
    "FitResult": ".driver",
    "estimated_stepping_batches": ".driver",
    "fit": ".driver",
    "predict": ".driver",
    "test": ".driver",
    "validate": ".driver",
    "TensorLoader": "._data._loader",
    "DataFactory": "._data._sources",
    "per_batch_size": "._data._sources",
    "per_epoch": "._data._sources",
    "per_validation": "._data._sources",
    "validation_seed": "._data._sources",
    "RandomWindows": "._data._windows",
    "window_offsets": "._data._windows",
    "ema": "._ema",
    "ema_state_dict": "._ema",
    "ema_weights": "._ema",
    "Logged": "._metrics",
    "log": "._metrics",
    "log_dict": "._metrics",
    "model_summary": "._summary",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(where, __name__)
    value = module if where == f".{name}" else getattr(module, name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "PRECISIONS",
    "Callback",
    "Combinator",
    "CustomStep",
    "DataFactory",
    "EarlyStopping",
    "EvalStep",
    "FitConfig",
    "FitResult",
    "GradientTransform",
    "LearningRateMonitor",
    "Logged",
    "Metrics",
    "Precision",
    "RandomWindows",
    "SchedulerConfig",
    "Step",
    "TensorLoader",
    "ThroughputMonitor",
    "Timer",
    "TrainState",
    "TrainStep",
    "WrappedStep",
    "accumulate",
    "accumulation_boundary",
    "after_update",
    "apply_update",
    "checkpoint",
    "cli",
    "clip_grad_norm",
    "clip_grad_value",
    "compile",
    "custom_step",
    "ema",
    "ema_state_dict",
    "ema_weights",
    "estimated_stepping_batches",
    "eval_step",
    "fit",
    "gradient_transform",
    "load_checkpoint",
    "log",
    "log_dict",
    "loggers",
    "loop",
    "mix_seed",
    "model_summary",
    "parse_precision",
    "per_batch_size",
    "per_epoch",
    "per_validation",
    "precision",
    "predict",
    "randomness",
    "restore",
    "save_checkpoint",
    "seed_everything",
    "skip_nonfinite",
    "step_combinator",
    "test",
    "testing",
    "train_step",
    "tune",
    "validate",
    "validation_seed",
    "window_offsets",
    "write_checkpoints",
]
