"""The process environment of a run: one process, or a ``torch.distributed`` group.

``DistEnv`` is the only place ``fit`` touches processes: which device this rank
uses, wrapping the model, agreeing on stop requests, reducing metrics at log
points, barriers, and teardown. A single process is the null case of every verb.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from ._config import FitConfig
from ._state import TrainState

__all__ = ["DistEnv", "setup_distributed"]


class DistEnv:
    """One process: every collective is a no-op."""

    rank = 0
    local_rank = 0
    world_size = 1
    launched_here = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, accelerator: str) -> torch.device:
        if accelerator == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(accelerator)

    def launch(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def wrap(self, state: TrainState, step: Any) -> TrainState:
        return state

    def unwrap(self, state: TrainState) -> TrainState:
        return state

    def barrier(self) -> None:
        return None

    def agree(self, flag: bool, step: int) -> bool:
        return flag

    def reduce_step_values(self, values: dict[str, Any], collector: Any) -> dict[str, Any]:
        return values

    def reduce_epoch_values(self, values: dict[str, Any]) -> dict[str, Any]:
        return values

    def reduce_epoch_logged(
        self, logged: dict[str, Any], epoch_values: Mapping[str, Any]
    ) -> dict[str, Any]:
        return logged

    def teardown(self) -> None:
        return None


def setup_distributed(config: FitConfig) -> DistEnv:
    """The environment for ``config``'s strategy/devices (one process for now)."""
    return DistEnv()


_ = attrs
