"""FSDP2 over a mapping of models (a GAN's generator and discriminator), 2 gloo processes.

The jobs run ``tests/dist_scripts/gan.py``: each model of ``{"gen": G, "disc": D}`` is
sharded on its own, sharded checkpoints round-trip, and the runs match one process
reading both ranks' batches.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.driver._rundir import RunClaim, reservation_marker

SCRIPT = Path(__file__).parent / "dist_scripts" / "gan.py"
STEPS = 9  # 1.5 epochs of 6 batches of 4 per rank
FLAGS = ["--devices", "2", "--strategy", "fsdp", "--accelerator", "cpu", "--process_timeout", "60"]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("dist_gan", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gan = _load_script()


def run(root: Path, out: str, *args: str, fails: bool = False) -> list[dict[str, Any]]:
    """A 2-rank FSDP job in ``root``; each rank's output (none if it ``fails``)."""
    root.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    command = [sys.executable, str(SCRIPT), "--out", str(root / out), "--default_root_dir"]
    proc = subprocess.run(
        [*command, str(root), *FLAGS, *args], env=env, capture_output=True, text=True, timeout=150
    )
    if fails:
        assert proc.returncode != 0 and "crash after step" in proc.stderr, proc.stderr[-6000:]
        return []
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return [torch.load(root / f"{out}.rank{r}", weights_only=True) for r in (0, 1)]


def test_each_model_is_sharded_and_a_sharded_resume_is_exact(tmp_path: Path) -> None:
    """strategy="fsdp" with {"gen": G, "disc": D}: both are FSDP2 modules with sharded
    parameters while training; a run that crashes after step 5, mid-epoch (sharded
    checkpoints every 2 steps: both models and both Adams in one shard folder), resumed
    in fresh processes from step 4, ends bit-identical to an uninterrupted run; the
    returned models are plain again, equal on both ranks, and equal (float tolerance)
    to one process reading both ranks' batches."""
    whole = run(tmp_path / "whole", "o", "--max_steps", str(STEPS))
    cut = tmp_path / "cut"
    flags = ["--max_steps", str(STEPS), "--ckpt-every", "2"]
    run(cut, "first", *flags, "--crash-at", "5", fails=True)
    resumed = run(cut, "resumed", *flags, "--resume")
    for out in (*whole, *resumed):
        assert out["sharded"] == {"gen": True, "disc": True}, out["sharded"]
        assert out["plain"] == {"gen": "Sequential", "disc": "Sequential"}
    assert resumed[0]["step"] == whole[0]["step"] == STEPS
    for out in (*resumed, whole[1]):
        assert out["params"].keys() == whole[0]["params"].keys()
        for key, value in whole[0]["params"].items():
            assert torch.equal(out["params"][key], value), key
    assert resumed[0]["lr"] == whole[0]["lr"] == [1e-2 * 0.5**3]  # the schedule resumed too

    folder = cut / "checkpoints"
    payload = ft.load_checkpoint(folder / "epoch=0-step=4.ckpt")
    assert "model" not in payload and "optimizer" not in payload
    shards = folder / payload["sharded"]
    from torch.distributed.checkpoint import FileSystemReader

    keys = FileSystemReader(str(shards)).read_metadata().state_dict_metadata.keys()
    for part in ("model.gen.0.weight", "model.disc.2.bias", "optimizer.state.gen.0.weight.exp_avg"):
        assert part in keys, sorted(keys)[:8]

    reference = ft.fit(
        **gan.build(8),
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    for name, model in reference.state.model.items():
        for key, value in model.state_dict().items():
            got = whole[0]["params"][f"{name}.{key}"]
            torch.testing.assert_close(got, value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["a.b", ""])
def test_model_names_that_cannot_key_a_checkpoint_are_refused(name: str) -> None:
    """A mapping name with a '.' (or an empty one) cannot prefix the sharded checkpoint's
    keys: refused before anything is sharded, naming the strategy and the name."""
    from ftrain.driver._fsdp import _model

    state = ft.TrainState.create({name: torch.nn.Linear(2, 1)}, None)
    with pytest.raises(ValueError, match=r"strategy='fsdp'.*names of a mapping"):
        _model(state)


class _Recording(torch.nn.Linear):
    """A module with FSDP2's switch, recording each call (the step only calls it)."""

    def __init__(self) -> None:
        super().__init__(2, 2)
        self.calls: list[bool] = []

    def set_requires_gradient_sync(self, on: bool) -> None:
        self.calls.append(on)


def test_accumulation_switches_gradient_sync_on_every_model_of_a_mapping() -> None:
    """train_step with accumulate 2 over {"gen", "disc"} (FSDP2 modules): each model's
    gradient sync is off on accumulating batches and on at each window's last batch."""
    models = {"gen": _Recording(), "disc": _Recording()}
    opt = torch.optim.SGD([p for m in models.values() for p in m.parameters()], lr=0.1)
    state = ft.TrainState.create(models, opt)

    def loss(m: Any, batch: torch.Tensor) -> torch.Tensor:
        return m["disc"](m["gen"](batch)).pow(2).mean()

    step = ft.train_step(loss, accumulate=2)
    for _ in range(4):
        state, _ = step(state, torch.randn(3, 2))
    assert models["gen"].calls == models["disc"].calls == [False, True, False, True]
    assert state.step == 2


def test_a_name_another_live_run_reserved_is_re_decided_before_the_ranks_share_it(
    tmp_path: Path,
) -> None:
    """Under FSDP every rank writes rank 0's decision. A name another live run has
    reserved in the shared folder is re-decided (-v1) by rank 0 before the decision is
    shared, so the ranks agree (no hang in the collective save) and the other run's
    reservation stays."""
    folder = tmp_path / "checkpoints"
    folder.mkdir(parents=True)
    other = RunClaim()
    other.hold(str(folder), "default_root_dir")
    marker = Path(reservation_marker(str(folder / "epoch=0-step=2.ckpt")))
    marker.write_text(other.run_id)
    try:
        out = run(tmp_path, "o", "--max_steps", "2", "--ckpt-every", "2")
    finally:
        other.release()
    assert out[0]["step"] == 2
    names = sorted(n for n in os.listdir(folder) if n.endswith(".ckpt"))
    assert names == ["epoch=0-step=2-v1.ckpt", "last.ckpt"], names
    payload = ft.load_checkpoint(folder / "epoch=0-step=2-v1.ckpt")
    assert (folder / payload["sharded"]).is_dir()
    assert marker.read_text() == other.run_id
