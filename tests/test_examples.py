"""The examples run end to end with tiny settings, and their central claims hold."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import ftrain as ft

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if not EXAMPLES.is_dir():
    pytest.skip("the examples are not part of this tree", allow_module_level=True)

QUIET = ["--enable_progress_bar", "false", "--enable_model_summary", "false"]


def run_example(name: str, args: list[str], cwd: Path) -> str:
    """Run ``examples/<name>`` in a fresh interpreter where warnings are errors."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-W", "error::UserWarning", "-W", "error::RuntimeWarning"]
    done = subprocess.run(
        [*command, str(EXAMPLES / name), *args, *QUIET],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_image_classifier(tmp_path: Path) -> None:
    """Trains with validation, keeps top-3 by val_loss, and tests the best file."""
    out = run_example(
        "image_classifier.py",
        ["--samples", "160", "--max_epochs", "4", "--log_every_n_steps", "2"],
        tmp_path,
    )

    assert "best checkpoint: " in out and "test accuracy of the best checkpoint" in out
    files = sorted((tmp_path / "runs/shapes/ftrain_logs/version_0/checkpoints").glob("*.ckpt"))
    assert len(files) == 3
    best = out.split("best checkpoint: ")[1].split(" (")[0]
    assert (tmp_path / best).exists()


@pytest.mark.slow
def test_char_lm(tmp_path: Path) -> None:
    """bf16-mixed, accumulation, clipping and a per-step schedule; prints a sample."""
    tiny = "--max_epochs 1 --limit_train_batches 4 --limit_val_batches 1 --d_model 16 --layers 1"
    tiny += " --heads 2 --sample_chars 20 --log_every_n_steps 1"
    out = run_example("char_lm.py", tiny.split(), tmp_path)

    assert "train_step(lm_loss, accumulate=2, clip_norm=1.0, precision='bf16-mixed')" in out
    assert "after 2 optimizer steps" in out


def test_char_lm_schedule() -> None:
    """The learning-rate factor warms up linearly, then decays by a cosine to 10%."""
    factor = load_example("char_lm.py").warmup_cosine(warmup=4, total=20)

    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(20) == pytest.approx(0.1)
    assert factor(12) == pytest.approx(0.55)


@pytest.mark.slow
def test_finetune_frozen(tmp_path: Path) -> None:
    """Only the head trains; the script itself asserts the backbone did not move."""
    out = run_example(
        "finetune_frozen.py",
        ["--max_epochs", "1", "--limit_train_batches", "8", "--log_every_n_steps", "2"],
        tmp_path,
    )

    assert "backbone weights and BatchNorm statistics unchanged: True" in out


@pytest.mark.slow
def test_gan(tmp_path: Path) -> None:
    """Two models and two optimizers in one custom step; one state.step per batch."""
    out = run_example(
        "gan.py", ["--max_epochs", "1", "--samples", "640", "--log_every_n_steps", "2"], tmp_path
    )

    assert "after 10 steps" in out and "checkpoint (both models, both optimizers)" in out


def test_gan_step_is_reproducible() -> None:
    """The noise inside the step comes from (seed, micro_step, rank): replays agree."""
    from ftrain.testing import check_step

    gan = load_example("gan.py")
    torch.manual_seed(0)
    models = {"G": gan.mlp(gan.Z, 2), "D": gan.mlp(2, 1)}
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    state = ft.TrainState.create(models, optimizers, seed=0)

    metrics = check_step(ft.custom_step(gan.gan_step), state, gan.real_points(16, seed=0))

    assert {"d_loss", "g_loss"} == set(metrics)


@pytest.mark.slow
def test_ensemble_vmap(tmp_path: Path) -> None:
    """N members train at once and the ensemble is evaluated."""
    out = run_example(
        "ensemble_vmap.py",
        ["--members", "3", "--max_epochs", "1", "--samples", "256", "--log_every_n_steps", "2"],
        tmp_path,
    )

    assert "3 members, 4 steps" in out


def test_ensemble_equals_members_trained_alone() -> None:
    """One vmapped step over stacked parameters = each member's own clipped Adam step."""
    ens = load_example("ensemble_vmap.py")
    torch.manual_seed(0)
    members = [ens.member() for _ in range(3)]
    alone = [(m, torch.optim.Adam(m.parameters(), lr=1e-2)) for m in members]
    model = ens.Ensemble(members)
    state = ft.TrainState.create(model, torch.optim.Adam(model.parameters(), lr=1e-2))
    step = ft.custom_step(ens.ensemble_step(max_norm=0.5))
    batches = [ens.spirals(32, seed=s) for s in range(3)]

    for x, y in batches:
        state, _ = step(state, (x, y))
        for m, opt in alone:
            torch.nn.functional.cross_entropy(m(x), y).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            opt.step()
            opt.zero_grad()

    for i, (m, _) in enumerate(alone):
        for stacked, p in zip(state.model.stacked, m.parameters(), strict=True):
            torch.testing.assert_close(stacked[i], p, rtol=1e-5, atol=1e-6)


def test_demo_learns_and_prints_a_working_tensorboard_command(tmp_path: Path) -> None:
    """The demo reaches well above chance, logs 16 points per epoch, and its printed
    TensorBoard command runs as printed (``--inspect`` reads the run's event files)."""
    import shlex

    out = run_example("demo.py", ["--max_epochs", "2", "--samples", "1024"], tmp_path)
    accuracy = float(out.split("final validation accuracy: ")[1].split()[0])
    assert accuracy > 0.6
    command = out.split("TensorBoard: ")[1].splitlines()[0]
    argv = shlex.split(command)
    assert os.path.isabs(argv[0]) and argv[1:] == [
        "--logdir", str(tmp_path / "runs/demo/ftrain_logs"),
    ]  # fmt: skip
    shown = subprocess.run(
        [*argv, "--inspect"], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert shown.returncode == 0, shown.stderr
    report = shown.stdout + shown.stderr
    assert "version_0" in report and "custom_scalars__config__" in report
    scalars = report.split("Event statistics")[1].split("scalars")[1].split("tensor")[0]
    # 16 batches of 64 per epoch, logged every 4 steps: 8 points over 2 epochs.
    assert " ".join(scalars.split()).startswith("first_step 3 last_step 31 max_step 31")
    assert "num_steps 8" in " ".join(scalars.split())


GPT_TINY = [
    "--max_steps", "12", "--val_check_interval", "4", "--eval_batches", "2", "--ckpt_every", "2",
    "--block_size", "16", "--batch_size", "8", "--d_model", "16", "--layers", "1", "--heads", "2",
]  # fmt: skip
KILL_AT = """
import os, runpy, signal, sys
import ftrain as ft

class KillAt(ft.Callback):
    def on_train_batch_end(self, state, **_):
        if state.micro_step == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)

fit = ft.fit
ft.fit = lambda *a, **k: fit(*a, **{**k, "callbacks": [KillAt()]})
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_gpt_pretrain_resumes_exactly_after_kill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Iteration-based pretraining on random windows of a memmapped token file: SIGKILL
    after step 7 (checkpoint of step 6 on disk), then --resume: the final weights are the
    uninterrupted run's, bit for bit, with fresh validation windows at steps 4, 8, 12."""
    gpt = load_example("gpt_pretrain.py")
    reference = gpt.main([*GPT_TINY, *QUIET, "--default_root_dir", str(tmp_path / "ref")])
    expected = capsys.readouterr().out.splitlines()[-1]
    assert reference.state.step == 12 and expected.startswith("weights sha256 ")

    root = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": "7"}
    # Synchronous writes: a SIGKILL loses a background write still in flight, and this test
    # checks that the step-6 checkpoint is the one resumed.
    script = [str(EXAMPLES / "gpt_pretrain.py"), *GPT_TINY, *QUIET, "--default_root_dir", root]
    script.append("--no-async_checkpointing")
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT, *script], env=env, capture_output=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in Path(root).glob("**/*.ckpt")] == ["epoch=0-step=6.ckpt"]
    resumed = gpt.main([*GPT_TINY, *QUIET, "--default_root_dir", root, "--resume"])
    assert resumed.state.step == 12
    assert capsys.readouterr().out.splitlines()[-1] == expected
    assert resumed.metrics["val_loss"] == reference.metrics["val_loss"]


def test_lr_find_example_checks_matplotlib_before_the_search(tmp_path: Path) -> None:
    """Without matplotlib the lr_find example stops at once with a usage error naming the
    package, before any training step; with it, the plot is written."""
    hide = (
        "import sys, runpy; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['lr_find.py', 'out.png']; runpy.run_path({str(EXAMPLES / 'lr_find.py')!r}, "
        "run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "needs matplotlib: pip install matplotlib" in done.stderr
    assert "steps" not in done.stdout and not (tmp_path / "out.png").exists()
    pytest.importorskip("matplotlib")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "lr_find.py"), "out.png", "--num_training", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "saved out.png" in done.stdout and (tmp_path / "out.png").stat().st_size > 0
