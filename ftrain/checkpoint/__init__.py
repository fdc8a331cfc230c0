"""Checkpointing: pure policies (when to save, what to keep), filename templates, safe files.

Policies never touch files; the driver folds :class:`Event` values through
``policy.update`` and carries out the returned :class:`Save` / :class:`Delete`
actions with :func:`atomic_save`, and reads files back with :func:`safe_load`.
"""

from ._async import AsyncWriter as AsyncWriter
from ._async import Job as Job
from ._builders import ModelCheckpoint as ModelCheckpoint
from ._builders import default_policy as default_policy
from ._builders import every as every
from ._builders import last as last
from ._builders import top_k as top_k
from ._events import STAGES as STAGES
from ._events import CheckpointInfo as CheckpointInfo
from ._events import Delete as Delete
from ._events import Event as Event
from ._events import Save as Save
from ._io import FORMAT_VERSION as FORMAT_VERSION
from ._io import CheckpointError as CheckpointError
from ._io import atomic_save as atomic_save
from ._io import clean_temp_files as clean_temp_files
from ._io import list_checkpoints as list_checkpoints
from ._io import safe_load as safe_load
from ._policy import Policy as Policy
from ._policy import union as union
from ._template import MissingMetricError as MissingMetricError
from ._template import format_name as format_name
from ._template import validate_template as validate_template
from ._template import versioned as versioned

__all__ = [
    "FORMAT_VERSION",
    "STAGES",
    "AsyncWriter",
    "CheckpointError",
    "CheckpointInfo",
    "Delete",
    "Event",
    "Job",
    "MissingMetricError",
    "ModelCheckpoint",
    "Policy",
    "Save",
    "atomic_save",
    "clean_temp_files",
    "default_policy",
    "every",
    "format_name",
    "last",
    "list_checkpoints",
    "safe_load",
    "top_k",
    "union",
    "validate_template",
    "versioned",
]
