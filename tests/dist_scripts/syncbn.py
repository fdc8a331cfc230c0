"""Two ranks with BatchNorm: with sync_batchnorm the statistics cover both ranks' batches."""

from __future__ import annotations

import argparse
import os

import torch

import ftrain as ft

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
ft.cli.add_fit_args(parser)
args = parser.parse_args()
config = ft.cli.config_from_args(args)

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.0))
data = torch.arange(48, dtype=torch.float32).reshape(16, 3) / 10
loader = ft.TensorLoader(data, batch_size=4, shuffle=False)
result = ft.fit(
    state,
    ft.train_step(lambda m, b: m(b).pow(2).mean()),
    loader,
    max_steps=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    config=config,
)
rank = int(os.environ.get("RANK", "0"))
torch.save(result.state.model[1].running_mean.detach().cpu().clone(), f"{args.out}.rank{rank}")
