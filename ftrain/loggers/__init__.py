"""Loggers: where the metrics of a run go.

``fit(logger=...)`` takes True (TensorBoard under ``default_root_dir``), False,
one logger or a list (``MLFlowLogger`` needs mlflow). A logger is anything
implementing ``Logger``;
``JSONLinesLogger`` is the short example to copy. tensorboard is imported only
when a ``TensorBoardLogger`` first writes.
"""

from ._base import Logger as Logger
from ._csv import CSVLogger as CSVLogger
from ._jsonl import JSONLinesLogger as JSONLinesLogger
from ._mlflow import MLFlowLogger as MLFlowLogger
from ._select import as_loggers as as_loggers
from ._tensorboard import TensorBoardLogger as TensorBoardLogger
from ._tensorboard import train_val_layout as train_val_layout

__all__ = [
    "CSVLogger",
    "JSONLinesLogger",
    "Logger",
    "MLFlowLogger",
    "TensorBoardLogger",
    "as_loggers",
    "train_val_layout",
]
