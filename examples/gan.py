"""A GAN on 2-D points: two models, two optimizers, one hand-written step.

Run: python examples/gan.py [--max_epochs 20] [any fit flag]

The real data are points around a ring of 8 modes. The state holds a mapping of
models {"G": generator, "D": discriminator} and one of optimizers; the step,
wrapped by `ft.custom_step`, updates D then G on each batch. The wrapper seeds
torch's generators from (seed, micro_step, rank), so the noise `z` drawn inside the
step is reproducible and a resumed run draws the same noise; it also advances
`state.step` by one per batch (Lightning's manual optimisation counts both
optimizers' steps, 2 per batch). Validation measures how far generated points lie
from the ring and how many of its 8 modes they reach.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import ftrain as ft

Z = 8
MODES = torch.tensor([[math.cos(a), math.sin(a)] for a in torch.arange(8) * (math.pi / 4)]) * 2


def real_points(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MODES[torch.randint(0, 8, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)


def mlp(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
        nn.Linear(64, outputs),
    )  # fmt: skip


def gan_step(state: ft.TrainState, real: torch.Tensor) -> tuple[ft.TrainState, dict]:
    G, D = state.model["G"], state.model["D"]
    opt_g, opt_d = state.optimizer["G"], state.optimizer["D"]
    fake = G(torch.randn(real.shape[0], Z))  # noise seeded from (seed, micro_step, rank)
    ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)

    # Discriminator: real -> 1, fake -> 0 (no gradient into G).
    d_loss = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(
        D(fake.detach()), zeros
    )
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()

    # Generator: make D call the fakes real (D's gradients from this pass are discarded).
    g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return state, {"d_loss": ft.log(d_loss, prog_bar=True), "g_loss": ft.log(g_loss, prog_bar=True)}


def sample_quality(models: dict, z: torch.Tensor) -> dict:
    points = models["G"](z)
    dist = torch.cdist(points, MODES)  # [n, 8]
    nearest = dist.min(1)
    hit = torch.zeros(8).index_add_(0, nearest.indices, (nearest.values < 0.5).float())
    return {
        "val_ring_dist": (points.norm(dim=1) - 2).abs().mean(),
        "val_modes": ft.log((hit > 0).float().sum(), prog_bar=True),
    }


def main(argv: list[str] | None = None) -> ft.FitResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-3)
    config, args = ft.cli.parse_config(argv, parser=parser)
    # Our defaults apply to the flags that neither the command line nor a file set.
    unset = ft.FitConfig()
    defaults = {"max_epochs": 20, "log_every_n_steps": 20, "default_root_dir": "runs/gan"}
    config = config.replace(
        **{k: v for k, v in defaults.items() if getattr(config, k) == getattr(unset, k)}
    )
    torch.set_num_threads(1)  # models this small run best on one core
    ft.seed_everything(0, verbose=False)

    models = {"G": mlp(Z, 2), "D": mlp(2, 1)}
    optimizers = {
        name: torch.optim.Adam(m.parameters(), lr=args.lr, betas=(0.5, 0.999))
        for name, m in models.items()
    }
    state = ft.TrainState.create(models, optimizers, seed=0)
    noise = torch.randn(1024, Z, generator=torch.Generator().manual_seed(5))

    result = ft.fit(
        state,
        ft.custom_step(gan_step),
        ft.TensorLoader(real_points(args.samples, seed=1), batch_size=64),
        val_step=ft.eval_step(sample_quality),
        val_data=ft.TensorLoader(noise, batch_size=1024, shuffle=False),
        hparams=vars(args),
        config=config,
    )
    m = result.metrics
    print(
        f"after {result.state.step} steps: generated points lie {m['val_ring_dist']:.3f} from the "
        f"ring on average and reach {m['val_modes']:.0f} of its 8 modes"
    )
    print(f"checkpoint (both models, both optimizers): {result.last_checkpoint}")
    return result


if __name__ == "__main__":
    main()
