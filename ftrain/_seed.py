"""Seeds: randomness as a function of (seed, counter, rank), and global seeding.

A training step seeds torch's generators from ``mix_seed(seed, micro_step, rank)``
before it runs, so dropout and other in-step randomness depend only on the run
seed, the batch counter and the process rank, never on what ran before. A step
replayed on a clone, or after a resume, draws the same numbers.

Python's ``random`` and numpy are not reseeded per step (a step rarely uses them
and reseeding costs time); use ``step_generator(state)`` or seed them from
``mix_seed`` in your own code if a step needs them.
"""

from __future__ import annotations

import functools
import os
import random
import warnings

import numpy as np
import torch

from ._warn import user_stacklevel

__all__ = ["mix_seed", "seed_everything", "seed_step", "set_deterministic", "worker_init_fn"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Mix integers into one well-spread seed in [0, 2**63).

    Args:
        *values: integers, e.g. (seed, micro_step, rank) or (seed, epoch).

    Returns:
        A deterministic non-negative 63-bit integer.

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    h = 0x2545F4914F6CDD1D
    for v in values:
        h = _splitmix64(h ^ (v & _MASK64))
    return h >> 1


@functools.lru_cache(maxsize=16)
def _seed_round(seed: int) -> int:
    # mix_seed's state after its first value: the same for every step of a run.
    return _splitmix64(0x2545F4914F6CDD1D ^ (seed & _MASK64))


def seed_step(seed: int, micro_step: int, rank: int, cuda: bool) -> None:
    """Seed torch's default generators for one step from (seed, micro_step, rank).

    The seed is ``mix_seed(seed, micro_step, rank)``; on the hot path the seed's round
    is cached and the other two are inlined (a third of the hashing, no calls).
    """
    m = _MASK64
    x = ((_seed_round(seed) ^ (micro_step & m)) + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    x = ((x ^ (x >> 31) ^ (rank & m)) + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    s = (x ^ (x >> 31)) >> 1
    # The CPU default generator seeds from a 64-bit value; CUDA only if it is in use,
    # because `torch.manual_seed` would otherwise initialise every CUDA device.
    torch.default_generator.manual_seed(s)
    if cuda:
        torch.cuda.manual_seed(s)


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python, numpy and torch (all devices) with one seed, as Lightning does.

    Args:
        seed: the seed; None reads ``PL_GLOBAL_SEED``/``FTRAIN_GLOBAL_SEED`` or uses 0.
        workers: also seed DataLoader workers (ftrain sets :func:`worker_init_fn` on
            loaders it rebuilds; the env var ``FTRAIN_SEED_WORKERS`` records it).
        verbose: print the seed used.

    Returns:
        The seed used.

    Raises:
        ValueError: seed outside [0, 2**32 - 1].

    Example:
        >>> seed_everything(7, verbose=False)
        7
    """
    if seed is None:
        env = os.environ.get("FTRAIN_GLOBAL_SEED", os.environ.get("PL_GLOBAL_SEED"))
        seed = int(env) if env is not None else 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed_everything: seed must be an int in [0, 2**32 - 1], got {seed!r}")
    if verbose:
        print(f"Seed set to {seed}")
    os.environ["FTRAIN_GLOBAL_SEED"] = str(seed)
    os.environ["FTRAIN_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def worker_init_fn(worker_id: int, rank: int = 0) -> None:
    """Seed python, numpy and torch in a DataLoader worker from (base seed, worker, rank)."""
    base = torch.initial_seed()
    s = mix_seed(base, worker_id, rank)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


def set_deterministic(deterministic: bool | str | None, benchmark: bool | None) -> None:
    """Apply Lightning's ``deterministic`` and ``benchmark`` flags to torch.

    Args:
        deterministic: True: deterministic algorithms (errors on ops without one);
            "warn": warn instead; False: turn them off; None: leave torch as it is.
        benchmark: ``cudnn.benchmark``; None leaves it, except that deterministic
            runs turn it off.

    Raises:
        ValueError: a value outside these.
    """
    if deterministic not in (None, True, False, "warn"):
        raise ValueError(
            f"deterministic must be None, True, False or 'warn', got {deterministic!r}"
        )
    if benchmark not in (None, True, False):
        raise ValueError(f"benchmark must be None, True or False, got {benchmark!r}")
    if deterministic:
        # Must be set before cuBLAS initialises to take effect.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        torch.backends.cudnn.deterministic = True
        if benchmark:
            warnings.warn(
                "deterministic=True with benchmark=True: cudnn.benchmark may pick "
                "non-deterministic kernels",
                stacklevel=user_stacklevel(),
            )
    elif deterministic is False:
        torch.use_deterministic_algorithms(False)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    elif deterministic:
        torch.backends.cudnn.benchmark = False
