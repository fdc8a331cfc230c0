"""An ensemble of N small networks trained at once, as one vectorised step.

Run: python examples/ensemble_vmap.py [--members 8] [--max_epochs 15] [any fit flag]

`torch.func.stack_module_state` stacks the parameters of N networks of one
architecture along a new leading dimension; `torch.vmap` runs the N networks,
and their per-member gradients, as one batched computation. The state's model is
an `Ensemble` module that owns the stacked parameters, so the optimizer,
checkpoints and `fit` see an ordinary module. The step is hand-written with
`ft.custom_step`: each member gets its own gradient, clipped by its own norm, and
the metrics report the spread between members. Adam acts element by element, so
one optimizer over the stacked tensors trains N independent networks exactly.
A class-based trainer, one model and one loss per module, has no place for this.

Not for DDP or FSDP: their gradient hooks do not survive function transforms.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state

import ftrain as ft


def spirals(n: int, seed: int, noise: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=g)
    t = torch.rand(n, generator=g) * 3 * math.pi + 0.5
    angle = t + math.pi * label
    points = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], 1) / 3
    return points + noise * torch.randn(n, 2, generator=g), label


def member() -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2)
    )


class Ensemble(nn.Module):
    """N networks of one architecture; parameter `i` of `stacked` holds all N copies."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        params, _ = stack_module_state(members)  # these small networks have no buffers
        self.names = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in params.values())
        # The template: an architecture on the meta device, kept out of the module tree
        # so that it adds nothing to parameters() or to checkpoints.
        self._template = (copy.deepcopy(members[0]).to("meta"),)

    def member_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._template[0], params, (x,))

    def params(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.stacked, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member: [members, batch, classes]."""
        return torch.vmap(self.member_forward, in_dims=(0, None))(self.params(), x)


def ensemble_step(max_norm: float):
    def step(state: ft.TrainState, batch: tuple[torch.Tensor, torch.Tensor]):
        model, x, y = state.model, *batch

        def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(model.member_forward(params, x), y)

        detached = {k: v.detach() for k, v in model.params().items()}
        grads, losses = torch.vmap(grad_and_value(loss))(detached)  # one gradient per member
        # Clip each member by its own gradient norm (one global norm would couple them).
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p, g in zip(model.stacked, grads.values(), strict=True):
            p.grad = g * scale.view(-1, *[1] * (g.dim() - 1))
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        return state, {
            "loss": ft.log(losses.mean(), prog_bar=True),
            "loss_spread": losses.max() - losses.min(),
            "grad_norm_max": norms.max(),
        }

    return step


def evaluate(model: Ensemble, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = batch
    logits = model(x)  # [members, batch, classes]
    member_acc = (logits.argmax(-1) == y).float().mean(1)
    ensemble = logits.softmax(-1).mean(0).argmax(-1)
    return {
        "val_acc_member_mean": member_acc.mean(),
        "val_acc_ensemble": ft.log((ensemble == y).float().mean(), prog_bar=True),
    }


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--max_norm", type=float, default=1.0)
    config, args = ft.cli.parse_config(argv, parser=parser)
    # Our defaults apply to the flags that neither the command line nor a file set.
    unset = ft.FitConfig()
    defaults = {"max_epochs": 15, "log_every_n_steps": 16, "default_root_dir": "runs/ensemble"}
    config = config.replace(
        **{k: v for k, v in defaults.items() if getattr(config, k) == getattr(unset, k)}
    )
    torch.set_num_threads(1)  # models this small run best on one core
    ft.seed_everything(0, verbose=False)

    model = Ensemble([member() for _ in range(args.members)])  # N different initialisations
    state = ft.TrainState.create(model, torch.optim.Adam(model.parameters(), lr=args.lr), seed=0)
    x, y = spirals(args.samples, seed=1)
    xv, yv = spirals(1024, seed=2)

    result = ft.fit(
        state,
        ft.custom_step(ensemble_step(args.max_norm)),
        ft.TensorLoader(x, y, batch_size=64),
        val_step=ft.eval_step(evaluate),
        val_data=ft.TensorLoader(xv, yv, batch_size=1024, shuffle=False),
        hparams=vars(args),
        config=config,
    )
    m = result.metrics
    print(
        f"{args.members} members, {result.state.step} steps: mean member accuracy "
        f"{m['val_acc_member_mean']:.3f}, ensemble accuracy {m['val_acc_ensemble']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
