"""Seeds: randomness as a function of (seed, counter, rank), and global seeding.

A training step seeds torch's generators from ``mix_seed(seed, micro_step, rank)``
before it runs, so dropout and other in-step randomness depend only on the run
seed, the batch counter and the process rank, never on what ran before. A step
replayed on a clone, or after a resume, draws the same numbers. The generators'
states from before the step are put back after it (``enter_step``/``leave_step``),
so code outside the step (a data iterator drawing from torch's global generator)
draws what it would draw without ftrain. ``randomness="ambient"`` steps draw from the
global generators instead, as a hand-written loop does.

``rng_states``/``set_rng_states`` capture and restore the global generators (torch
CPU and CUDA, python ``random``, numpy) for checkpoints.

Python's ``random`` and numpy are not reseeded per step (a step rarely uses them
and reseeding costs time); use ``step_generator(state)`` or seed them from
``mix_seed`` in your own code if a step needs them.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ._warn import user_stacklevel

__all__ = [
    "RANDOMNESS",
    "STEP_HOLD",
    "SkipFirst",
    "StepHold",
    "ambient_epoch",
    "check_randomness",
    "enter_step",
    "global_seed",
    "leave_step",
    "mix_seed",
    "rng_states",
    "seed_everything",
    "seed_step",
    "set_deterministic",
    "set_rng_states",
    "worker_init_fn",
]

RANDOMNESS = ("step", "ambient")

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


_BLOCK = 1024  # step seeds computed together, vectorised (one hash ~0.02 µs, not ~2)
_CPU = torch.default_generator


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    # _splitmix64 on uint64 arrays: numpy's unsigned arithmetic wraps modulo 2**64.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=8)
def _seed_block(seed: int, rank: int, block: int) -> list[int]:
    """``mix_seed(seed, m, rank)`` for the micro-steps ``m`` of one block of _BLOCK."""
    first = _splitmix64(0x2545F4914F6CDD1D ^ (seed & _MASK64))
    steps = np.arange(block * _BLOCK, (block + 1) * _BLOCK, dtype=np.uint64)
    x = _splitmix64_array(np.uint64(first) ^ steps)
    x = _splitmix64_array(x ^ np.uint64(rank & _MASK64))
    out: list[int] = (x >> np.uint64(1)).tolist()
    return out


def step_seed(seed: int, micro_step: int, rank: int) -> int:
    """``mix_seed(seed, micro_step, rank)``, from a cached block of consecutive steps."""
    if not 0 <= micro_step < 1 << 62:
        return mix_seed(seed, micro_step, rank)
    return _seed_block(seed, rank, micro_step // _BLOCK)[micro_step % _BLOCK]


def seed_step(seed: int, micro_step: int, rank: int, cuda: bool) -> None:
    """Seed torch's default generators for one step from (seed, micro_step, rank).

    The seed is ``mix_seed(seed, micro_step, rank)`` (:func:`step_seed`).
    """
    s = step_seed(seed, micro_step, rank)
    # The CPU default generator seeds from a 64-bit value; CUDA only if it is in use,
    # because `torch.manual_seed` would otherwise initialise every CUDA device.
    _CPU.manual_seed(s)
    if cuda:
        torch.cuda.manual_seed(s)


def _generator_states(cuda: bool) -> Any:
    saved: Any = _CPU.get_state()
    return (saved, torch.cuda.get_rng_state()) if cuda else saved


def _put_back(saved: Any) -> None:
    if isinstance(saved, tuple):
        _CPU.set_state(saved[0])
        torch.cuda.set_rng_state(saved[1])
    else:
        _CPU.set_state(saved)


class StepHold:
    """The caller's generator states, saved once for steps run back to back.

    A driver that runs seeded steps one after another with only its own code between
    them (code that draws no random numbers) sets ``on`` just before calling a step.
    That step's :func:`enter_step` then saves the global generators' states only if
    none are held yet, and its :func:`leave_step` puts nothing back: saving and
    restoring the same states around every step costs ~3 µs a step and changes
    nothing anyone can see. The driver calls :meth:`release` before any other code
    runs (callbacks, validation, logging, checkpoints, the data of another loader, an
    error's handling); the generators are then exactly as per-step restores leave
    them. ``on`` is consumed by the first ``enter_step``, so steps inside the step
    save and restore as usual. There is one hold per process, as there is one global
    generator: only one thread may run held steps at a time.
    """

    __slots__ = ("cuda", "on", "saved")

    def __init__(self) -> None:
        self.on = False
        self.saved: Any = None
        self.cuda = False

    def release(self) -> None:
        """Put back the held states, if any; the next held step saves them anew."""
        self.on = False
        if self.saved is not None:
            saved, self.saved = self.saved, None
            _put_back(saved)


STEP_HOLD = StepHold()
_HELD = object()  # what a held enter_step returns: its leave_step puts nothing back


def enter_step(seed: int, micro_step: int, rank: int, cuda: bool) -> Any:
    """Save the global torch generators' states, then seed them for one step."""
    hold = STEP_HOLD
    if hold.on:
        hold.on = False
        if hold.saved is not None and hold.cuda != cuda:
            hold.release()
        if hold.saved is None:
            hold.saved, hold.cuda = _generator_states(cuda), cuda
        saved: Any = _HELD
    else:
        saved = _generator_states(cuda)
    if cuda or not 0 <= micro_step < 1 << 62:
        seed_step(seed, micro_step, rank, cuda)
    else:  # seed_step's CPU path, inlined: it runs every step
        _CPU.manual_seed(_seed_block(seed, rank, micro_step // _BLOCK)[micro_step % _BLOCK])
    return saved


def leave_step(saved: Any) -> None:
    """Put back the states :func:`enter_step` saved (a held step's stay held)."""
    if saved is not _HELD:
        _put_back(saved)


def check_randomness(_: Any, __: Any, value: Any) -> None:
    """Validate a ``randomness`` setting."""
    if value not in RANDOMNESS:
        raise ValueError(f"randomness must be 'step' or 'ambient', got {value!r}")


def rng_states() -> dict[str, Any]:
    """The global generators' states: torch CPU, CUDA (if initialised), python, numpy.

    Plain containers and tensors only, so a ``weights_only`` load reads them back.
    """
    np_state = np.random.get_state(legacy=False)
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: Mapping[str, Any] | None) -> None:
    """Restore what :func:`rng_states` captured (missing parts are left alone)."""
    if not states:
        return
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        np_state = states["numpy"]
        np.random.set_state(
            (
                "MT19937",
                np_state["key"].cpu().numpy().astype(np.uint32),
                int(np_state["pos"]),
                int(np_state["has_gauss"]),
                float(np_state["gauss"]),
            )
        )
    if "cuda" in states and torch.cuda.is_available():
        cuda = [s.cpu() for s in states["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class SkipFirst:
    """An iterable without its first ``skip`` batches (consumed); ``len`` is the full one."""

    def __init__(self, data: Iterable[Any], skip: int) -> None:
        self.data, self.skip = data, skip

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.data), self.skip, None)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]


def ambient_epoch(data: Iterable[Any], epoch: int, skip: int) -> Iterable[Any]:
    """A user's training data as a hand loop iterates it (``randomness="ambient"``).

    A ``DataLoader`` keeps its own sampler and shuffling, which draw from the global
    generator as they do in a hand loop; samplers with ``set_epoch`` get the epoch. A
    mid-epoch resume loads and discards the batches already consumed.
    """
    for obj in (getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
    return data if skip == 0 else SkipFirst(data, skip)


def global_seed() -> int:
    """The seed ``seed_everything`` set (``FTRAIN_GLOBAL_SEED``, else Lightning's
    ``PL_GLOBAL_SEED``), or 0: the run seed of states created without one.

    Example:
        >>> seed_everything(3, verbose=False), global_seed()
        (3, 3)
    """
    env = os.environ.get("FTRAIN_GLOBAL_SEED", os.environ.get("PL_GLOBAL_SEED"))
    return int(env) if env is not None and env.strip().isdigit() else 0


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
