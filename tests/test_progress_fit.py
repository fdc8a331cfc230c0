"""The progress bar as ``fit`` drives it: on a terminal, into a stream, and redirected to files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ftrain as ft
import ftrain.driver._progress as progress

SCRIPT = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    import ftrain as ft

    def loss_fn(model, batch):
        loss = F.mse_loss(model(batch[0]), batch[1])
        return loss, {"acc": ft.log(1 - loss, prog_bar=True), "hidden": loss}

    def val_fn(model, batch):
        return {"val_acc": ft.log(1 - F.mse_loss(model(batch[0]), batch[1]), prog_bar=True)}

    torch.manual_seed(0)
    x = torch.randn(32, 2)
    model = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.05))
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=4)
    result = ft.fit(state, ft.train_step(loss_fn), data, val_step=ft.eval_step(val_fn),
                    val_data=data, max_epochs=2, logger=False, enable_checkpointing=False)
    print(f"DONE val_acc={result.metrics['val_acc']:.4f}")
    """
)


def _loss_fn(model: torch.nn.Module, batch: Any) -> Any:
    loss = F.mse_loss(model(batch[0]), batch[1])
    return loss, {
        "acc": ft.log(1 - loss, prog_bar=True, on_epoch=True),
        "hidden": loss,
    }


def _val_fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
    loss = F.mse_loss(model(batch[0]), batch[1])
    return {"val_acc": ft.log(1 - loss, prog_bar=True), "val_other": loss}


def test_fit_shows_prog_bar_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training bar shows the loss and prog_bar step values, then the epoch values and
    the validation metrics flagged prog_bar; metrics without prog_bar stay off the bar."""
    out = io.StringIO()
    monkeypatch.setattr(
        progress.ProgressBar,
        "auto",
        classmethod(lambda cls, enable, file=None, **kw: cls(enable, file=out)),
    )
    torch.manual_seed(0)
    x = torch.randn(24, 2)
    model = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.05))
    result = ft.fit(
        state,
        ft.train_step(_loss_fn),
        ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=4),  # 6 batches
        val_step=ft.eval_step(_val_fn),
        val_data=ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=10),  # 3 batches
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
    )
    text = out.getvalue()
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert any("Total params" in line or "params" in line for line in lines)  # model summary
    assert any(line.startswith("Sanity check") for line in lines)
    assert any(line.startswith("Validation: 100%") and "3/3" in line for line in lines)
    last = [line for line in lines if line.startswith("Epoch 1: 100%")][-1]
    assert "6/6" in last
    postfix = last.split(", ", 2)[-1]
    for name in ("loss=", "acc_step=", "acc_epoch=", "val_acc="):
        assert name in postfix, (name, last)
    assert f"val_acc={result.metrics['val_acc']:.3g}" in postfix
    assert "hidden" not in text and "val_other" not in text


def _pty_run(script: Path) -> tuple[int, str]:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    # A terminal 120 columns wide: tqdm sizes the bar from it.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal ``fit`` draws the bars with the prog_bar metrics."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    code, text = _pty_run(script)
    assert code == 0, text
    assert "Epoch 1: 100%" in text and "8/8" in text
    assert "loss=" in text and "acc=" in text and "val_acc=" in text
    assert "hidden" not in text
    assert "DONE val_acc=" in text


def test_bar_with_output_redirected_to_files(tmp_path: Path) -> None:
    """Redirected to files, the run completes, stderr holds plain progress lines without
    bars or carriage returns, and stdout gets the messages (model summary, the script's own
    print)."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.run(
            [sys.executable, str(script)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            timeout=120, check=False,
        )  # fmt: skip
    stdout = (tmp_path / "out.txt").read_text()
    stderr = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, stderr
    assert "\r" not in stdout + stderr
    assert "%|" not in stderr  # no tqdm bar
    assert "Epoch 1 done: 8/8 batches, step 16, " in stderr
    assert "params" in stdout
    assert stdout.rstrip().splitlines()[-1].startswith("DONE val_acc=")


PAUSED = SCRIPT.replace(
    "max_epochs=2,",
    "max_epochs=2, log_every_n_steps=3, callbacks=[Pause()],",
).replace(
    "torch.manual_seed(0)",
    textwrap.dedent(
        """
        import os, sys, time

        class Pause(ft.Callback):
            def on_train_epoch_start(self, state):
                # Hold the run until the test has read epoch 0's lines from the pipe.
                deadline = time.monotonic() + 60
                while state.epoch == 1 and not os.path.exists(sys.argv[1]):
                    assert time.monotonic() < deadline, "the test never read the lines"
                    time.sleep(0.05)

        torch.manual_seed(0)
        """
    ),
)


def test_plain_progress_lines_with_stderr_piped(tmp_path: Path) -> None:
    """With stderr a pipe, each log point and each epoch end prints one flushed line: epoch,
    batches, global step, it/s and the prog_bar metrics; validation prints its metrics."""
    script = tmp_path / "train.py"
    script.write_text(PAUSED)
    go = tmp_path / "go"
    with subprocess.Popen(
        [sys.executable, str(script), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        early: list[str] = []
        while not early or not early[-1].startswith("Epoch 0 done"):
            line = proc.stderr.readline()  # arrives while the run waits: flushed
            if not line:
                proc.kill()
                raise AssertionError(f"stderr closed before epoch 0 ended: {early}")
            early.append(line.rstrip("\n"))
        go.touch()
        out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0
    lines = [line for line in early if line.startswith(("Epoch", "Validation"))]
    assert [line.split(",")[0] for line in lines] == [
        "Epoch 0: 3/8 batches", "Epoch 0: 6/8 batches", "Validation: val_acc=" + lines[2].split("=")[1],
        "Epoch 0 done: 8/8 batches",
    ]  # fmt: skip
    assert lines[0].split(", ")[1] == "step 3" and lines[1].split(", ")[1] == "step 6"
    assert lines[3].split(", ")[1] == "step 8"
    for line in (lines[0], lines[1], lines[3]):
        rate, metrics = line.split(", ")[2:]
        assert rate.endswith(" it/s") and float(rate.split()[0]) > 0
        assert metrics.startswith("loss=") and " acc=" in metrics and "hidden" not in metrics
    assert "val_acc=" in lines[3]
    assert "Epoch 1 done: 8/8 batches, step 16, " in rest
    assert out.rstrip().splitlines()[-1].startswith("DONE val_acc=")
