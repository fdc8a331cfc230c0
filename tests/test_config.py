"""FitConfig: every flag's validation message, Lightning's defaulting, and fit-time checks."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain._config import parse_max_time
from ftrain._devices import parse_devices, resolve_accelerator, resolve_devices

QUIET: dict[str, Any] = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _setup(batches: int = 4) -> tuple[ft.TrainState, ft.TensorLoader]:
    net = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    x, y = torch.randn(batches * 2, 2), torch.randn(batches * 2, 1)
    return state, ft.TensorLoader(x, y, batch_size=2, shuffle=False)


# Each case: (flag, bad value, exception type, message fragment). Messages name the flag,
# what was accepted and what was given.
BAD_VALUES = [
    ("max_epochs", -2, ValueError, "max_epochs must be an int >= -1 (-1 = no limit) or None, got -2"),
    ("max_epochs", 1.5, ValueError, "max_epochs must be an int >= -1"),
    ("max_epochs", True, ValueError, "got True"),
    ("min_epochs", -1, ValueError, "min_epochs must be an int >= 0 or None, got -1"),
    ("max_steps", -2, ValueError, "max_steps must be an int >= -1, got -2"),
    ("min_steps", -1, ValueError, "min_steps must be an int >= 0 or None, got -1"),
    ("max_time", "12h", ValueError, "max_time: expected 'DD:HH:MM:SS' (e.g. '00:12:00:00')"),
    ("max_time", "1:02:03", ValueError, "got '1:02:03'"),
    ("max_time", "00:00:00:00", ValueError, "max_time must be positive, got '00:00:00:00'"),
    ("max_time", {"hour": 1}, ValueError, "max_time: unknown keys ['hour']"),
    ("max_time", 60, ValueError, "a dict or a timedelta, got int"),
    ("limit_train_batches", -1, ValueError, "limit_train_batches must be an int >= 0 (a number"),
    ("limit_train_batches", 1.5, ValueError, "got 1.5"),
    ("limit_train_batches", True, ValueError, "limit_train_batches must be an int >= 0"),
    ("limit_val_batches", -0.5, ValueError, "limit_val_batches must be an int >= 0"),
    ("limit_test_batches", "all", ValueError, "limit_test_batches must be an int >= 0"),
    ("limit_predict_batches", -3, ValueError, "limit_predict_batches must be an int >= 0"),
    ("val_check_interval", 1.5, ValueError, "val_check_interval must be a float in (0.0, 1.0]"),
    ("val_check_interval", 0.0, ValueError, "val_check_interval must be a float in (0.0, 1.0]"),
    ("val_check_interval", 0, ValueError, "or an int >= 1 (a number of training batches), got 0"),
    ("val_check_interval", True, ValueError, "got True"),
    ("check_val_every_n_epoch", 0, ValueError, "check_val_every_n_epoch must be an int >= 1 or None"),
    ("num_sanity_val_steps", -2, ValueError, "num_sanity_val_steps must be an int >= -1, got -2"),
    ("fast_dev_run", -1, ValueError, "fast_dev_run must be a bool or an int >= 0, got -1"),
    ("fast_dev_run", 0.5, ValueError, "fast_dev_run must be a bool or an int >= 0, got 0.5"),
    ("reload_dataloaders_every_n_epochs", -1, ValueError, "reload_dataloaders_every_n_epochs must be an int >= 0"),
    ("accumulate_grad_batches", 0, ValueError, "accumulate_grad_batches: n must be an int >= 1"),
    ("accumulate_grad_batches", {}, ValueError, "accumulate_grad_batches: the schedule {epoch: n} must not be empty"),
    ("accumulate_grad_batches", {0: 0}, ValueError, "got 0 for epoch 0"),
    ("accumulate_grad_batches", {-1: 2}, ValueError, "schedule keys must be epochs (int >= 0), got -1"),
    ("gradient_clip_val", "1", TypeError, "gradient_clip_val must be a number or None, got str '1'"),
    ("gradient_clip_val", float("nan"), ValueError, "gradient_clip_val must not be NaN"),
    ("gradient_clip_algorithm", "l2", ValueError, "gradient_clip_algorithm: unknown value 'l2'; accepted: None, 'norm', 'value'"),
    ("precision", "fp8", ValueError, "precision: unknown value 'fp8'; accepted: '64-true', '32-true'"),
    ("precision", 8, ValueError, "precision: unknown value 8"),
    ("accelerator", "tpu", ValueError, "accelerator: unknown value 'tpu'; accepted: 'auto', 'cpu', 'gpu', 'cuda', 'mps'"),
    ("devices", 0, ValueError, "devices must be an int >= 1, -1 (all), a list of indices"),
    ("devices", -2, ValueError, "got -2"),
    ("devices", [], ValueError, "got an empty list"),
    ("devices", [1, 1], ValueError, "devices: duplicate indices in [1, 1]"),
    ("devices", [-1], ValueError, "devices: indices must be ints >= 0, got [-1]"),
    ("devices", "x", ValueError, "got 'x'"),
    ("devices", True, TypeError, "got True"),
    ("devices", 1.5, TypeError, "got float"),
    ("strategy", "deepspeed", ValueError, "strategy: unknown value 'deepspeed'; accepted: 'auto', 'ddp'"),
    ("num_nodes", 0, ValueError, "num_nodes must be an int >= 1, got 0"),
    ("find_unused_parameters", 1, ValueError, "find_unused_parameters: unknown value 1; accepted: True, False"),
    ("slurm_auto_requeue", "yes", ValueError, "slurm_auto_requeue: unknown value 'yes'"),
    ("slurm_requeue_signal", 10, ValueError, "slurm_requeue_signal must be a signal name such as 'SIGUSR1'"),
    ("benchmark", "yes", ValueError, "benchmark: unknown value 'yes'; accepted: None, True, False"),
    ("benchmark", 0, ValueError, "benchmark: unknown value 0"),
    ("deterministic", "always", ValueError, "deterministic must be None, True, False or 'warn'"),
    ("default_root_dir", 1, TypeError, "default_root_dir must be a path (str or os.PathLike) or None"),
    ("default_root_dir", "nosuch://run", ValueError, "default_root_dir='nosuch://run': fsspec cannot resolve the protocol 'nosuch'"),
    ("seed", -1, ValueError, "seed must be an int >= 0 or None, got -1"),
    ("randomness", "global", ValueError, "randomness: unknown value 'global'; accepted: 'step', 'ambient'"),
    ("log_every_n_steps", -1, ValueError, "log_every_n_steps must be an int >= 0, got -1"),
    ("prefetch", -1, ValueError, "prefetch must be an int >= 0, got -1"),
    ("prefetch", 1.5, ValueError, "prefetch must be an int >= 0, got 1.5"),
    ("enable_progress_bar", 1, ValueError, "enable_progress_bar: unknown value 1; accepted: True, False"),
    ("enable_model_summary", "yes", ValueError, "enable_model_summary: unknown value 'yes'"),
    ("enable_checkpointing", None, ValueError, "enable_checkpointing: unknown value None"),
    ("async_checkpointing", "no", ValueError, "async_checkpointing: unknown value 'no'; accepted: True, False"),
    ("profiler", "flame", ValueError, "profiler: unknown value 'flame'; accepted: None, 'simple', 'advanced', 'pytorch'"),
    ("use_distributed_sampler", 0, ValueError, "use_distributed_sampler: unknown value 0"),
    ("barebones", "yes", ValueError, "barebones: unknown value 'yes'; accepted: True, False"),
    ("detect_anomaly", 1, ValueError, "detect_anomaly: unknown value 1; accepted: True, False"),
    ("sync_batchnorm", None, ValueError, "sync_batchnorm: unknown value None"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "value", "exc", "message"), BAD_VALUES)
def test_bad_value_is_refused_with_its_message(
    flag: str, value: Any, exc: type[Exception], message: str
) -> None:
    """A bad flag value fails when the config is built, with a message naming the flag."""
    with pytest.raises(exc) as info:
        ft.FitConfig(**{flag: value})
    assert message in str(info.value)


def test_every_flag_has_a_bad_value_case_or_is_free_form() -> None:
    """The table above covers every validated flag (a new flag needs a case here)."""
    covered = {flag for flag, *_ in BAD_VALUES}
    # Fields checked elsewhere or free-form: the colleague-owned DDP/tuning knobs have their
    # own tests; these take any value of their kind.
    unchecked = {
        "process_timeout",
        "process_group_backend",
        "agree_every_n_batches",
        "fsdp_policy",
        "auto_lr_find",
        "auto_scale_batch_size",
    }
    assert set(ft.FitConfig.flag_names()) - covered - unchecked == set()


def test_combinations_refused() -> None:
    """min_epochs > max_epochs, and check_val_every_n_epoch=None with a fraction, are errors."""
    with pytest.raises(ValueError, match=r"min_epochs \(5\) must not exceed max_epochs \(3\)"):
        ft.FitConfig(min_epochs=5, max_epochs=3)
    ft.FitConfig(min_epochs=5, max_epochs=-1)  # no limit: fine
    with pytest.raises(ValueError, match="check_val_every_n_epoch=None needs an int"):
        ft.FitConfig(check_val_every_n_epoch=None, val_check_interval=0.5)


def test_good_values_accepted() -> None:
    """Lightning's accepted forms pass: short precisions, device strings, dict schedules."""
    config = ft.FitConfig(
        precision="bf16",
        devices="1,3",
        accumulate_grad_batches={0: 1, 4: 2},
        val_check_interval=100,
        check_val_every_n_epoch=None,
        limit_train_batches=3.0,
        gradient_clip_val=-1.0,
        fast_dev_run=3,
        deterministic="warn",
        default_root_dir=Path("runs"),
    )
    assert config.fast_dev_batches == 3
    assert ft.FitConfig(precision=16).precision == 16


def test_resolved_stopping_defaults() -> None:
    """max_epochs defaults to 1000, or -1 (no limit) when max_steps or max_time bound the run;
    min_epochs is 1 when only min_steps is set; fast_dev_run forces 1 epoch and n steps."""
    assert ft.FitConfig().resolved_max_epochs() == 1000
    assert ft.FitConfig(max_steps=10).resolved_max_epochs() == -1
    assert ft.FitConfig(max_time="00:00:01:00").resolved_max_epochs() == -1
    assert ft.FitConfig(max_epochs=3, max_steps=10).resolved_max_epochs() == 3
    assert ft.FitConfig(max_epochs=-1).resolved_max_epochs() == -1
    assert ft.FitConfig().resolved_min_epochs() == 0
    assert ft.FitConfig(min_steps=5).resolved_min_epochs() == 1
    assert ft.FitConfig(min_steps=5, min_epochs=0).resolved_min_epochs() == 0
    fast = ft.FitConfig(fast_dev_run=True, max_epochs=10, max_steps=100)
    assert (fast.resolved_max_epochs(), fast.resolved_max_steps()) == (1, 1)
    assert ft.FitConfig(fast_dev_run=3).resolved_max_steps() == 3
    assert ft.FitConfig(fast_dev_run=False).fast_dev_batches == 0


def test_max_time_forms() -> None:
    """max_time as 'DD:HH:MM:SS', a dict of timedelta keywords, or a timedelta: same seconds."""
    forms = ["00:01:30:00", {"hours": 1, "minutes": 30}, datetime.timedelta(minutes=90)]
    for form in forms:
        assert ft.FitConfig(max_time=form).max_time_seconds() == 5400.0
    assert parse_max_time("2:00:00:01") == datetime.timedelta(days=2, seconds=1)
    assert parse_max_time(None) is None
    assert ft.FitConfig().max_time_seconds() is None


def test_replace_validates_again_and_to_dict_is_plain() -> None:
    """replace() checks the new values; to_dict() gives plain values (timedelta -> seconds)."""
    config = ft.FitConfig(max_time=datetime.timedelta(seconds=30))
    with pytest.raises(ValueError, match="max_steps must be an int >= -1"):
        config.replace(max_steps=-5)
    assert config.to_dict()["max_time"] == 30.0
    assert ft.FitConfig(accumulate_grad_batches={2: 4}).to_dict()["accumulate_grad_batches"] == {
        "2": 4
    }


# --- devices and accelerators ------------------------------------------------------------


def test_cpu_devices_are_a_process_count() -> None:
    """On the CPU, devices=N means N processes; 'auto' and -1 mean one."""
    assert resolve_devices("cpu", 3) == [0, 1, 2]
    assert resolve_devices("cpu", "2") == [0, 1]
    assert resolve_devices("cpu", "auto") == [0]
    assert resolve_devices("cpu", -1) == [0]
    assert resolve_devices("cpu", [4, 7]) == [0, 1]
    assert ft.FitConfig(devices=3).devices == 3
    assert parse_devices("1,") == [1]
    assert parse_devices(" 2 ") == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("accelerator", ["cuda", "gpu"])
def test_unavailable_gpu_accelerator_fails_at_fit(accelerator: str, tmp_path: Path) -> None:
    """accelerator='cuda' or 'gpu' without a GPU fails before training, naming what exists."""
    state, loader = _setup()
    with pytest.raises(ValueError, match=r"no GPU is available|is not available on this machine"):
        ft.fit(
            state,
            ft.train_step(_loss),
            loader,
            accelerator=accelerator,
            max_epochs=1,
            default_root_dir=tmp_path,
            **QUIET,
        )
    assert state.step == 0
    assert resolve_accelerator("auto") == "cpu" or resolve_accelerator("auto") == "mps"


@pytest.mark.skipif(
    bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    reason="checks the no-MPS message",
)
def test_unavailable_mps_fails() -> None:
    """accelerator='mps' where there is none names the available accelerators."""
    with pytest.raises(ValueError, match=r"accelerator='mps' is not available.*available: \['cpu'"):
        resolve_accelerator("mps")


def test_tpu_is_refused_when_the_config_is_built() -> None:
    """An accelerator ftrain does not support is a config error, listing the accepted ones."""
    with pytest.raises(ValueError, match="accelerator: unknown value 'tpu'"):
        ft.fit(*_setup(), ft.train_step(_loss), accelerator="tpu")  # type: ignore[call-arg]


# --- fit-time checks ---------------------------------------------------------------------


def test_unknown_fit_flag_is_a_type_error() -> None:
    """A misspelt flag fails at once, naming the likely flag, or listing the accepted ones
    when none is close."""
    state, loader = _setup()
    with pytest.raises(TypeError, match=r"fit: unknown flags \['max_epoch'\]: 'max_epoch': did"):
        ft.fit(state, ft.train_step(_loss), loader, max_epoch=3)
    with pytest.raises(TypeError, match=r"fit: unknown flags \['zzz'\]: accepted: \["):
        ft.fit(state, ft.train_step(_loss), loader, zzz=3)


def test_bad_flag_to_fit_fails_before_training(tmp_path: Path) -> None:
    """A bad value passed to fit is refused before any batch (precision='fp8')."""
    state, loader = _setup()
    with pytest.raises(ValueError, match="precision: unknown value 'fp8'"):
        ft.fit(state, ft.train_step(_loss), loader, precision="fp8", default_root_dir=tmp_path)
    assert state.micro_step == 0


def test_val_check_interval_longer_than_epoch_fails_at_fit_start(tmp_path: Path) -> None:
    """An int val_check_interval beyond the epoch's batches is an error before any training."""
    state, loader = _setup(batches=4)
    trained: list[int] = []

    class Count(ft.Callback):
        def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
            trained.append(batch_idx)

    with pytest.raises(ValueError, match=r"val_check_interval=5 is larger than the 4 training"):
        ft.fit(
            state,
            ft.train_step(_loss),
            loader,
            val_step=ft.eval_step(lambda m, b: {"v": _loss(m, b)}),
            val_data=loader,
            val_check_interval=5,
            callbacks=[Count()],
            max_epochs=1,
            default_root_dir=tmp_path,
            **QUIET,
        )
    assert trained == []


def test_flag_and_step_doing_the_same_is_an_error(tmp_path: Path) -> None:
    """accumulate_grad_batches or gradient_clip_val given both as flag and in the step fail;
    flags with a custom step that cannot apply them fail too."""
    common = dict(max_epochs=1, default_root_dir=tmp_path, **QUIET)
    state, loader = _setup()
    with pytest.raises(ValueError, match="accumulate_grad_batches was given and the step already"):
        ft.fit(
            state, ft.train_step(_loss, accumulate=2), loader, accumulate_grad_batches=4, **common
        )
    with pytest.raises(ValueError, match="gradient_clip_val was given and the step already clips"):
        ft.fit(state, ft.train_step(_loss, clip_norm=1.0), loader, gradient_clip_val=1.0, **common)

    def manual(st: ft.TrainState, batch: Any) -> tuple[ft.TrainState, dict[str, Any]]:
        return st, {}

    with pytest.raises(TypeError, match=r"apply to steps built by ftrain\.train_step"):
        ft.fit(state, ft.custom_step(manual), loader, accumulate_grad_batches=2, **common)
    assert state.micro_step == 0


def test_fit_argument_checks(tmp_path: Path) -> None:
    """fit refuses a non-state, a non-callable step, and val_data without val_step."""
    state, loader = _setup()
    with pytest.raises(TypeError, match="fit: state must be a TrainState, got Linear"):
        ft.fit(state.model, ft.train_step(_loss), loader)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fit: train_step must be callable, got int"):
        ft.fit(state, 3, loader)
    with pytest.raises(ValueError, match="fit: val_data was given without val_step"):
        ft.fit(state, ft.train_step(_loss), loader, val_data=loader)


def test_config_object_and_flags_combine(tmp_path: Path) -> None:
    """fit(config=...) uses the config; keyword flags override its fields."""
    state, loader = _setup(batches=4)
    flags = {k: v for k, v in QUIET.items() if k != "logger"}
    config = ft.FitConfig(max_epochs=5, max_steps=3, default_root_dir=str(tmp_path), **flags)
    result = ft.fit(state, ft.train_step(_loss), loader, config=config, logger=False)
    assert result.state.step == 3
    state, loader = _setup(batches=4)
    result = ft.fit(state, ft.train_step(_loss), loader, config=config, max_steps=6, logger=False)
    assert result.state.step == 6
