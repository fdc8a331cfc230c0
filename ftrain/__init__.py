"""ftrain: functional, compositional training for PyTorch.

A training run is a fold of a step function over batches:
``state, metrics = step(state, batch)``. Combinators build bigger steps from
smaller ones; ``fit`` drives the fold with Lightning's Trainer controls.
"""

from ._combinators import Combinator as Combinator
from ._combinators import accumulate as accumulate
from ._combinators import clip_grad_norm as clip_grad_norm
from ._combinators import clip_grad_value as clip_grad_value
from ._combinators import compile as compile
from ._combinators import precision as precision
from ._combinators import skip_nonfinite as skip_nonfinite
from ._precision import PRECISIONS as PRECISIONS
from ._seed import mix_seed as mix_seed
from ._seed import seed_everything as seed_everything
from ._state import SchedulerConfig as SchedulerConfig
from ._state import TrainState as TrainState
from ._step import EvalStep as EvalStep
from ._step import Metrics as Metrics
from ._step import Step as Step
from ._step import TrainStep as TrainStep
from ._step import custom_step as custom_step
from ._step import eval_step as eval_step
from ._step import train_step as train_step

__version__ = "0.1.0"

__all__ = [
    "PRECISIONS",
    "Combinator",
    "EvalStep",
    "Metrics",
    "SchedulerConfig",
    "Step",
    "TrainState",
    "TrainStep",
    "accumulate",
    "clip_grad_norm",
    "clip_grad_value",
    "compile",
    "custom_step",
    "eval_step",
    "mix_seed",
    "precision",
    "seed_everything",
    "skip_nonfinite",
    "train_step",
]
