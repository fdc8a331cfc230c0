"""Strict test settings: one torch thread per process, deterministic kernels."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread_and_fresh_seed() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_global_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    # seed_everything sets these for the process; each test starts without them.
    for name in ("FTRAIN_GLOBAL_SEED", "PL_GLOBAL_SEED", "FTRAIN_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)
