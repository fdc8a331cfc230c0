"""The GPU check: ``python -m benchmarks --device cuda`` (a few minutes on one GPU).

In bf16-mixed, for a tiny MLP, the mid MLP and a ~20M-parameter GPT block stack:
the step time of ``fit`` + ``TensorLoader`` against a hand loop (``torch.autocast``
bf16) on the same batches, alternating, and the peak device memory of each; a run
of each under ``torch.cuda.set_sync_debug_mode("error")`` from the first batch to
the last, except inside log points, so any host-device sync in the step or the
loop between log points raises; and ``ft.compile`` with the default mode and with
``mode="reduce-overhead"`` (CUDA graphs) against eager on the tiny MLP. The save
stall comes from ``_saves.save_benchmark``. ``--device cpu`` runs the same logic
with small sizes and no sync check (to test the script where there is no GPU).
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._workloads import SEED, WORKLOADS, clock, make_data

LOG_EVERY = 50


class Block(nn.Module):
    """A pre-norm GPT block: causal self-attention and a 4x MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a tied output head."""

    def __init__(self, vocab: int, seq: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.Sequential(*(Block(d, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.blocks(self.tok(idx) + self.pos(pos))
        return self.ln(x) @ self.tok.weight.t()


def gpt_sizes(small: bool) -> dict[str, int]:
    """~20M parameters (d 512, 6 blocks, vocab 4096, seq 256); tiny for CPU tests."""
    if small:
        return {"vocab": 64, "seq": 16, "d": 32, "layers": 2, "heads": 2, "batch": 4}
    return {"vocab": 4096, "seq": 256, "d": 512, "layers": 6, "heads": 8, "batch": 16}


def _gpt_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def _mlp_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _workload(name: str, steps: int, device: torch.device, small: bool) -> dict[str, Any]:
    """Model factory, loss, data and batch size of one workload."""
    if name == "gpt":
        s = gpt_sizes(small)
        g = torch.Generator().manual_seed(1234)
        data = torch.randint(0, s["vocab"], (steps * s["batch"], s["seq"] + 1), generator=g)
        x, y = data[:, :-1].to(device), data[:, 1:].to(device)

        def build() -> nn.Module:
            torch.manual_seed(SEED)
            return GPT(s["vocab"], s["seq"], s["d"], s["layers"], s["heads"]).to(device)

        return {"build": build, "loss": _gpt_loss, "x": x, "y": y, "bs": s["batch"]}
    w = WORKLOADS[name]
    x, y = make_data(w, steps, device)

    def build_mlp() -> nn.Module:
        torch.manual_seed(SEED)
        return w.build().to(device)

    return {"build": build_mlp, "loss": _mlp_loss, "x": x, "y": y, "bs": w.batch_size}


@contextlib.contextmanager
def _sync_errors(on: bool) -> Iterator[None]:
    if on:
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        if on:
            torch.cuda.set_sync_debug_mode("default")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_start(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def hand_bf16(wl: dict[str, Any], device: torch.device, check_syncs: bool) -> dict[str, Any]:
    """The hand loop in bf16 autocast; ``.item()`` only every LOG_EVERY steps."""
    model = wl["build"]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bs, x, y = wl["bs"], wl["x"], wl["y"]
    batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]
    logged: list[float] = []
    _peak_start(device)
    _sync(device)
    start = clock()
    with _sync_errors(check_syncs):
        for i, batch in enumerate(batches):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = wl["loss"](model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if (i + 1) % LOG_EVERY == 0:  # a log point: the one place that may sync
                if check_syncs:
                    torch.cuda.set_sync_debug_mode("default")
                logged.append(loss.item())
                if check_syncs:
                    torch.cuda.set_sync_debug_mode("error")
    _sync(device)
    elapsed = clock() - start
    return {"s": elapsed, "peak_mib": _peak_mib(device), "params": list(model.parameters())}


class _SyncGuard:
    """fit callback: sync errors on from the first batch to the end, off at log points."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def on_train_batch_start(self, **_: Any) -> None:
        if self.on:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_end(self, **_: Any) -> None:
        if self.on:
            torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def _log_points_may_sync(on: bool) -> Iterator[None]:
    """Let fit's log points (where values become numbers) sync."""
    from ftrain.driver._run import Run

    if not on:
        yield
        return
    original = Run.log

    def log(self: Any, values: Any, step: int) -> None:
        torch.cuda.set_sync_debug_mode("default")
        try:
            original(self, values, step)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    Run.log = log  # type: ignore[method-assign]
    try:
        yield
    finally:
        Run.log = original  # type: ignore[method-assign]
        torch.cuda.set_sync_debug_mode("default")


def fit_bf16(
    wl: dict[str, Any], device: torch.device, check_syncs: bool, log_dir: str
) -> dict[str, Any]:
    """``fit(precision="bf16-mixed")`` with a CSV logger every LOG_EVERY steps."""
    import ftrain as ft
    from ftrain.loggers import CSVLogger

    model = wl["build"]()
    state = ft.TrainState.create(model, torch.optim.AdamW(model.parameters(), lr=1e-4), seed=0)
    loader = ft.TensorLoader(wl["x"], wl["y"], batch_size=wl["bs"], shuffle=False)
    _peak_start(device)
    _sync(device)
    start = clock()
    with _log_points_may_sync(check_syncs):
        result = ft.fit(
            state,
            ft.train_step(wl["loss"]),
            loader,
            max_epochs=1,
            precision="bf16-mixed",
            logger=CSVLogger(log_dir, name="gpu"),
            log_every_n_steps=LOG_EVERY,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            accelerator=device.type,
            devices=1,
            callbacks=[_SyncGuard(check_syncs)],
            default_root_dir=log_dir,
        )
    _sync(device)
    elapsed = clock() - start
    return {
        "s": elapsed,
        "peak_mib": _peak_mib(device),
        "params": list(result.state.model.parameters()),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def step_and_memory(
    names: tuple[str, ...], device: torch.device, quick: bool, repeats: int
) -> list[dict[str, Any]]:
    """Per workload: µs/step and peak memory, hand loop vs fit, and the sync check."""
    out = []
    steps = (60 if device.type == "cuda" else 20) if quick else 300
    check = device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-gpu-") as tmp:
        for name in names:
            wl = _workload(name, steps, device, small=device.type != "cuda")
            hand_bf16(wl, device, False)  # warm-up (cuBLAS handles, kernels)
            fit_bf16(wl, device, False, tmp)
            hand, fit = [], []
            for r in range(repeats):
                pair = [("hand", hand), ("fit", fit)]
                for kind, times in pair if r % 2 == 0 else pair[::-1]:
                    if kind == "hand":
                        res = hand_bf16(wl, device, False)
                    else:
                        res = fit_bf16(wl, device, False, tmp)
                    times.append(res)
            entry: dict[str, Any] = {
                "workload": name,
                "params": sum(p.numel() for p in wl["build"]().parameters()),
                "steps": steps,
                "hand_us": statistics.median(h["s"] for h in hand) / steps * 1e6,
                "fit_us": statistics.median(f["s"] for f in fit) / steps * 1e6,
                "hand_peak_mib": hand[-1]["peak_mib"],
                "fit_peak_mib": fit[-1]["peak_mib"],
                "same_result": all(
                    torch.equal(a, b)
                    for a, b in zip(hand[-1]["params"], fit[-1]["params"], strict=True)
                ),
            }
            entry["ratio"] = entry["fit_us"] / entry["hand_us"]
            for kind in ("hand", "fit"):
                if not check:
                    entry[f"{kind}_syncs"] = "not checked (no CUDA)"
                    continue
                try:
                    if kind == "hand":
                        hand_bf16(wl, device, True)
                    else:
                        fit_bf16(wl, device, True, tmp)
                    entry[f"{kind}_syncs"] = "none between log points"
                except RuntimeError as exc:
                    entry[f"{kind}_syncs"] = f"sync: {_first_line(exc)}"
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            out.append(entry)
            del wl
    return out


def compile_check(device: torch.device, quick: bool, repeats: int) -> list[dict[str, Any]]:
    """Eager vs ``ft.compile()`` vs ``ft.compile(mode="reduce-overhead")`` on the tiny MLP."""
    import torch._dynamo

    import ftrain as ft

    steps = 20 if quick else 200
    wl = _workload("tiny", steps, device, small=True)
    bs = wl["bs"]
    batches = [(wl["x"][i : i + bs], wl["y"][i : i + bs]) for i in range(0, len(wl["x"]), bs)]
    modes: dict[str, dict[str, Any] | None] = {"eager": None}
    if device.type == "cuda":
        modes["default"] = {}
        modes["reduce-overhead"] = {"mode": "reduce-overhead"}
    else:  # the script's logic without a compiler toolchain: dynamo, no inductor
        modes["backend=eager"] = {"backend": "eager"}
    out = []
    eager_us = math.nan
    for label, kwargs in modes.items():
        torch._dynamo.reset()
        model = wl["build"]()
        state = ft.TrainState.create(model, torch.optim.AdamW(model.parameters(), lr=1e-4))
        step = ft.precision("bf16-mixed")(ft.train_step(wl["loss"]))
        if kwargs is not None:
            step = ft.compile(**kwargs)(step)
        entry: dict[str, Any] = {"mode": label}
        try:
            start = clock()
            for batch in batches[:3]:  # compile (and, for CUDA graphs, record)
                state, _ = step(state, batch)
            _sync(device)
            entry["first_steps_s"] = clock() - start
            times = []
            for _ in range(repeats):
                _sync(device)
                start = clock()
                for batch in batches:
                    state, _ = step(state, batch)
                _sync(device)
                times.append((clock() - start) / len(batches) * 1e6)
            entry["step_us"] = statistics.median(times)
            if label == "eager":
                eager_us = entry["step_us"]
            entry["speedup"] = eager_us / entry["step_us"]
        except Exception as exc:  # inductor needs a toolchain; report, go on
            entry["error"] = _first_line(exc)
        out.append(entry)
    torch._dynamo.reset()
    return out


def gpu_check(device: torch.device, quick: bool, repeats: int) -> dict[str, Any]:
    """Everything the GPU check reports, as one dict (see the module docstring)."""
    from ._saves import save_benchmark

    began = clock()
    # bf16 matmuls of the mid MLP are slow on most CPUs: a CPU dry run skips it.
    names = ("tiny", "mid", "gpt") if device.type == "cuda" else ("tiny", "gpt")
    out: dict[str, Any] = {
        "workloads": step_and_memory(names, device, quick, repeats),
        "compile": compile_check(device, quick, repeats),
        "saves": save_benchmark(device, quick or device.type != "cuda", 1, with_lightning=True),
    }
    out["elapsed_s"] = clock() - began
    return out
