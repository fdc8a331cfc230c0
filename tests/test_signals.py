"""SIGINT/SIGTERM: a stop request that finishes the step, saves, flushes and returns."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import ftrain as ft
from ftrain.driver._signals import StopSignals

REPO = Path(__file__).resolve().parents[1]


def test_first_signal_is_a_request_and_handlers_are_restored() -> None:
    """Inside StopSignals a SIGTERM or SIGINT only sets ``requested``; the previous handlers
    come back on exit."""
    before_int = signal.getsignal(signal.SIGINT)
    before_term = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        assert signals.requested is None
        signal.raise_signal(signal.SIGTERM)
        assert signals.requested == "SIGTERM"
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGINT)
        assert signals.requested == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before_int
    assert signal.getsignal(signal.SIGTERM) is before_term


def test_second_sigint_aborts() -> None:
    """A second SIGINT raises KeyboardInterrupt at once (the user insists)."""
    with pytest.raises(KeyboardInterrupt), StopSignals():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)


def test_disabled_outside_the_main_thread() -> None:
    """Handlers can only be installed in the main thread; elsewhere StopSignals is inert."""
    seen: list[bool] = []

    def worker() -> None:
        with StopSignals() as signals:
            seen.append(signals.enabled)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [False]
    assert not StopSignals(enabled=False).enabled


CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    import ftrain as ft
    from ftrain.loggers import CSVLogger

    root = sys.argv[1]
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.01))
    x, y = torch.randn(64, 4), torch.randn(64, 1)

    def loss_fn(model, batch):
        time.sleep(0.02)  # slow enough for the signal to land mid-run
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    class Marker(ft.Callback):
        def on_train_batch_end(self, state, metrics, batch, batch_idx):
            if state.micro_step == 3:
                print("TRAINING", flush=True)

    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        ft.TensorLoader(x, y, batch_size=4, shuffle=False),
        max_epochs=1000,
        logger=CSVLogger(root),
        default_root_dir=root,
        callbacks=[Marker()],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    print("RESULT", result.interrupted, result.stop_reason, result.state.step, result.last_checkpoint, flush=True)
    print("LOGDIR", result.log_dir, flush=True)
    """
)


def _interrupt_child(sig: signal.Signals, tmp_path: Path) -> tuple[int, str, str]:
    """Start the child, wait for its marker line, send ``sig``; (exit code, stdout, stderr)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:  # wait until training is under way
            if line.startswith("TRAINING"):
                break
        else:
            raise AssertionError(f"the child ended before training: {proc.stderr.read()[-2000:]}")
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_a_training_process(sig: signal.Signals, tmp_path: Path) -> None:
    """A real SIGINT/SIGTERM sent to a process running fit: the current step finishes, the
    process says so and exits 0, FitResult.interrupted is True, the CSV log is complete and
    readable, and the checkpoint written on the interrupt loads and holds the final step."""
    code, out, err = _interrupt_child(sig, tmp_path)
    assert code == 0, err[-3000:]
    assert f"Detected {sig.name}: stopping after the current step and saving" in out
    result_line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    _, interrupted, reason, step, ckpt = result_line.split(" ", 4)
    assert interrupted == "True" and reason == "interrupted"
    step_n = int(step)
    assert step_n >= 3

    log_dir = next(line for line in out.splitlines() if line.startswith("LOGDIR")).split(" ", 1)[1]
    with open(os.path.join(log_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    loss_steps = [int(r["step"]) for r in rows if r.get("loss")]
    assert loss_steps == list(range(step_n))  # one row per optimizer step, none lost

    payload = ft.load_checkpoint(ckpt)
    assert payload["counters"]["step"] == step_n
    assert os.path.dirname(ckpt) == os.path.join(log_dir, "checkpoints")


HUNG = """
import os, signal, time, torch, ftrain as ft

def hang_forever():
    time.sleep(600)

class Hang:
    def on_train_batch_end(self, state, **_):
        if state.micro_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            hang_forever()  # a rank stuck (in a collective, a bad kernel) after SIGTERM

net = torch.nn.Linear(2, 1)
state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
ft.fit(state, ft.train_step(lambda m, b: m(b[0]).pow(2).mean()),
       ft.TensorLoader(torch.randn(8, 2), batch_size=2), max_epochs=1, logger=False,
       enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
       callbacks=[Hang()])
"""


def test_a_process_hung_after_sigterm_dumps_its_stack_and_exits() -> None:
    """A process that does not stop within the grace period after SIGTERM writes every
    thread's stack (naming the function it hangs in) to stderr and exits with status 1,
    long before the 600 s it would hang."""
    env = {**os.environ, "FTRAIN_STOP_GRACE_S": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", HUNG], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Timeout (0:00:01)!" in proc.stderr
    assert "hang_forever" in proc.stderr
