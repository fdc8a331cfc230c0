"""``ddp_fork``/``ddp_notebook``, ``find_unused_parameters`` and ``log(sync_dist_group=)``.

A notebook-like script (everything defined inline, lambdas included, no file) runs
through ``python -c``: it cannot be re-run as a script, and its functions cannot be
pickled, so only the fork start method can launch it. Its model adds a branch only
for batches holding a flagged sample, so on some steps a rank leaves the branch's
parameters out of the graph: DDP refuses that unless ``find_unused_parameters``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain._config import split_strategy

DEFINITIONS = """
import torch
import ftrain as ft

class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.main, self.extra = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)

    def forward(self, x):
        out = self.main(x)
        flagged = x[:, :1] > 0.8
        if flagged.any():  # skipped, with its parameters, when no sample is flagged
            out = out + flagged * self.extra(x)
        return out

def make(batch):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 3, generator=g)
    net = Branchy()
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=2)
    return state, ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=batch)
"""

SCRIPT = (
    DEFINITIONS
    + """
import sys
import torch.distributed as dist

out, flags = sys.argv[1], dict(max_epochs=3, devices=2, accelerator="cpu",
                               enable_progress_bar=False, enable_model_summary=False)
groups, losses = {}, []

class Group(ft.Callback):
    def on_fit_start(self, state):
        groups["rank0"] = dist.new_group([0])  # every rank takes part in creating it

    def on_fit_end(self, state, result):
        torch.save(losses, f"{out}.losses{dist.get_rank()}")

def loss_fn(net, batch):
    x, y = batch
    loss = ((net(x) - y) ** 2).mean()
    losses.append(loss.detach().clone())
    return loss, {"own": ft.log(loss, sync_dist=True, sync_dist_group=groups["rank0"]),
                  "all": ft.log(loss, sync_dist=True)}

state, data = make(4)
result = ft.fit(state, ft.train_step(loss_fn), data, strategy="ddp_notebook",
                find_unused_parameters=True, callbacks=[Group()], log_every_n_steps=1,
                logger=ft.loggers.CSVLogger(out), enable_checkpointing=False, **flags)
torch.save(result.state.model.state_dict(), f"{out}.notebook")

state, data = make(4)
result = ft.fit(state, ft.train_step(lambda net, b: ((net(b[0]) - b[1]) ** 2).mean()), data,
                strategy="ddp_fork_find_unused_parameters_true", logger=False,
                enable_checkpointing=False, **flags)
torch.save(result.state.model.state_dict(), f"{out}.alias")

state, data = make(4)
try:
    ft.fit(state, ft.train_step(lambda net, b: ((net(b[0]) - b[1]) ** 2).mean()), data,
           strategy="ddp_fork", logger=False, enable_checkpointing=False, **flags)
except Exception as exc:
    open(f"{out}.refused", "w").write(str(exc))
"""
)


def _reference() -> dict[str, torch.Tensor]:
    """One process reading both ranks' batches at once (batch 8)."""
    space: dict[str, Any] = {}
    exec(DEFINITIONS, space)
    state, data = space["make"](8)
    result = ft.fit(state, ft.train_step(lambda net, b: ((net(b[0]) - b[1]) ** 2).mean()), data,
                    max_epochs=3, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    return result.state.model.state_dict()


def test_strategy_names_and_unused_parameter_suffixes() -> None:
    assert split_strategy("ddp_find_unused_parameters_true") == ("ddp", True)
    assert split_strategy("ddp_notebook_find_unused_parameters_false") == ("ddp_notebook", False)
    assert ft.FitConfig(strategy="ddp_find_unused_parameters_true").strategy.startswith("ddp")
    with pytest.raises(
        ValueError, match="strategy: unknown value 'fsdp_find_unused_parameters_true'"
    ):
        ft.FitConfig(strategy="fsdp_find_unused_parameters_true")


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method")
def test_notebook_script_forks_with_unused_parameters_and_a_group(tmp_path: Path) -> None:
    """Through ``python -c``: ddp_notebook with find_unused_parameters=True and the
    ddp_fork_..._true alias both train to the parameters of one process with batch 8;
    without the flag DDP refuses the skipped branch; a value synced over a group of rank
    0 alone is rank 0's, one synced over all ranks is their mean."""
    out = str(tmp_path / "o")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "SLURM_NTASKS"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, out], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    want = _reference()
    for name in ("notebook", "alias"):
        got = torch.load(f"{out}.{name}", weights_only=True)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=f"{name} {key}")
    refused = Path(f"{out}.refused").read_text()
    assert "find_unused_parameters" in refused

    rank0, rank1 = (torch.load(f"{out}.losses{r}", weights_only=True) for r in (0, 1))
    [metrics] = Path(out).rglob("metrics.csv")
    with open(metrics, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("own")]
    assert len(rows) == len(rank0) == 6
    for row, a, b in zip(rows, rank0, rank1, strict=True):
        assert float(row["own"]) == pytest.approx(a.item(), rel=1e-6)
        assert float(row["all"]) == pytest.approx((a.item() + b.item()) / 2, rel=1e-6)


NOTEBOOK_CELLS = [
    DEFINITIONS,
    "loss_fn = lambda net, b: ((net(b[0]) - b[1]) ** 2).mean()  # defined in the kernel",
    """state, data = make(4)
result = ft.fit(state, ft.train_step(loss_fn), data, strategy="ddp_notebook", devices=2,
                accelerator="cpu", find_unused_parameters=True, max_epochs=3, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False)
print(result.state.step)""",
    "torch.save(result.state.model.state_dict(), OUT)",
]


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method")
def test_a_real_notebook_trains_with_ddp_notebook(tmp_path: Path) -> None:
    """A Jupyter notebook run cell by cell in a real IPython kernel (nbclient): fit with
    strategy="ddp_notebook" forks the kernel, trains on two ranks, and the next cell
    holds rank 0's final state, equal to one process with the batch of both ranks."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    out = tmp_path / "notebook.pt"
    cells = [f"OUT = {str(out)!r}", *NOTEBOOK_CELLS]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    env = {key: os.environ[key] for key in os.environ if key not in ("RANK", "WORLD_SIZE")}
    client.execute(env=env)
    printed = "".join(o.get("text", "") for o in notebook.cells[3].outputs)
    assert printed.strip() == "6"  # 3 epochs of 2 batches a rank
    got = torch.load(out, weights_only=True)
    for key, value in _reference().items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)
